/**
 * The wire (and file) form of a {@link PageBitmap}, version 1.0.
 *
 * All integers little-endian. Total size is `32 + 8 * ceil(bits / 64)` bytes (a multiple of 8).
 *
 * | offset | size | field | value / rule |
 * |---|---|---|---|
 * | 0 | 4 | magic | ASCII `HBMP` (`48 42 4D 50`) |
 * | 4 | 2 | major version | u16 = 1; any other major is rejected |
 * | 6 | 2 | minor version | u16 = 0; a minor newer than the reader's is rejected |
 * | 8 | 8 | bit length | u64 = number of pages; at most `maxBits` (default {@link MAX_BITS} = 2^31) |
 * | 16 | 4 | checksum | u32 CRC-32 (ISO-HDLC, as zlib) over bytes `[0, 16)` then the word section |
 * | 20 | 4 | reserved | u32 = 0 |
 * | 24 | 8·W | words | W = ceil(bits / 64) u64 words; bit `i` is bit `i mod 64` of word `floor(i / 64)`; bits `>= bit length` in the last word are 0 |
 * | 24 + 8·W | 8 | sentinel | ASCII `BITS-END` (`42 49 54 53 2D 45 4E 44`) |
 *
 * The decoder treats its input as hostile: it checks magic, version, reserved field, bit length
 * (against `maxBits` before allocating anything), exact total size, sentinel, checksum and the
 * padding bits, and throws {@link BitmapError} for every violation. It never reads outside the
 * input and does work linear in the input length.
 *
 * @packageDocumentation
 */

import { crc32 } from 'node:zlib';

import { BitmapError, describe } from './errors.js';
import { PageBitmap } from './page-bitmap.js';
import { MAX_BITS, checkBitCount, wordCount32 } from './words.js';

/** The four magic bytes, ASCII `HBMP`. */
export const WIRE_MAGIC: readonly number[] = Object.freeze([0x48, 0x42, 0x4d, 0x50]);
/** Major version written and the only one accepted. Bump it for incompatible changes. */
export const WIRE_VERSION_MAJOR = 1;
/** Minor version written; inputs with a minor up to this are accepted. */
export const WIRE_VERSION_MINOR = 0;
/** The eight sentinel bytes that end an encoding, ASCII `BITS-END`. */
export const WIRE_SENTINEL: readonly number[] = Object.freeze([
  0x42, 0x49, 0x54, 0x53, 0x2d, 0x45, 0x4e, 0x44,
]);
/** Bytes before the words. */
export const WIRE_HEADER_BYTES = 24;
/** Bytes of the trailing sentinel. */
export const WIRE_SENTINEL_BYTES = 8;

/** Options for {@link decode} and {@link decodeInto}. */
export interface DecodeOptions {
  /**
   * Reject encodings that declare more bits than this (`BITMAP_TOO_LARGE`), before allocating.
   * Default and ceiling: {@link MAX_BITS}. Set it from the RAM block table.
   */
  readonly maxBits?: number;
  /** Require exactly this many bits (`BITMAP_SIZE_MISMATCH` otherwise). */
  readonly expectedBits?: number;
}

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Encoded size in bytes of a bitmap of `bits` bits. @throws BitmapError `BITMAP_INVALID_ARGUMENT` */
export function encodedByteLength(bits: number): number {
  return WIRE_HEADER_BYTES + wordCount32(checkBitCount('encodedByteLength', bits)) * 4 + 8;
}

/**
 * Encode a bitmap into a new `Uint8Array` (see the module doc for the layout).
 *
 * If another thread writes the bitmap concurrently, the result is a consistent encoding of some
 * mix of old and new bits (the checksum is computed over the copied bytes).
 */
export function encode(bitmap: PageBitmap): Uint8Array {
  const out = new Uint8Array(encodedByteLength(bitmap.size));
  encodeInto(bitmap, out, 0);
  return out;
}

/**
 * Encode into caller memory at `offset`, e.g. a reused send buffer.
 *
 * @returns the number of bytes written ({@link encodedByteLength}(bitmap.size))
 * @throws BitmapError `BITMAP_INVALID_ARGUMENT` if `out` is too small or `offset` is bad
 */
