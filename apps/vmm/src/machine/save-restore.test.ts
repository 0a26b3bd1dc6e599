import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createMachine, type Machine } from './machine.js';
import { runUntilStopped } from './run-sync.js';
import type { MachineState } from './state.js';

const PREBUILT = fileURLToPath(
  new URL('../../../../guests/conformance/prebuilt/', import.meta.url),
);
const RAM = 16 << 20;

function boot(name: string, out: number[]): Machine {
  return createMachine({
    ramSize: RAM,
    elf: readFileSync(PREBUILT + name),
    timeMode: 'deterministic',
    uartSink: (b) => out.push(b),
    identity: { generationId: 42n, entropy: [1, 2, 3, 4, 5, 6, 7, 8] },
  });
}

/** Runs `name` for `split` instructions, saves, restores into a fresh machine with a RAM copy, finishes there. */
function splitRun(name: string, split: number): { output: number[]; state: MachineState } {
  const out: number[] = [];
  const first = boot(name, out);
  // The hart's own run stops at a WFI (no time skip), so a split can land in the wait.
  first.cpu.run(split);
  // The state must survive a JSON round trip (the container format comes later).
  const state = JSON.parse(JSON.stringify(first.save())) as MachineState;
  const ram = first.memory.main.buffer.slice(0);
  const second = createMachine({
    ramSize: RAM,
    ram: { bytes: ram },
    timeMode: 'deterministic',
    uartSink: (b) => out.push(b),
  });
  second.restore(state);
  expect(runUntilStopped(second, 1e9)).toBe('halted');
  expect(second.exit).toEqual({ kind: 'pass', code: 0 });
  return { output: out, state };
}

describe('save → restore → resume equals an uninterrupted run (deterministic time)', () => {
  for (const name of ['interrupts.elf', 'umode.elf', 'rv32a.elf']) {
    it(`${name} at several split points`, () => {
      const whole: number[] = [];
      const m = boot(name, whole);
      expect(runUntilStopped(m, 1e9)).toBe('halted');
      const total = m.cpu.retired;
      for (const split of [1, 137, Math.floor(total / 3), Math.floor(total / 2) + 1, total - 5]) {
        expect(splitRun(name, split).output, `split at ${split} of ${total}`).toEqual(whole);
      }
    });
  }

  it('carries a pending WFI and its timer deadline', () => {
    const whole: number[] = [];
    const m = boot('interrupts.elf', whole);
    runUntilStopped(m, 1e9);
    // Find a point where the hart sleeps in WFI and split there.
    const out: number[] = [];
    const probe = boot('interrupts.elf', out);
    let reason = probe.cpu.run(1);
    while (!probe.cpu.waiting && reason !== 'halted') reason = probe.cpu.run(1);
    expect(probe.cpu.waiting).toBe(true);
    // Budget counts traps too.
    const { output, state } = splitRun('interrupts.elf', probe.cpu.retired + probe.cpu.traps);
    expect(state.cpu.waiting).toBe(true);
    expect(output).toEqual(whole);
  });

  it('keeps the control device identity and rejects a state of another version', () => {
    const m = boot('rv32i-alu.elf', []);
    const state = m.save();
    expect(state.control.generationId).toBe('000000000000002a');
    expect(state.control.entropy).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const fresh = createMachine({ ramSize: RAM, timeMode: 'deterministic' });
    fresh.restore(state);
    expect(fresh.control.generationId).toBe(42n);
    expect(() => fresh.restore({ ...state, version: 99 })).toThrow(/version 99/);
    expect(() => fresh.restore({ ...state, cpu: { ...state.cpu, version: 2 } })).toThrow(
      /hart state version 2/,
    );
    expect(() => fresh.restore({ ...state, clock: { ...state.clock, mode: 'realtime' } })).toThrow(
      /realtime/,
    );
  });
});
