#!/usr/bin/env node
/**
 * Runs an RV32 ELF on the Handoff machine without any service around it, like
 * `qemu-system-riscv32 -M virt -bios none -nographic -kernel X.elf`: UART output goes to
 * stdout, stdin goes to the UART, and the process exits with the test finisher's code.
 *
 *   node apps/vmm/dist/machine/run-elf.js X.elf [--deterministic] [--ram MiB]
 *        [--max-instructions N] [--stats]
 *
 * Exit status: the finisher's (0 pass, the fail code otherwise), 124 when
 * --max-instructions ran out, 1 on a fatal guest or load error.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createMachine } from './machine.js';

const SLICE = 4_000_000;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      deterministic: { type: 'boolean', default: false },
      ram: { type: 'string', default: '128' },
      'max-instructions': { type: 'string' },
      stats: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const path = positionals[0];
  if (values.help || path === undefined) {
    process.stderr.write(
      'usage: run-elf X.elf [--deterministic] [--ram MiB] [--max-instructions N] [--stats]\n',
    );
    return path === undefined && !values.help ? 1 : 0;
  }
  const out: number[] = [];
  const flush = (): void => {
    if (out.length > 0) {
      process.stdout.write(Uint8Array.from(out));
      out.length = 0;
    }
  };
  const machine = createMachine({
    ramSize: Number(values.ram) * 1024 * 1024,
    elf: readFileSync(path),
    uartSink: (b) => {
      out.push(b);
      if (out.length >= 4096) flush();
    },
    timeMode: values.deterministic ? 'deterministic' : 'realtime',
  });
  let wakeUp: (() => void) | undefined;
  let inputOpen = true;
  process.stdin.on('data', (chunk: Buffer) => {
    machine.input(chunk);
    wakeUp?.();
  });
  process.stdin.on('end', () => {
    inputOpen = false;
    wakeUp?.();
  });
  process.stdin.on('error', () => {
    inputOpen = false;
  });
  const limit =
    values['max-instructions'] !== undefined ? Number(values['max-instructions']) : Infinity;
  const started = performance.now();
  let reason: string = 'budget';
  for (;;) {
    const left = limit - machine.cpu.retired;
    if (left <= 0) break;
    reason = machine.run(Math.min(SLICE, left));
    flush();
    if (reason === 'halted' || reason === 'fatal') break;
    if (reason === 'wfi') {
      const ms = machine.wakeDelayMs();
      if (ms === Infinity && !inputOpen) break; // nothing can wake the guest any more
      await new Promise<void>((resolve) => {
        wakeUp = resolve;
        if (ms !== Infinity) setTimeout(resolve, Math.max(0, Math.min(ms, 1000)));
      });
      wakeUp = undefined;
    } else {
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  flush();
  const seconds = (performance.now() - started) / 1000;
  if (values.stats) {
    const n = machine.cpu.retired;
    process.stderr.write(
      `run-elf: ${n} instructions in ${seconds.toFixed(3)} s = ${(n / seconds / 1e6).toFixed(1)} MIPS (stop: ${reason})\n`,
    );
  }
  if (reason === 'fatal') {
    process.stderr.write(`run-elf: guest stopped: ${machine.cpu.fatalMessage}\n`);
    return 1;
  }
  const exit = machine.exit;
  if (exit === null) return 124;
  if (exit.kind === 'reset')
    process.stderr.write('run-elf: the guest asked for a reset; stopping\n');
  return exit.code;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`run-elf: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
