import type { ClockState, TimeMode } from '../../devices/clock.js';
import { SchemaViolation, integer, oneOf, record, sectionVersion, u32, u64 } from './check.js';

/** Version of the `clock` section this schema reads and writes ({@link ClockState} version 1). */
export const CLOCK_SECTION_VERSION = 1;

/**
 * Schema of the `clock` section (a {@link ClockState}): mtime is a 64-bit tick count; a
 * deterministic clock also carries its instructions per tick (≥ 1) and the instructions already
 * retired into the current tick (fewer than a tick); a real-time clock carries neither.
 */
export function checkClock(body: unknown, version: number): ClockState {
  const o = record(body, '', ['version', 'mode', 'mtime'], ['instructionsPerTick', 'subTick']);
  const mode: TimeMode = oneOf(o.mode, 'mode', ['deterministic', 'realtime'] as const);
  const common = {
    version: sectionVersion(o.version, version),
    mode,
    mtime: u64(o.mtime, 'mtime'),
  };
  if (mode === 'realtime') {
    for (const key of ['instructionsPerTick', 'subTick'] as const) {
      if (o[key] !== undefined) {
        throw new SchemaViolation(key, 'absent for a real-time clock', o[key]);
      }
    }
    return common;
  }
  const instructionsPerTick = integer(o.instructionsPerTick, 'instructionsPerTick', 1, 0xffffffff);
  const subTick = u32(o.subTick, 'subTick');
  if (subTick >= instructionsPerTick) {
    throw new SchemaViolation(
      'subTick',
      `less than instructionsPerTick (${instructionsPerTick})`,
      subTick,
    );
  }
  return { ...common, instructionsPerTick, subTick };
}
