import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { MIE_MASK, MSTATUS_MASK, MSTATUS_MPP } from '../cpu/arch.js';
import type { TimeMode } from '../devices/clock.js';
import { createMachine, type Machine } from '../machine/machine.js';
import type { MachineState } from '../machine/state.js';
import { decodeDeviceState, encodeDeviceState } from './device-state.js';
import { isSnapshotError } from './errors.js';
import { reseal, sampleContainer, withBody } from './test-support.js';

const machines = new Map<TimeMode, Machine>();
/** A small machine per time mode, reused: restore replaces its whole device state. */
function machineFor(mode: TimeMode): Machine {
  let m = machines.get(mode);
  if (m === undefined) {
    m = createMachine({
      ramSize: 64 * 1024,
      timeMode: mode,
      identity: { generationId: 1n, entropy: [0, 0, 0, 0, 0, 0, 0, 0] },
    });
    machines.set(mode, m);
  }
  return m;
}

/**
 * The decoder's contract for any input: return a state that the writer accepts as well and
 * that a machine restores and runs from, or throw a SnapshotError. Never another exception.
 */
function decodesOrRejects(bytes: Uint8Array): boolean {
  let decoded;
  try {
    decoded = decodeDeviceState(bytes);
  } catch (err) {
    if (isSnapshotError(err)) return true;
    throw err;
  }
  const { state } = decoded;
  encodeDeviceState(state);
  const m = machineFor(state.clock.mode);
  m.restore(state);
  m.run(64);
  return true;
}

const valid = sampleContainer();

const u32 = (): fc.Arbitrary<number> => fc.integer({ min: 0, max: 0xffffffff });
const u8 = (): fc.Arbitrary<number> => fc.integer({ min: 0, max: 255 });
const aligned = (): fc.Arbitrary<number> => u32().map((v) => v - (v % 4));
const counter = (): fc.Arbitrary<number> => fc.bigInt(0n, 1n << 63n).map(Number);
const subset = (mask: number): fc.Arbitrary<number> => u32().map((v) => (v & mask) >>> 0);

/** Machine states that satisfy every section schema (not necessarily reachable by a guest). */
function validState(): fc.Arbitrary<MachineState> {
  const cpu = fc.record({
    version: fc.constant(1),
    pc: aligned(),
    x: fc.array(u32(), { minLength: 31, maxLength: 31 }).map((x) => [0, ...x]),
    priv: fc.constantFrom('M' as const, 'U' as const),
    waiting: fc.boolean(),
    csr: fc.record({
      mstatus: fc
        .tuple(subset(MSTATUS_MASK & ~MSTATUS_MPP), fc.constantFrom(0, MSTATUS_MPP))
        .map(([s, mpp]) => (s | mpp) >>> 0),
      mie: subset(MIE_MASK),
      mtvec: u32().map((v) => (v & ~2) >>> 0),
      mepc: aligned(),
      mcause: u32(),
      mtval: u32(),
      mscratch: u32(),
      mcounteren: u32(),
      pmpcfg: fc.array(u32(), { minLength: 4, maxLength: 4 }),
      pmpaddr: fc.array(u32(), { minLength: 16, maxLength: 16 }),
    }),
    retired: fc.maxSafeNat(),
    minstret: counter(),
    mcycle: counter(),
    reservation: fc.option(aligned(), { nil: null }),
  });
  const clock = fc.oneof(
    fc.record({
      version: fc.constant(1),
      mode: fc.constant('realtime' as const),
      mtime: counter(),
    }),
    fc
      .record({ mtime: counter(), instructionsPerTick: fc.integer({ min: 1, max: 0xffffffff }) })
      .chain(({ mtime, instructionsPerTick }) =>
        fc.integer({ min: 0, max: instructionsPerTick - 1 }).map((subTick) => ({
          version: 1,
          mode: 'deterministic' as const,
          mtime,
          instructionsPerTick,
          subTick,
        })),
      ),
  );
  const exit = fc.oneof(
    fc.constant(null),
    fc.constant({ kind: 'pass' as const, code: 0 as const }),
    fc.constant({ kind: 'reset' as const, code: 0 as const }),
    fc.integer({ min: 0, max: 0xffff }).map((code) => ({ kind: 'fail' as const, code })),
  );
  return fc.record({
    version: fc.constant(1),
    cpu,
    clock,
    clint: fc.record({
      version: fc.constant(1),
      msip: fc.constantFrom(0, 1),
      mtimecmpLo: u32(),
      mtimecmpHi: u32(),
    }),
    uart: fc.record({
      version: fc.constant(1),
      ier: subset(0x0f),
      lcr: u8(),
      mcr: subset(0x1f),
      fcr: subset(0xc9),
      scr: u8(),
      divisor: fc.integer({ min: 0, max: 0xffff }),
      thrInterrupt: fc.boolean(),
      rx: fc.array(u8(), { maxLength: 64 }),
    }),
    finisher: fc.record({ version: fc.constant(1), exit }),
    control: fc.record({
      version: fc.constant(1),
      generationId: fc.bigInt(0n, (1n << 64n) - 1n).map((g) => g.toString(16).padStart(16, '0')),
      entropy: fc.array(u32(), { minLength: 8, maxLength: 8 }),
      readyCount: fc.maxSafeNat(),
      hostArgs: fc.array(u8(), { maxLength: 256 }),
    }),
  });
}
const SECTIONS = ['machine', 'cpu', 'clock', 'clint', 'uart', 'finisher', 'control'];

