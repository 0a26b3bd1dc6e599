import { describe, expect, it } from 'vitest';
import { CliError } from '../errors.js';
import { parseSize } from './units.js';

describe('parseSize', () => {
  it('returns bytes as a bigint', () => {
    expect(parseSize('2G')).toBe(2147483648n);
  });

  it.each(['', 'M', 'lots'])(
    'rejects %j with a usage error saying what a size looks like',
    (text) => {
      expect(() => parseSize(text, '--size')).toThrow(CliError);
      expect(() => parseSize(text, '--size')).toThrow(/--size .* is not a size; write a number/);
    },
  );
});
