/**
 * Word-level primitives over 32-bit bit storage, shared by {@link PageBitmap} and the dirty
 * logs. Bit `i` lives in word `i >>> 5` at position `i & 31` (LSB first), so pairs of words
 * `(2k, 2k+1)` are the low and high halves of little-endian 64-bit word `k` — the wire form.
 *
 * The words are accessed through an `Int32Array` view: loads then stay int32 in V8's optimised
 * code (a `Uint32Array` load of a word with bit 31 set becomes a float64 and made a dense
 * `findNextSet` loop 2.3x slower in measurement), and int32 results of bit operations store
 * without conversion.
 *
 * Everything here is unchecked: callers validate indexes first. Nothing allocates.
 *
 * @internal
 * @packageDocumentation
 */

import { BitmapError, describe } from './errors.js';

/**
 * Largest supported bitmap: 2^31 bits (one bit per 4 KiB page covers 8 TiB). Every valid index
 * then fits a positive int32, which keeps the hot paths in V8's small-integer fast path.
 */
export const MAX_BITS = 2 ** 31;

/** Validates a bit count; throws `BITMAP_INVALID_ARGUMENT`. Returns it for chaining. */
export function checkBitCount(op: string, bits: unknown): number {
  if (typeof bits !== 'number' || !Number.isInteger(bits) || bits < 0 || bits > MAX_BITS) {
    throw new BitmapError(
      'BITMAP_INVALID_ARGUMENT',
      `${op}: bit count ${describe(bits)} is invalid; pass an integer in [0, ${MAX_BITS}] ` +
        `(one bit per page; 2^31 pages is 8 TiB of 4 KiB pages).`,
    );
  }
  return bits;
}

/** Bits per storage word. */
export const WORD_BITS = 32;

/** A word with all 32 bits set, as stored in an `Int32Array`. */
export const FULL = -1;

/**
 * Number of 32-bit storage words for `bits` bits: always even, i.e. whole 64-bit words, so a
 * 64-bit view and the wire form map onto the same memory.
 */
export function wordCount32(bits: number): number {
  return Math.ceil(bits / 64) * 2;
}

/** Set bits in `v` (0..32). SWAR popcount; exact for any uint32/int32 input. */
export function popcount32(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

/** Count of trailing zero bits of a non-zero word (undefined result for 0). */
export function ctz32(v: number): number {
  return 31 - Math.clz32(v & -v);
}

/**
 * First set bit at or after `from`, or -1. Requires `from < words.length * 32`.
 * Relies on the tail invariant (no bits set at or beyond the logical size).
 */
export function nextSet(words: Int32Array, from: number): number {
  const n = words.length;
  let w = from >>> 5;
  let v = words[w]! & (-1 << (from & 31));
  while (v === 0) {
    if (++w >= n) return -1;
    v = words[w]!;
  }
  return (w << 5) + 31 - Math.clz32(v & -v);
}

/**
 * First clear bit at or after `from` that is below `size`, or -1.
 * Requires `from < size`.
 */
export function nextClear(words: Int32Array, from: number, size: number): number {
  const n = words.length;
  let w = from >>> 5;
  let v = ~words[w]! & (-1 << (from & 31));
  while (v === 0) {
    if (++w >= n) return -1;
    v = ~words[w]!;
  }
  const r = (w << 5) + 31 - Math.clz32(v & -v);
  return r < size ? r : -1;
}

/** Set bits `[start, end)`; requires `start < end`. */
export function setRangeWords(words: Int32Array, start: number, end: number): void {
  const w0 = start >>> 5;
  const w1 = (end - 1) >>> 5;
  const m0 = -1 << (start & 31);
  const m1 = -1 >>> (31 - ((end - 1) & 31));
  if (w0 === w1) {
    words[w0] = words[w0]! | (m0 & m1);
    return;
  }
  words[w0] = words[w0]! | m0;
  if (w1 - w0 > 8) words.fill(FULL, w0 + 1, w1);
  else for (let w = w0 + 1; w < w1; w++) words[w] = FULL;
  words[w1] = words[w1]! | m1;
}

/** Clear bits `[start, end)`; requires `start < end`. */
export function clearRangeWords(words: Int32Array, start: number, end: number): void {
  const w0 = start >>> 5;
  const w1 = (end - 1) >>> 5;
  const m0 = -1 << (start & 31);
  const m1 = -1 >>> (31 - ((end - 1) & 31));
  if (w0 === w1) {
    words[w0] = words[w0]! & ~(m0 & m1);
    return;
  }
  words[w0] = words[w0]! & ~m0;
  if (w1 - w0 > 8) words.fill(0, w0 + 1, w1);
  else for (let w = w0 + 1; w < w1; w++) words[w] = 0;
  words[w1] = words[w1]! & ~m1;
}

/** Popcount of bits `[start, end)`; requires `start < end`. */
export function popcountRangeWords(words: Int32Array, start: number, end: number): number {
  const w0 = start >>> 5;
  const w1 = (end - 1) >>> 5;
  const m0 = -1 << (start & 31);
  const m1 = -1 >>> (31 - ((end - 1) & 31));
  if (w0 === w1) return popcount32(words[w0]! & m0 & m1);
  let c = popcount32(words[w0]! & m0) + popcount32(words[w1]! & m1);
  for (let w = w0 + 1; w < w1; w++) c += popcount32(words[w]!);
  return c;
}

/** True if any bit beyond `size` is set (violates the tail invariant). */
export function hasTailBits(words: Int32Array, size: number): boolean {
  const total = words.length * 32;
  if (size >= total) return false;
  const w0 = size >>> 5;
  const lo = size & 31;
  if (lo !== 0 && (words[w0]! & (-1 << lo)) !== 0) return true;
  for (let w = lo === 0 ? w0 : w0 + 1; w < words.length; w++) if (words[w] !== 0) return true;
  return false;
}
