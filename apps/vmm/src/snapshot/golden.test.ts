/**
 * Golden files: one container per format version, written once and never changed, so every
 * later build proves it still loads what earlier builds saved (DESIGN.md, "Wire and file
 * formats"). See fixtures/README.md for when and how to add one.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { createMachine } from '../machine/machine.js';
import type { MachineState } from '../machine/state.js';
import { CONTAINER_VERSION_MAJOR, CONTAINER_VERSION_MINOR } from './container.js';
import { decodeDeviceState, encodeDeviceState } from './device-state.js';
import { TEST_RAM, sampleState } from './test-support.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
const CURRENT = `device-state-v${CONTAINER_VERSION_MAJOR}.${CONTAINER_VERSION_MINOR}`;
const WRITE = process.env['HANDOFF_WRITE_GOLDEN'] === '1';

const goldenFiles = readdirSync(FIXTURES)
  .filter((f) => f.startsWith('device-state-v') && f.endsWith('.bin'))
  .sort();

if (!WRITE) {
  console.info(
    'snapshot: golden file writer skipped (it runs only with HANDOFF_WRITE_GOLDEN=1, after a version bump)',
  );
}

describe.runIf(WRITE)('golden file writer (HANDOFF_WRITE_GOLDEN=1)', () => {
  it(`writes ${CURRENT}.bin once`, () => {
    const bin = `${FIXTURES}${CURRENT}.bin`;
    if (existsSync(bin)) {
      throw new Error(
        `${CURRENT}.bin exists and golden files never change. If the writer's output changed, ` +
          `bump CONTAINER_VERSION_MINOR (or MAJOR) in container.ts first (see FORMAT.md).`,
      );
    }
    const state = sampleState();
    writeFileSync(bin, encodeDeviceState(state));
    writeFileSync(`${FIXTURES}${CURRENT}.json`, `${JSON.stringify(state, null, 2)}\n`);
  });
});

describe.skipIf(WRITE)('golden files', () => {
  it(`has a golden file for the format this build writes (${CURRENT})`, () => {
    expect(
      goldenFiles,
      `no ${CURRENT}.bin: generate it with HANDOFF_WRITE_GOLDEN=1 (fixtures/README.md)`,
    ).toContain(`${CURRENT}.bin`);
  });

  it(`${CURRENT}: decodes to its recorded state and re-encodes byte for byte`, () => {
    const bytes = new Uint8Array(readFileSync(`${FIXTURES}${CURRENT}.bin`));
    const expected = JSON.parse(readFileSync(`${FIXTURES}${CURRENT}.json`, 'utf8')) as MachineState;
    const decoded = decodeDeviceState(bytes);
    expect(decoded.skipped).toEqual([]);
    expect(decoded.state).toEqual(expected);
    // A change of the writer's output without a version bump fails here.
    expect(encodeDeviceState(expected)).toEqual(bytes);
  });

  it.each(goldenFiles)('%s still decodes and restores into a machine', (file) => {
    const { state } = decodeDeviceState(new Uint8Array(readFileSync(FIXTURES + file)));
    const m = createMachine({ ramSize: TEST_RAM, timeMode: state.clock.mode });
    m.restore(state);
    expect(m.save().cpu).toEqual(state.cpu);
  });
});
