import { describe, expect, it } from 'vitest';
import { formatBytes, parseByteSize } from './units.js';

describe('parseByteSize', () => {
  it.each([
    ['4096', 4096],
    ['64K', 65536],
    ['256M', 268435456],
    ['256MiB', 268435456],
    ['64GiB', 64 * 2 ** 30],
    ['1tb', 2 ** 40],
    ['1.5G', 1610612736],
    [' 8 kb ', 8192],
  ])('%j = %d bytes', (text, bytes) => {
    expect(parseByteSize(text)).toBe(bytes);
  });

  it.each(['', 'M', '-1M', '12Q', '1e9', 'ten', '12 parsecs', '99999999999T'])(
    'rejects %j',
    (text) => {
      expect(parseByteSize(text)).toBeUndefined();
    },
  );
});

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [4096, '4 KiB'],
    [268435456n, '256 MiB'],
    [1610612736, '1.50 GiB'],
  ])('%s -> %s', (n, text) => expect(formatBytes(n)).toBe(text));
});
