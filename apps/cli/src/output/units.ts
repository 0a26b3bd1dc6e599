import { formatBytes, parseByteSize } from '@handoff/service';
import { CliError } from '../errors.js';

export { formatBytes };

/** Parses a size flag (see parseByteSize); a usage error says what a size looks like. */
export function parseSize(text: string, what = 'size'): bigint {
  const n = parseByteSize(text);
  if (n === undefined) {
    throw new CliError(
      'CLI_USAGE',
      `${what} "${text}" is not a size; write a number with an optional unit, e.g. 4096, 64K, 256M, 2G`,
    );
  }
  return BigInt(n);
}

/**
 * Parses a duration flag into milliseconds: a number with a unit, `ms`, `s` or `m` (`500ms`,
 * `30s`, `2m`); a bare number is seconds. A usage error says what a duration looks like.
 */
export function parseDuration(text: string, what = 'duration'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(text);
  const unit = m?.[2] ?? 's';
  const ms =
    m === null ? Number.NaN : Number(m[1]) * (unit === 'ms' ? 1 : unit === 's' ? 1000 : 60_000);
  if (!Number.isFinite(ms) || ms <= 0 || ms > 2 ** 32 - 1) {
    throw new CliError(
      'CLI_USAGE',
      `${what} "${text}" is not a duration; write a number with a unit, e.g. 500ms, 30s, 2m`,
    );
  }
  return Math.round(ms);
}
