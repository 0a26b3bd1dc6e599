/**
 * The one error type of `@handoff/bitmap`.
 *
 * Every failure this package raises on purpose is a {@link BitmapError} whose `code` is one of
 * {@link BitmapErrorCode}. Codes are stable (callers and the gRPC status table switch on them);
 * messages are for humans: they say what failed and what to do about it.
 *
 * @packageDocumentation
 */

/**
 * Stable error codes.
 *
 * | code | meaning |
 * |---|---|
 * | `BITMAP_OUT_OF_RANGE` | a page index or range lies outside the bitmap |
 * | `BITMAP_SIZE_MISMATCH` | two bitmaps (or a decoded bitmap and its expected size) differ in size |
 * | `BITMAP_INVALID_ARGUMENT` | a size, buffer, offset, slot or option is unusable |
 * | `BITMAP_MALFORMED` | bytes are not a valid encoded bitmap (magic, truncation, checksum, sentinel, trailing bytes, stray tail bits, reserved fields) |
 * | `BITMAP_UNSUPPORTED_VERSION` | an encoded bitmap has another major version, or a newer minor version than this build reads |
 * | `BITMAP_TOO_LARGE` | an encoded bitmap declares more bits than the caller's `maxBits` (or {@link MAX_BITS}) |
 * | `BITMAP_INVALID_STATE` | an operation is not allowed in the object's current state (e.g. a parked writer marks) |
 * | `BITMAP_TIMEOUT` | a harvest waited longer than its timeout for writers to acknowledge |
 */
export type BitmapErrorCode =
  | 'BITMAP_OUT_OF_RANGE'
  | 'BITMAP_SIZE_MISMATCH'
  | 'BITMAP_INVALID_ARGUMENT'
  | 'BITMAP_MALFORMED'
  | 'BITMAP_UNSUPPORTED_VERSION'
  | 'BITMAP_TOO_LARGE'
  | 'BITMAP_INVALID_STATE'
  | 'BITMAP_TIMEOUT';

/** Every {@link BitmapErrorCode}, for exhaustive tables (e.g. the gRPC status mapping). */
export const BITMAP_ERROR_CODES: readonly BitmapErrorCode[] = Object.freeze([
  'BITMAP_OUT_OF_RANGE',
  'BITMAP_SIZE_MISMATCH',
  'BITMAP_INVALID_ARGUMENT',
  'BITMAP_MALFORMED',
  'BITMAP_UNSUPPORTED_VERSION',
  'BITMAP_TOO_LARGE',
  'BITMAP_INVALID_STATE',
  'BITMAP_TIMEOUT',
]);

/**
 * The error thrown by every checked operation, the decoder and the dirty logs.
 *
 * Recognise it with {@link isBitmapError} (works across realms and duplicated package copies) or
 * `instanceof BitmapError`.
 */
export class BitmapError extends Error {
  /** Always `'BitmapError'`. */
  override readonly name = 'BitmapError';
  /** Stable machine-readable code; see {@link BitmapErrorCode}. */
  readonly code: BitmapErrorCode;

  /**
   * @param code - stable code
   * @param message - what failed and what the caller can do
   * @param options - standard `cause`
   */
  constructor(code: BitmapErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/**
 * Name guard for {@link BitmapError}: true for instances of this class and for look-alikes from
 * another copy of the package (same `name`, a known `code`).
 */
export function isBitmapError(value: unknown): value is BitmapError {
  if (value instanceof BitmapError) return true;
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { name?: unknown; code?: unknown };
  return (
    v.name === 'BitmapError' &&
    typeof v.code === 'string' &&
    (BITMAP_ERROR_CODES as readonly string[]).includes(v.code)
  );
}

// ---------------------------------------------------------------------------------------------
// Throw helpers. Kept out of line (and returning `never`) so the checked hot paths stay small
// enough for V8 to inline; they are only reached on failure.
// ---------------------------------------------------------------------------------------------

/** @internal Describe a value for an error message without dumping large objects. */
export function describe(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') {
    return String(value);
  }
  if (typeof value === 'string') return JSON.stringify(value.slice(0, 40));
  if (value === null || value === undefined) return String(value);
  return typeof value;
}

/** @internal Throws BITMAP_OUT_OF_RANGE for a bad single index. */
export function throwIndex(op: string, index: unknown, size: number): never {
  if (typeof index !== 'number' || !Number.isInteger(index)) {
    throw new BitmapError(
      'BITMAP_OUT_OF_RANGE',
      `${op}: page index ${describe(index)} is not an integer; pass a whole page number in [0, ${size}).`,
    );
  }
  throw new BitmapError(
    'BITMAP_OUT_OF_RANGE',
    `${op}: page index ${index} is outside the bitmap of ${size} pages; valid indexes are [0, ${size}). ` +
      `Check the guest address against the RAM block table before marking.`,
  );
}

/** @internal Throws BITMAP_OUT_OF_RANGE for a bad half-open range. */
export function throwRange(op: string, start: unknown, end: unknown, size: number): never {
  throw new BitmapError(
    'BITMAP_OUT_OF_RANGE',
    `${op}: range [${describe(start)}, ${describe(end)}) is not a valid half-open page range of a ` +
      `${size}-page bitmap; pass integers with 0 <= start <= end <= ${size}.`,
  );
}

/** @internal Throws BITMAP_OUT_OF_RANGE for a bad search start. */
export function throwFrom(op: string, from: unknown): never {
  throw new BitmapError(
    'BITMAP_OUT_OF_RANGE',
    `${op}: start index ${describe(from)} is not a non-negative integer; pass 0 or the index after the last hit.`,
  );
}

/** @internal Throws BITMAP_SIZE_MISMATCH for two bitmaps of different sizes. */
export function throwSizeMismatch(op: string, mine: number, theirs: number): never {
  throw new BitmapError(
    'BITMAP_SIZE_MISMATCH',
    `${op}: bitmaps differ in size (${mine} pages here, ${theirs} in the argument); ` +
      `both must describe the same RAM block.`,
  );
}
