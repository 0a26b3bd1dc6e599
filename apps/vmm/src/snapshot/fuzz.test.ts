import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import type { TimeMode } from '../devices/clock.js';
import { createMachine, type Machine } from '../machine/machine.js';
import { decodeDeviceState, encodeDeviceState } from './device-state.js';
import { isSnapshotError } from './errors.js';
import { reseal, sampleContainer, validMachineState, withBody } from './test-support.js';

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
      fc.property(validMachineState(), (state) => {
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