export function encodeInto(bitmap: PageBitmap, out: Uint8Array, offset = 0): number {
  const total = encodedByteLength(bitmap.size);
  if (!Number.isInteger(offset) || offset < 0 || out.length - offset < total) {
    throw new BitmapError(
      'BITMAP_INVALID_ARGUMENT',
      `encodeInto: output has ${out.length} bytes but ${total} are needed at offset ` +
        `${describe(offset)}; size it with encodedByteLength(${bitmap.size}).`,
    );
  }
  const view = new DataView(out.buffer, out.byteOffset + offset, total);
  for (let i = 0; i < 4; i++) view.setUint8(i, WIRE_MAGIC[i]!);
  view.setUint16(4, WIRE_VERSION_MAJOR, true);
  view.setUint16(6, WIRE_VERSION_MINOR, true);
  view.setUint32(8, bitmap.size, true);
  view.setUint32(12, 0, true);
  view.setUint32(20, 0, true);
  const words = bitmap.words;
  const bodyEnd = WIRE_HEADER_BYTES + words.length * 4;
  wordsToLittleEndian(words, out, offset + WIRE_HEADER_BYTES, HOST_LITTLE_ENDIAN);
  const body = out.subarray(offset + WIRE_HEADER_BYTES, offset + bodyEnd);
  view.setUint32(16, checksum(out.subarray(offset, offset + 16), body), true);
  for (let i = 0; i < 8; i++) view.setUint8(bodyEnd + i, WIRE_SENTINEL[i]!);
  return total;
}

/**
 * Decode and validate an encoding into a new {@link PageBitmap}.
 *
 * @throws BitmapError `BITMAP_MALFORMED` (bad magic, truncated, checksum, sentinel, trailing
 *   bytes, reserved field, bits set beyond the bit length), `BITMAP_UNSUPPORTED_VERSION`,
 *   `BITMAP_TOO_LARGE` (bit length above `maxBits`), `BITMAP_SIZE_MISMATCH` (`expectedBits`),
 *   `BITMAP_INVALID_ARGUMENT` (input not a `Uint8Array`, bad options)
 */
export function decode(bytes: Uint8Array, options: DecodeOptions = {}): PageBitmap {
  const bits = validate(bytes, options, 'decode');
  const bitmap = new PageBitmap(bits);
  wordsFromLittleEndian(bytes, WIRE_HEADER_BYTES, bitmap.words, HOST_LITTLE_ENDIAN);
  return bitmap;
}

/**
 * Decode into an existing bitmap of the right size (no allocation of bitmap memory). The target
 * is written only after the whole input validated; on error it is unchanged.
 *
 * @throws BitmapError as {@link decode}, plus `BITMAP_SIZE_MISMATCH` if the encoding's bit length
 *   differs from `target.size`
 */
export function decodeInto(
  bytes: Uint8Array,
  target: PageBitmap,
  options: Pick<DecodeOptions, 'maxBits'> = {},
): PageBitmap {
  validate(bytes, { maxBits: options.maxBits, expectedBits: target.size }, 'decodeInto');
  wordsFromLittleEndian(bytes, WIRE_HEADER_BYTES, target.words, HOST_LITTLE_ENDIAN);
  return target;
}

// ---- internals ---------------------------------------------------------------------------------

function malformed(op: string, what: string): never {
  throw new BitmapError(
    'BITMAP_MALFORMED',
    `${op}: not a valid encoded page bitmap: ${what}. The bytes are corrupt, truncated or not a ` +
      `bitmap; discard them and request the bitmap again from its sender.`,
  );
}

function checksum(header16: Uint8Array, body: Uint8Array): number {
  return crc32(body, crc32(header16)) >>> 0;
}

