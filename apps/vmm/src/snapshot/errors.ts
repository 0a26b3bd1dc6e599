/**
 * The one error type of the device-state container ({@link SnapshotError}) and its stable codes.
 *
 * @packageDocumentation
 */

/**
 * Stable error codes.
 *
 * | code | meaning |
 * |---|---|
 * | `SNAPSHOT_BAD_MAGIC` | the bytes do not start with the container magic (not device state at all) |
 * | `SNAPSHOT_BAD_CRC` | the checksum over header and sections does not match (corrupted) |
 * | `SNAPSHOT_UNSUPPORTED_VERSION` | another major format version, a newer minor that needs a feature this build lacks, or a section version this build cannot read |
 * | `SNAPSHOT_TRUNCATED` | the bytes end before the declared container does |
 * | `SNAPSHOT_MALFORMED` | the framing is inconsistent: header fields, section entries, names, duplicates, trailing bytes |
 * | `SNAPSHOT_UNKNOWN_SECTION` | a required section this build does not know |
 * | `SNAPSHOT_INVALID_STATE` | a section body is not a state the machine can be in (bad JSON, types, ranges), or a required section is missing |
 * | `SNAPSHOT_TOO_LARGE` | the container, a section count or a section body exceeds its limit |
 */
export type SnapshotErrorCode =
  | 'SNAPSHOT_BAD_MAGIC'
  | 'SNAPSHOT_BAD_CRC'
  | 'SNAPSHOT_UNSUPPORTED_VERSION'
  | 'SNAPSHOT_TRUNCATED'
  | 'SNAPSHOT_MALFORMED'
  | 'SNAPSHOT_UNKNOWN_SECTION'
  | 'SNAPSHOT_INVALID_STATE'
  | 'SNAPSHOT_TOO_LARGE';

/** Every {@link SnapshotErrorCode}, for exhaustive tables (e.g. the gRPC status mapping). */
export const SNAPSHOT_ERROR_CODES: readonly SnapshotErrorCode[] = Object.freeze([
  'SNAPSHOT_BAD_MAGIC',
  'SNAPSHOT_BAD_CRC',
  'SNAPSHOT_UNSUPPORTED_VERSION',
  'SNAPSHOT_TRUNCATED',
  'SNAPSHOT_MALFORMED',
  'SNAPSHOT_UNKNOWN_SECTION',
  'SNAPSHOT_INVALID_STATE',
  'SNAPSHOT_TOO_LARGE',
]);

/**
 * Raised for every device-state container that cannot be written or loaded. Decoding never
 * throws anything else, whatever the input bytes. Recognise it with {@link isSnapshotError}
 * (works across duplicated module copies) or `instanceof`.
 */
export class SnapshotError extends Error {
  /** Always `'SnapshotError'`. */
  override readonly name = 'SnapshotError';
  /** Stable machine-readable code; see {@link SnapshotErrorCode}. */
  readonly code: SnapshotErrorCode;
  /** The section the error is about, when there is one. */
  readonly section: string | undefined;

  /**
   * @param code - stable code
   * @param message - what failed and what the caller can do
   * @param options - the section concerned and a standard `cause`
   */
  constructor(
    code: SnapshotErrorCode,
    message: string,
    options: { readonly section?: string; readonly cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.section = options.section;
  }
}

/**
 * Name guard for {@link SnapshotError}: true for instances of this class and for look-alikes
 * from another copy of the module (same `name`, a known `code`).
 */
export function isSnapshotError(value: unknown): value is SnapshotError {
  if (value instanceof SnapshotError) return true;
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { name?: unknown; code?: unknown };
  return (
    v.name === 'SnapshotError' &&
    typeof v.code === 'string' &&
    (SNAPSHOT_ERROR_CODES as readonly string[]).includes(v.code)
  );
}

/** @internal Describes a value for an error message without dumping large or hostile input. */
export function describe(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return String(value);
  }
  if (typeof value === 'string') {
    return value.length > 40 ? `${JSON.stringify(value.slice(0, 40))}…` : JSON.stringify(value);
  }
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  return typeof value === 'object' ? 'an object' : typeof value;
}

/** @internal Formats a u32 as 0x-prefixed hex. */
export function hex32(value: number): string {
  return `0x${(value >>> 0).toString(16).padStart(8, '0')}`;
}
