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
