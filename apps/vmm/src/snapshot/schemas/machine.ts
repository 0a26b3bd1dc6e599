import { record, sectionVersion } from './check.js';

/** Version of the `machine` section: the set of sections of a `MachineState` (its `version`). */
export const MACHINE_SECTION_VERSION = 1;

/** The `machine` section's model: which set of device sections follows. */
export interface MachineSectionState {
  readonly version: number;
}

/** Schema of the `machine` section: just its version. */
export function checkMachine(body: unknown, version: number): MachineSectionState {
  const o = record(body, '', ['version']);
  return { version: sectionVersion(o.version, version) };
}
