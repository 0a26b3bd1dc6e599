import { describe, expect, it } from 'vitest';
import { CliError } from '../errors.js';
import { parseDuration, parseSize } from './units.js';

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

describe('parseDuration', () => {
  it('takes ms, s and m, a bare number as seconds', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('1.5')).toBe(1500);
    expect(parseDuration('2m')).toBe(120_000);
  });

  it.each(['', 'soon', '0s', '-1s', '3h'])('rejects %j with a usage error', (text) => {
    expect(() => parseDuration(text, '--ready-timeout')).toThrow(CliError);
    expect(() => parseDuration(text, '--ready-timeout')).toThrow(
      /--ready-timeout .* is not a duration; write a number with a unit, e.g. 500ms, 30s, 2m/,
    );
  });
});
