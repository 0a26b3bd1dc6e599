import { describe, expect, it } from 'vitest';

import { HART_STATE_VERSION } from '../cpu/state.js';
import { CLINT_STATE_VERSION } from '../devices/clint.js';
import { CLOCK_STATE_VERSION } from '../devices/clock.js';
import { CONTROL_STATE_VERSION } from '../devices/control.js';
import { PLIC_STATE_VERSION, plicResetState } from '../devices/plic.js';
import { FINISHER_STATE_VERSION } from '../devices/test-finisher.js';
import { UART_STATE_VERSION } from '../devices/uart16550.js';
import { createMachine } from '../machine/machine.js';
import { runUntilStopped } from '../machine/run-sync.js';
import { MACHINE_STATE_VERSION } from '../machine/state.js';
import { CONTAINER_VERSION_MINOR, encodeContainer } from './container.js';
import {
  decodeDeviceState,
  encodeDeviceState,
  inspectDeviceState,
  warmUpDeviceStateCodec,
} from './device-state.js';
import { MACHINE_SECTIONS } from './sections.js';
import {
  bootGuest,
  errorOf,
  hasGuest,
  machineWithRamOf,
  sampleContainer,
  sampleState,
  bootMixer,
  sectionsOf,
} from './test-support.js';

const json = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value));
const GUESTS = ['interrupts.elf', 'umode.elf', 'rv32a.elf', 'plic.elf'];
const haveGuests = GUESTS.every(hasGuest);

describe('pause → encode → decode → restore → resume (hand-assembled guest)', () => {
  it('produces the output of an uninterrupted run, at every 2503rd instruction', () => {
    const whole: number[] = [];
    const ref = bootMixer(whole);
    expect(runUntilStopped(ref, 1e7)).toBe('halted');
    expect(whole.length).toBe(3000);
    const total = ref.cpu.retired;
    let reservations = 0;
    for (let split = 1; split < total; split += 2503) {
      const out: number[] = [];
      const first = bootMixer(out);
      first.cpu.run(split);
      const saved = first.save();
      if (saved.cpu.reservation !== null) reservations++;
      const second = machineWithRamOf(first, out);
      second.restore(decodeDeviceState(encodeDeviceState(saved)).state);
      expect(runUntilStopped(second, 1e7)).toBe('halted');
      expect(out, `split at ${split} of ${total}`).toEqual(whole);
    }
    expect(reservations).toBeGreaterThan(0);
  });
});

describe.skipIf(!haveGuests)('pause → encode → decode → restore → resume (prebuilt guests)', () => {
  /** Runs `name` for `split` steps, moves the device state through bytes into a fresh machine, finishes. */
  function splitRun(name: string, split: number): number[] {
    const out: number[] = [];
    const first = bootGuest(name, out);
    first.cpu.run(split);
    const bytes = encodeDeviceState(first.save());
    const second = machineWithRamOf(first, out);
    const { state, skipped } = decodeDeviceState(bytes);
    expect(skipped).toEqual([]);
    second.restore(state);
    expect(runUntilStopped(second, 1e9)).toBe('halted');
    expect(second.exit).toEqual({ kind: 'pass', code: 0 });
    return out;
  }

  for (const name of GUESTS) {
    it(`${name}: output equals an uninterrupted run at every split point`, () => {
      const whole: number[] = [];
      const m = bootGuest(name, whole);
      expect(runUntilStopped(m, 1e9)).toBe('halted');
      expect(whole.length).toBeGreaterThan(0);
      const total = m.cpu.retired;
      const splits = [1, 137, Math.floor(total / 3), Math.floor(total / 2) + 1, total - 5];
      for (const split of splits) {
        expect(splitRun(name, split), `split at ${split} of ${total}`).toEqual(whole);
      }
    });
  }

  it('plic.elf: output equals an uninterrupted run when split where the PLIC state changes', () => {
    const whole: number[] = [];
    const m = bootGuest('plic.elf', whole);
    // Where the PLIC's state moves (a source pends, is claimed, completed; MEIP changes).
    const changes: number[] = [];
    let last = JSON.stringify(m.save().plic);
    while (m.exit === null) {
      m.cpu.run(7);
      const now = JSON.stringify(m.save().plic);
      if (now !== last) changes.push(m.cpu.retired);
      last = now;
    }
    expect(changes.length).toBeGreaterThan(10);
    const step = Math.ceil(changes.length / 12);
    for (let k = 0; k < changes.length; k += step) {
      for (const split of [changes[k]!, changes[k]! + 3]) {
        expect(splitRun('plic.elf', split), `split at ${split}`).toEqual(whole);
      }
    }
  }, 30_000);

  it('decodes exactly the state that was saved, at many points of a run', () => {
    const m = bootGuest('interrupts.elf', []);
    m.uart.receive([1, 2, 3, 250]);
    for (let k = 0; k < 20 && m.exit === null; k++) {
      m.cpu.run(997);
      const state = m.save();
      expect(decodeDeviceState(encodeDeviceState(state)).state).toEqual(state);
    }
  });

  it('carries a guest that has already powered off', () => {
    const m = bootGuest('rv32a.elf', []);
    runUntilStopped(m, 1e9);
    const { state } = decodeDeviceState(encodeDeviceState(m.save()));
    expect(state.finisher.exit).toEqual({ kind: 'pass', code: 0 });
    const again = machineWithRamOf(m, []);
    again.restore(state);
    expect(again.run(1000)).toBe('halted');
  });
});

