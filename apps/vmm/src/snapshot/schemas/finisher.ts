import type { ExitStatus, FinisherState } from '../../devices/test-finisher.js';
import { SchemaViolation, integer, oneOf, record, sectionVersion } from './check.js';

/** Version of the `finisher` section this schema reads and writes ({@link FinisherState} version 1). */
export const FINISHER_SECTION_VERSION = 1;

/**
 * Schema of the `finisher` section (a {@link FinisherState}): no exit yet (`null`), or pass /
 * reset with code 0, or fail with a 16-bit code.
 */
export function checkFinisher(body: unknown, version: number): FinisherState {
  const o = record(body, '', ['version', 'exit']);
  return { version: sectionVersion(o.version, version), exit: checkExit(o.exit) };
}

function checkExit(value: unknown): ExitStatus | null {
  if (value === null) return null;
  const e = record(value, 'exit', ['kind', 'code']);
  const kind = oneOf(e.kind, 'exit.kind', ['pass', 'fail', 'reset'] as const);
  if (kind === 'fail') return { kind, code: integer(e.code, 'exit.code', 0, 0xffff) };
  if (e.code !== 0) throw new SchemaViolation('exit.code', `0 for a '${kind}' exit`, e.code);
  return { kind, code: 0 };
}