/** Validate everything before any bitmap memory is touched; returns the bit length. */
function validate(bytes: Uint8Array, options: DecodeOptions, op: string): number {
  if (!(bytes instanceof Uint8Array)) {
    throw new BitmapError(
      'BITMAP_INVALID_ARGUMENT',
      `${op}: input is ${describe(bytes)}, not a Uint8Array; pass the received bytes (a Buffer works).`,
    );
  }
  const maxBits = options.maxBits ?? MAX_BITS;
  if (!Number.isInteger(maxBits) || maxBits < 0 || maxBits > MAX_BITS) {
    throw new BitmapError(
      'BITMAP_INVALID_ARGUMENT',
      `${op}: maxBits ${describe(maxBits)} must be an integer in [0, ${MAX_BITS}].`,
    );
  }
  const expected = options.expectedBits;
  if (
    expected !== undefined &&
    (!Number.isInteger(expected) || expected < 0 || expected > MAX_BITS)
  ) {
    throw new BitmapError(
      'BITMAP_INVALID_ARGUMENT',
      `${op}: expectedBits ${describe(expected)} must be an integer in [0, ${MAX_BITS}].`,
    );
  }

  const len = bytes.length;
  if (len < WIRE_HEADER_BYTES) {
    malformed(op, `input is ${len} bytes, shorter than the ${WIRE_HEADER_BYTES}-byte header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, len);
  for (let i = 0; i < 4; i++) {
    if (view.getUint8(i) !== WIRE_MAGIC[i]) {
      malformed(op, `magic is ${hex(bytes, 0, 4)}, expected 48 42 4d 50 ("HBMP")`);
    }
  }
  const major = view.getUint16(4, true);
  const minor = view.getUint16(6, true);
  if (major !== WIRE_VERSION_MAJOR || minor > WIRE_VERSION_MINOR) {
    throw new BitmapError(
      'BITMAP_UNSUPPORTED_VERSION',
      `${op}: encoded bitmap has format version ${major}.${minor}; this build reads ` +
        `${WIRE_VERSION_MAJOR}.0 to ${WIRE_VERSION_MAJOR}.${WIRE_VERSION_MINOR}. ` +
        `Upgrade the receiver or have the sender write version ${WIRE_VERSION_MAJOR}.`,
    );
  }
  const reserved = view.getUint32(20, true);
  if (reserved !== 0) malformed(op, `reserved field at byte 20 is ${reserved}, must be 0`);

  const lo = view.getUint32(8, true);
  const hi = view.getUint32(12, true);
  if (hi !== 0 || lo > maxBits) {
    const declared = hi === 0 ? String(lo) : (BigInt(hi) * 2n ** 32n + BigInt(lo)).toString();
    throw new BitmapError(
      'BITMAP_TOO_LARGE',
      `${op}: encoded bitmap declares ${declared} bits, more than the limit of ${maxBits}; ` +
        `the RAM block is smaller than the sender thinks, or the input is corrupt.`,
    );
  }
  const bits = lo;
  if (expected !== undefined && bits !== expected) {
    throw new BitmapError(
      'BITMAP_SIZE_MISMATCH',
      `${op}: encoded bitmap has ${bits} bits but ${expected} were expected; ` +
        `sender and receiver disagree on the RAM block size.`,
    );
  }

  const bodyBytes = wordCount32(bits) * 4;
  const bodyEnd = WIRE_HEADER_BYTES + bodyBytes;
  const total = bodyEnd + WIRE_SENTINEL_BYTES;
  if (len < total) {
    malformed(op, `input is ${len} bytes, but ${bits} bits need exactly ${total} (truncated)`);
  }
  for (let i = 0; i < 8; i++) {
    if (view.getUint8(bodyEnd + i) !== WIRE_SENTINEL[i]) {
      malformed(
        op,
        `sentinel at byte ${bodyEnd} is ${hex(bytes, bodyEnd, 8)}, expected 42 49 54 53 2d 45 4e 44 ("BITS-END")`,
      );
    }
  }
  if (len > total) {
    malformed(
      op,
      `${len - total} trailing bytes after the sentinel (input ${len} bytes, expected ${total})`,
    );
  }
  const stored = view.getUint32(16, true);
  const actual = checksum(bytes.subarray(0, 16), bytes.subarray(WIRE_HEADER_BYTES, bodyEnd));
  if (stored !== actual) {
    malformed(
      op,
      `checksum mismatch (stored 0x${stored.toString(16).padStart(8, '0')}, computed 0x${actual.toString(16).padStart(8, '0')})`,
    );
  }
  const r = bits & 63;
  if (r !== 0) {
    const last = bodyEnd - 8;
    const low = view.getUint32(last, true);
    const high = view.getUint32(last + 4, true);
    const stray =
      r < 32 ? low >>> r !== 0 || high !== 0 : r === 32 ? high !== 0 : high >>> (r - 32) !== 0;
    if (stray) malformed(op, `bits at or beyond the bit length ${bits} are set in the last word`);
  }
  return bits;
}

function hex(bytes: Uint8Array, start: number, n: number): string {
  const parts: string[] = [];
  for (let i = start; i < start + n && i < bytes.length; i++) {
    parts.push(bytes[i]!.toString(16).padStart(2, '0'));
  }
  return parts.join(' ');
}

/**
 * Copy storage words to little-endian u64 wire words at `out[offset..]`.
 * @internal exported for tests of both byte orders
 */
export function wordsToLittleEndian(
  words: Uint32Array,
  out: Uint8Array,
  offset: number,
  hostLittleEndian: boolean,
): void {
  if (hostLittleEndian) {
    out.set(new Uint8Array(words.buffer, words.byteOffset, words.length * 4), offset);
    return;
  }
  const view = new DataView(out.buffer, out.byteOffset + offset, words.length * 4);
  for (let w = 0; w < words.length; w++) view.setUint32(w * 4, words[w]!, true);
}

/**
 * Copy little-endian u64 wire words at `bytes[offset..]` into storage words.
 * @internal exported for tests of both byte orders
 */
export function wordsFromLittleEndian(
  bytes: Uint8Array,
  offset: number,
  words: Uint32Array,
  hostLittleEndian: boolean,
): void {
  const n = words.length * 4;
  if (hostLittleEndian) {
    new Uint8Array(words.buffer, words.byteOffset, n).set(bytes.subarray(offset, offset + n));
    return;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, n);
  for (let w = 0; w < words.length; w++) words[w] = view.getUint32(w * 4, true);
}
