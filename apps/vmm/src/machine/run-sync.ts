import type { StopReason } from '../cpu/hart.js';
import type { ExitStatus } from '../devices/test-finisher.js';
import { createMachine, type Machine, type MachineOptions } from './machine.js';

/** Result of {@link runElfSync}. */
export interface SyncRunResult {
  /** Everything the guest wrote to the UART. */
  readonly output: Uint8Array;
  /** The finisher status, or null if the guest did not power off. */
  readonly exit: ExitStatus | null;
  /** Why the run ended: `halted` (finisher), `fatal`, `wfi` (idle forever) or `budget` (limit reached). */
  readonly reason: StopReason;
  readonly instructions: number;
  readonly machine: Machine;
}

/**
 * Runs an ELF to completion synchronously (deterministic time unless `opts.timeMode` says
 * otherwise), collecting its UART output. READY doorbells are ignored (the run continues).
 */
export function runElfSync(
  elf: Uint8Array,
  opts: Omit<MachineOptions, 'elf' | 'uartSink'> & { readonly maxInstructions?: number } = {},
): SyncRunResult {
  const chunks: number[] = [];
  const machine = createMachine({
    timeMode: 'deterministic',
    ...opts,
    elf,
    uartSink: (b) => chunks.push(b),
  });
  const reason = runUntilStopped(machine, opts.maxInstructions ?? 2_000_000_000);
  return {
    output: Uint8Array.from(chunks),
    exit: machine.exit,
    reason,
    instructions: machine.cpu.retired,
    machine,
  };
}

/**
 * Runs a machine until it halts, fails, idles with nothing to wake it, or `maxInstructions`
 * (counted from now) ran. `yield` stops (READY doorbells) are continued through.
 */
export function runUntilStopped(machine: Machine, maxInstructions: number): StopReason {
  const limit = machine.cpu.retired + maxInstructions;
  for (;;) {
    const left = limit - machine.cpu.retired;
    if (left <= 0) return 'budget';
    const reason = machine.run(Math.min(left, 50_000_000));
    if (reason === 'budget' || reason === 'yield') continue;
    return reason;
  }
}
