import { describe, expect, it } from 'vitest';
import { formatBytes, validateRegionSize } from './size.js';

describe('validateRegionSize', () => {
  const max = 64 * 2 ** 20;

  it('accepts whole pages up to the limit', () => {
    expect(validateRegionSize(4096n, max)).toBe(4096);
    expect(validateRegionSize(BigInt(max), max)).toBe(max);
  });

  it('rejects zero', () => {
    expect(() => validateRegionSize(0n, max)).toThrow(
      expect.objectContaining({
        code: 'REGION_INVALID_SIZE',
        message: expect.stringContaining('positive'),
      }),
    );
  });

  it('rejects partial pages and names the rounded-up size', () => {
    expect(() => validateRegionSize(5000n, max)).toThrow(
      expect.objectContaining({
        code: 'REGION_INVALID_SIZE',
        message: expect.stringContaining('use 8192'),
      }),
    );
  });

  it('rejects sizes over the limit and names the flag', () => {
    expect(() => validateRegionSize(BigInt(max) + 4096n, max)).toThrow(
      expect.objectContaining({
        code: 'REGION_INVALID_SIZE',
        message: expect.stringContaining('--max-region-size'),
      }),
    );
    expect(() => validateRegionSize(2n ** 64n - 4096n, max)).toThrow(
      expect.objectContaining({ code: 'REGION_INVALID_SIZE' }),
    );
  });

  it('formats sizes for messages', () => {
    expect(formatBytes(100)).toBe('100 bytes');
    expect(formatBytes(64 * 2 ** 30)).toBe(`${64 * 2 ** 30} (64 GiB)`);
  });
});
