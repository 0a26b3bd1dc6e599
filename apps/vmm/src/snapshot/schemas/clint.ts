import type { ClintState } from '../../devices/clint.js';
import { defineSection, integer, sectionVersion, u32 } from '../table/fields.js';

/** The `clint` section (a {@link ClintState}): msip is one bit, mtimecmp two u32 words. */
export const CLINT_SECTION = defineSection<ClintState>({
  name: 'clint',
  version: 1,
  maxBodyBytes: 1024,
  fields: {
    version: sectionVersion(),
    msip: integer(0, 1),
    mtimecmpLo: u32(),
    mtimecmpHi: u32(),
  },
});
