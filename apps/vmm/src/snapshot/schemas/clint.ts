import type { ClintState } from '../../devices/clint.js';
import { integer, record, sectionVersion, u32 } from './check.js';

/** Version of the `clint` section this schema reads and writes ({@link ClintState} version 1). */
export const CLINT_SECTION_VERSION = 1;

/** Schema of the `clint` section (a {@link ClintState}): msip is one bit, mtimecmp two u32 words. */
export function checkClint(body: unknown, version: number): ClintState {
  const o = record(body, '', ['version', 'msip', 'mtimecmpLo', 'mtimecmpHi']);
  return {
    version: sectionVersion(o.version, version),
    msip: integer(o.msip, 'msip', 0, 1),
    mtimecmpLo: u32(o.mtimecmpLo, 'mtimecmpLo'),
    mtimecmpHi: u32(o.mtimecmpHi, 'mtimecmpHi'),
  };
}