describe('section table rules', () => {
  const valid = sampleContainer();

  it('writes one required section per component, each with its own version', () => {
    const info = inspectDeviceState(valid);
    expect(info.header).toMatchObject({ major: 1, minor: CONTAINER_VERSION_MINOR, flags: 0 });
    expect(info.sections.map((s) => [s.name, s.version, s.optional])).toEqual([
      ['machine', 1, false],
      ['cpu', 1, false],
      ['clock', 1, false],
      ['clint', 1, false],
      ['uart', 1, false],
      ['finisher', 1, false],
      ['control', 1, false],
      ['plic', 1, false],
    ]);
    expect(info.sections.every((s) => s.readable !== null)).toBe(true);
  });

  it('keeps each section version equal to its state model version', () => {
    const model: Record<string, number> = {
      machine: MACHINE_STATE_VERSION,
      cpu: HART_STATE_VERSION,
      clock: CLOCK_STATE_VERSION,
      clint: CLINT_STATE_VERSION,
      uart: UART_STATE_VERSION,
      finisher: FINISHER_STATE_VERSION,
      control: CONTROL_STATE_VERSION,
      plic: PLIC_STATE_VERSION,
    };
    // A model version bump must come with a schema update, a new golden file and this table.
    expect(Object.fromEntries(MACHINE_SECTIONS.map((s) => [s.name, s.version]))).toEqual(model);
  });

  it('rejects every single-byte corruption of a real container with a SnapshotError', () => {
    for (let k = 0; k < valid.length; k++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const bytes = valid.slice();
        bytes[k]! ^= mask;
        expect(errorOf(() => decodeDeviceState(bytes)).code, `byte ${k} ^ ${mask}`).toBeTypeOf(
          'string',
        );
      }
    }
  });

  it('rejects every truncation of a real container', () => {
    for (let n = 0; n < valid.length; n++) {
      expect(errorOf(() => decodeDeviceState(valid.subarray(0, n))).code).toBe(
        'SNAPSHOT_TRUNCATED',
      );
    }
  });

  it('rejects an unknown required section, naming it', () => {
    const bytes = encodeContainer([
      ...sectionsOf(valid),
      { name: 'virtio', version: 1, optional: false, body: json({}) },
    ]);
    const err = errorOf(() => decodeDeviceState(bytes));
    expect(err.code).toBe('SNAPSHOT_UNKNOWN_SECTION');
    expect(err.section).toBe('virtio');
    expect(err.message).toMatch(/'virtio'/);
    // inspect reports it instead.
    expect(inspectDeviceState(bytes).sections.at(-1)).toMatchObject({
      name: 'virtio',
      readable: null,
    });
  });

  it('skips an unknown optional section and reports it', () => {
    const bytes = encodeDeviceState(sampleState(), [
      { name: 'uart.modem', version: 2, data: { dcd: true } },
    ]);
    const { state, skipped } = decodeDeviceState(bytes);
    expect(skipped).toEqual([{ name: 'uart.modem', version: 2, bodyLength: 12 }]);
    expect(state).toEqual(sampleState());
  });

  it('loads a newer minor that only added optional sections and header fields', () => {
    const bytes = encodeContainer(
      [...sectionsOf(valid), { name: 'cpu.vector', version: 1, optional: true, body: json([0]) }],
      { minor: CONTAINER_VERSION_MINOR + 1, headerExtension: new Uint8Array(8), flags: 0x10000 },
    );
    const decoded = decodeDeviceState(bytes);
    expect(decoded.format).toEqual({ major: 1, minor: CONTAINER_VERSION_MINOR + 1 });
    expect(decoded.skipped.map((s) => s.name)).toEqual(['cpu.vector']);
    expect(decoded.state).toEqual(sampleState());
  });

  it('says a newer minor is to blame when it added a required section', () => {
    const bytes = encodeContainer(
      [...sectionsOf(valid), { name: 'virtio', version: 1, optional: false, body: json({}) }],
      { minor: CONTAINER_VERSION_MINOR + 1 },
    );
    const err = errorOf(() => decodeDeviceState(bytes));
    expect(err.code).toBe('SNAPSHOT_UNKNOWN_SECTION');
    expect(err.message).toMatch(
      new RegExp(
        `format 1\\.${CONTAINER_VERSION_MINOR + 1}, newer than this build's 1\\.${CONTAINER_VERSION_MINOR}`,
      ),
    );
  });

  it('loads a 1.0 container, which has no plic section, with the PLIC in its reset state', () => {
    const old = encodeContainer(
      sectionsOf(valid).filter((s) => s.name !== 'plic'),
      { minor: 0 },
    );
    const decoded = decodeDeviceState(old);
    expect(decoded.format).toEqual({ major: 1, minor: 0 });
    expect(decoded.state).toEqual({ ...sampleState(), plic: plicResetState() });
  });

  it('requires the plic section from format 1.1 on', () => {
    const sections = sectionsOf(valid).filter((s) => s.name !== 'plic');
    const err = errorOf(() => decodeDeviceState(encodeContainer(sections, { minor: 1 })));
    expect(err.code).toBe('SNAPSHOT_INVALID_STATE');
    expect(err.section).toBe('plic');
    expect(err.message).toMatch(/format 1\.1\) lacks the required section 'plic'/);
  });

  it('rejects a section version newer than ours with the name and both versions', () => {
    const sections = sectionsOf(valid).map((s) => (s.name === 'uart' ? { ...s, version: 2 } : s));
    const err = errorOf(() => decodeDeviceState(encodeContainer(sections)));
    expect(err.code).toBe('SNAPSHOT_UNSUPPORTED_VERSION');
    expect(err.section).toBe('uart');
    expect(err.message).toMatch(/section 'uart' has version 2, but this build reads version 1/);
  });

  it('rejects a missing required section', () => {
    const sections = sectionsOf(valid).filter((s) => s.name !== 'clint');
    const err = errorOf(() => decodeDeviceState(encodeContainer(sections)));
    expect(err.code).toBe('SNAPSHOT_INVALID_STATE');
    expect(err.section).toBe('clint');
  });

  it('accepts sections in any order', () => {
    const sections = sectionsOf(valid).reverse();
    expect(decodeDeviceState(encodeContainer(sections)).state).toEqual(sampleState());
  });

  it('rejects an oversized section body before parsing it', () => {
    const sections = sectionsOf(valid).map((s) =>
      s.name === 'clock' ? { ...s, body: new Uint8Array(1025).fill(0x20) } : s,
    );
    const err = errorOf(() => decodeDeviceState(encodeContainer(sections)));
    expect(err.code).toBe('SNAPSHOT_TOO_LARGE');
    expect(err.section).toBe('clock');
  });
});

