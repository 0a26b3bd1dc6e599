import { formatBytes as humanBytes } from '@handoff/service';
import { MemstoreError } from '../errors.js';

export { parseByteSize } from '@handoff/service';

/** Page size of every region: sizes and page indexes are in units of 4 KiB. */
export const PAGE_SIZE = 4096;

/**
 * Formats bytes for messages: `100 bytes`, `65536 (64 KiB)` — the exact
 * count first, since region sizes are exact.
 */
export function formatBytes(n: number | bigint): string {
  const v = Number(n);
  return v < 1024 ? `${v} bytes` : `${v} (${humanBytes(v)})`;
}

/**
 * Checks a requested region size: > 0, a multiple of 4096 (sizes are never
 * rounded silently — a VM's RAM size is exact), and at most `max`.
 * Returns it as a number; throws REGION_INVALID_SIZE.
 */
export function validateRegionSize(size: bigint | number, max: number): number {
  const big = BigInt(size);
  if (big <= 0n) {
    throw new MemstoreError(
      'REGION_INVALID_SIZE',
      `region size ${big} is not valid; pass a positive size in bytes, a multiple of ${PAGE_SIZE}`,
    );
  }
  if (big % BigInt(PAGE_SIZE) !== 0n) {
    const up = (big / BigInt(PAGE_SIZE) + 1n) * BigInt(PAGE_SIZE);
    throw new MemstoreError(
      'REGION_INVALID_SIZE',
      `region size ${big} is not a multiple of the ${PAGE_SIZE}-byte page; use ${up} (rounded up)`,
    );
  }
  if (big > BigInt(max)) {
    throw new MemstoreError(
      'REGION_INVALID_SIZE',
      `region size ${formatBytes(big)} is larger than the limit ${formatBytes(max)}; ` +
        'use a smaller size or raise --max-region-size',
    );
  }
  return Number(big);
}
