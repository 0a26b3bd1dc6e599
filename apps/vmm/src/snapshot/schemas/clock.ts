import type { ClockState } from '../../devices/clock.js';
import {
  absent,
  defineSection,
  integer,
  oneOf,
  rule,
  sectionVersion,
  u32,
  u64,
  variant,
} from '../table/fields.js';
import { U32_MAX } from './check.js';

/** What a real-time clock has instead of the tick fields. */
const NOT_TICKING = absent('absent for a real-time clock', 'the tick fields of a real-time clock');

/**
 * The `clock` section (a {@link ClockState}): mtime is a 64-bit tick count; a deterministic
 * clock also carries its instructions per tick (≥ 1) and the instructions already retired into
 * the current tick (fewer than a tick); a real-time clock carries neither.
 */
export const CLOCK_SECTION = defineSection<ClockState>({
  name: 'clock',
  version: 1,
  maxBodyBytes: 1024,
  fields: {
    version: sectionVersion(),
    mode: oneOf(['deterministic', 'realtime'], { checkFirst: true }),
    mtime: u64(),
    instructionsPerTick: variant('mode', { deterministic: integer(1, U32_MAX) }, NOT_TICKING),
    subTick: variant(
      'mode',
      {
        deterministic: u32({
          rules: [
            rule<number>({
              sibling: 'instructionsPerTick',
              holds: (subTick, perTick) => subTick < perTick,
              expected: (perTick) => `less than instructionsPerTick (${perTick})`,
            }),
          ],
        }),
      },
      NOT_TICKING,
    ),
  },
});
