import { defineSection, sectionVersion } from '../table/fields.js';

/** The `machine` section's model: which set of device sections follows. */
export interface MachineSectionState {
  readonly version: number;
}

/** The `machine` section: just its version, `MachineState.version`. */
export const MACHINE_SECTION = defineSection<MachineSectionState>({
  name: 'machine',
  version: 1,
  maxBodyBytes: 1024,
  fields: {
    version: sectionVersion(),
  },
});