describe('writer', () => {
  it('refuses a state that its own reader would reject', () => {
    const state = sampleState();
    const bad = { ...state, cpu: { ...state.cpu, x: [...state.cpu.x, 0] } };
    const err = errorOf(() => encodeDeviceState(bad));
    expect(err.code).toBe('SNAPSHOT_INVALID_STATE');
    expect(err.message).toMatch(/refusing to write/);
    const future = { ...state, uart: { ...state.uart, version: 2 } };
    expect(errorOf(() => encodeDeviceState(future)).code).toBe('SNAPSHOT_INVALID_STATE');
    const extraField = { ...state, clint: { ...state.clint, mtime: 5 } };
    expect(errorOf(() => encodeDeviceState(extraField)).message).toMatch(/mtime must be absent/);
  });

  it('refuses extra sections that clash, are badly named or are not JSON', () => {
    const state = sampleState();
    const clash = errorOf(() => encodeDeviceState(state, [{ name: 'cpu', version: 1, data: 1 }]));
    expect(clash.code).toBe('SNAPSHOT_MALFORMED');
    const badName = errorOf(() => encodeDeviceState(state, [{ name: 'X', version: 1, data: 1 }]));
    expect(badName.code).toBe('SNAPSHOT_MALFORMED');
    const big = errorOf(() => encodeDeviceState(state, [{ name: 'x', version: 1, data: 1n }]));
    expect(big.code).toBe('SNAPSHOT_INVALID_STATE');
    const none = errorOf(() =>
      encodeDeviceState(state, [{ name: 'x', version: 1, data: undefined }]),
    );
    expect(none.code).toBe('SNAPSHOT_INVALID_STATE');
  });

  it('encodes the same state to the same bytes', () => {
    expect(encodeDeviceState(sampleState())).toEqual(encodeDeviceState(sampleState()));
  });
});

describe('warmUpDeviceStateCodec', () => {
  it('runs in slices on timers and ends when told to stop', async () => {
    const sample = createMachine({ ramSize: 1 << 20, timeMode: 'deterministic' }).save();
    let all = 0;
    warmUpDeviceStateCodec(sample, 60, () => {
      all++;
      return false;
    });
    let stopped = 0;
    warmUpDeviceStateCodec(sample, 1000, () => ++stopped > 1);
    expect(all + stopped).toBe(0); // nothing runs synchronously
    const end = Date.now() + 10_000;
    while ((all < 3 || stopped < 2) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => setTimeout(r, 50)); // no slice comes after these
    expect(all).toBe(3); // 60 rounds: three slices of 25, then no more timers
    expect(stopped).toBe(2); // one slice, then the stop
  });
});