describe('fuzzed device state', () => {
  it('random bytes, with and without a valid-looking prefix', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), fc.boolean(), (tail, prefixed) => {
        const bytes = prefixed ? new Uint8Array([...valid.subarray(0, 12), ...tail]) : tail;
        return decodesOrRejects(reseal(bytes));
      }),
      { numRuns: 2000 },
    );
  });

  it('byte edits, insertions and deletions of a valid container, re-sealed', () => {
    const edit = fc.record({
      at: fc.nat({ max: valid.length - 1 }),
      kind: fc.constantFrom('set', 'insert', 'delete'),
      value: fc.integer({ min: 0, max: 255 }),
    });
    fc.assert(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 4 }), (edits) => {
        const bytes = Array.from(valid);
        for (const e of edits) {
          const at = Math.min(e.at, bytes.length - 1);
          if (e.kind === 'set') bytes[at] = e.value;
          else if (e.kind === 'insert') bytes.splice(at, 0, e.value);
          else bytes.splice(at, 1);
        }
        return decodesOrRejects(reseal(new Uint8Array(bytes)));
      }),
      { numRuns: 3000 },
    );
  });

  it('arbitrary JSON in place of a field of any section', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...SECTIONS),
        fc.string({ maxLength: 12 }),
        fc.jsonValue({ maxDepth: 3 }),
        fc.boolean(),
        (section, key, value, existing) =>
          decodesOrRejects(
            withBody(valid, section, (m) => {
              const keys = Object.keys(m);
              const target = existing ? keys[key.length % keys.length]! : key;
              return { ...m, [target]: value };
            }),
          ),
      ),
      { numRuns: 3000 },
    );
  });

  it('arbitrary JSON as a whole section body', () => {
    fc.assert(
      fc.property(fc.constantFrom(...SECTIONS), fc.jsonValue({ maxDepth: 4 }), (section, body) =>
        decodesOrRejects(withBody(valid, section, () => body)),
      ),
      { numRuns: 1000 },
    );
  });

  it('any state within the schemas survives encode → decode → restore → run', () => {
    fc.assert(
      fc.property(validState(), (state) => {
        const decoded = decodeDeviceState(encodeDeviceState(state)).state;
        expect(decoded).toEqual(state);
        const m = machineFor(state.clock.mode);
        m.restore(decoded);
        m.run(200);
      }),
      { numRuns: 500 },
    );
  });

  it('keeps accepting the valid container it started from', () => {
    expect(decodesOrRejects(valid)).toBe(true);
    expect(decodeDeviceState(valid).skipped).toEqual([]);
  });
});
