/**
 * Golden files: one container per format version, written once and never changed, so every
 * later build proves it still loads what earlier builds saved. fixtures/README.md says when and
 * how a new one is written (`npm run golden:write` in apps/vmm).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { MIP_MEIP } from '../cpu/arch.js';
import { plicResetState } from '../devices/plic.js';
import { createMachine } from '../machine/machine.js';
import type { MachineState } from '../machine/state.js';
import { CONTAINER_VERSION_MAJOR, CONTAINER_VERSION_MINOR } from './container.js';
import { decodeDeviceState, encodeDeviceState } from './device-state.js';
import { TEST_RAM } from './test-support.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
const CURRENT = `device-state-v${CONTAINER_VERSION_MAJOR}.${CONTAINER_VERSION_MINOR}`;

const goldenFiles = readdirSync(FIXTURES)
  .filter((f) => f.startsWith('device-state-v') && f.endsWith('.bin'))
  .sort();

describe('golden files', () => {
  it(`has a golden file for the format this build writes (${CURRENT})`, () => {
    expect(
      goldenFiles,
      `no ${CURRENT}.bin: write it with \`npm run golden:write\` in apps/vmm (fixtures/README.md)`,
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

  it('device-state-v1.0, written before the PLIC existed, loads with the PLIC in its reset state', () => {
    const bytes = new Uint8Array(readFileSync(`${FIXTURES}device-state-v1.0.bin`));
    const recorded = JSON.parse(
      readFileSync(`${FIXTURES}device-state-v1.0.json`, 'utf8'),
    ) as MachineState;
    const { state, format } = decodeDeviceState(bytes);
    expect(format).toEqual({ major: 1, minor: 0 });
    expect(state).toEqual({ ...recorded, plic: plicResetState() });
    const m = createMachine({ ramSize: TEST_RAM, timeMode: state.clock.mode });
    m.cpu.setIrqLine(MIP_MEIP, true); // whatever the line was, the reset PLIC lowers it
    m.restore(state);
    expect(m.save().plic).toEqual(plicResetState());
    expect(m.cpu.mip() & MIP_MEIP).toBe(0);
    // Saved again, it is a current container.
    expect(decodeDeviceState(encodeDeviceState(m.save())).format.minor).toBe(
      CONTAINER_VERSION_MINOR,
    );
  });

  it.each(goldenFiles)('%s still decodes and restores into a machine', (file) => {
    const { state } = decodeDeviceState(new Uint8Array(readFileSync(FIXTURES + file)));
    const m = createMachine({ ramSize: TEST_RAM, timeMode: state.clock.mode });
    m.restore(state);
    expect(m.save().cpu).toEqual(state.cpu);
  });
});
