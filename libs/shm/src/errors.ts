/**
 * The one error type of `@handoff/shm`.
 *
 * Every failure this package raises is a {@link ShmError} whose `code` is one of
 * {@link ShmErrorCode}. Codes are stable (callers and the gRPC status table switch on them);
 * messages are for humans: they say what failed, the errno name when the kernel refused, and what
 * to do about it.
 *
 * @packageDocumentation
 */

/**
 * Stable error codes.
 *
 * | code | meaning |
 * |---|---|
 * | `SHM_INVALID_ARGUMENT` | an option, size, name, fd or advice is unusable (wrong type, not page-aligned, contradictory options) |
 * | `SHM_OUT_OF_RANGE` | an offset/length lies outside the mapping, or a mapping would reach past the end of its file |
 * | `SHM_NOT_FOUND` | the file (or the process whose memory is read) does not exist |
 * | `SHM_ALREADY_EXISTS` | `exclusive` create found an existing file |
 * | `SHM_PERMISSION_DENIED` | the kernel refused access (file mode, read-only fd for a shared mapping, seals) |
 * | `SHM_NO_SPACE` | growing or allocating the file failed for lack of space (tmpfs full, size limit) |
 * | `SHM_OPEN_FAILED` | opening the file failed for another reason |
 * | `SHM_MAP_FAILED` | mmap failed (address space, `vm.max_map_count`, ...) |
 * | `SHM_CLOSED` | the mapping was closed; its buffer and operations are gone |
 * | `SHM_UNSUPPORTED` | the kernel, file system or mapping kind does not support the operation |
 * | `SHM_SYSCALL_FAILED` | another system call failed (see `errno` and `syscall`) |
 * | `SHM_NATIVE_UNAVAILABLE` | the native addon is not built or cannot be loaded |
 * | `SHM_TIMED_OUT` | a blocking socket read, write or connect hit its timeout (`EAGAIN`) |
 * | `SHM_PEER_CLOSED` | the other end of a socket closed it (end of stream, `EPIPE`, `ECONNRESET`) |
 */
export type ShmErrorCode =
  | 'SHM_INVALID_ARGUMENT'
  | 'SHM_OUT_OF_RANGE'
  | 'SHM_NOT_FOUND'
  | 'SHM_ALREADY_EXISTS'
  | 'SHM_PERMISSION_DENIED'
  | 'SHM_NO_SPACE'
  | 'SHM_OPEN_FAILED'
  | 'SHM_MAP_FAILED'
  | 'SHM_CLOSED'
  | 'SHM_UNSUPPORTED'
  | 'SHM_SYSCALL_FAILED'
  | 'SHM_NATIVE_UNAVAILABLE'
  | 'SHM_TIMED_OUT'
  | 'SHM_PEER_CLOSED';

/** Every {@link ShmErrorCode}, for exhaustive tables (e.g. the gRPC status mapping). */
export const SHM_ERROR_CODES: readonly ShmErrorCode[] = Object.freeze([
  'SHM_INVALID_ARGUMENT',
  'SHM_OUT_OF_RANGE',
  'SHM_NOT_FOUND',
  'SHM_ALREADY_EXISTS',
  'SHM_PERMISSION_DENIED',
  'SHM_NO_SPACE',
  'SHM_OPEN_FAILED',
  'SHM_MAP_FAILED',
  'SHM_CLOSED',
  'SHM_UNSUPPORTED',
  'SHM_SYSCALL_FAILED',
  'SHM_NATIVE_UNAVAILABLE',
  'SHM_TIMED_OUT',
  'SHM_PEER_CLOSED',
]);

/** Extra fields of a {@link ShmError}. */
export interface ShmErrorOptions {
  /** errno name when a system call failed, e.g. `'ENOENT'`. */
  errno?: string;
  /** The system call that failed, e.g. `'mmap'`. */
  syscall?: string;
  /** The underlying error. */
  cause?: unknown;
}

/**
 * The error thrown by every operation of this package.
 *
 * Recognise it with {@link isShmError} (works across duplicated package copies) or
 * `instanceof ShmError`.
 */
export class ShmError extends Error {
  /** Always `'ShmError'`. */
  override readonly name = 'ShmError';
  /** Stable machine-readable code; see {@link ShmErrorCode}. */
  readonly code: ShmErrorCode;
  /** errno name (`'ENOENT'`, `'ENOMEM'`, ...) when the kernel refused; otherwise undefined. */
  readonly errno: string | undefined;
  /** The failed system call when the kernel refused; otherwise undefined. */
  readonly syscall: string | undefined;

  /**
   * @param code - stable code
   * @param message - what failed and what the caller can do
   * @param options - errno name, system call and cause
   */
  constructor(code: ShmErrorCode, message: string, options: ShmErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.errno = options.errno;
    this.syscall = options.syscall;
  }

  /**
   * Normalise anything thrown into a {@link ShmError}: a `ShmError` (or look-alike) is returned
   * as is, anything else becomes `SHM_SYSCALL_FAILED` with the original as `cause`.
   */
  static from(value: unknown): ShmError {
    if (value instanceof ShmError) return value;
    if (isShmError(value)) {
      return new ShmError(value.code, value.message, {
        errno: value.errno,
        syscall: value.syscall,
        cause: value,
      });
    }
    const message = value instanceof Error ? value.message : String(value);
    return new ShmError('SHM_SYSCALL_FAILED', `unexpected failure in @handoff/shm: ${message}`, {
      cause: value,
    });
  }
}

/**
 * Name guard for {@link ShmError}: true for instances of this class and for look-alikes from
 * another copy of the package (same `name`, a known `code`).
 */
export function isShmError(value: unknown): value is ShmError {
  if (value instanceof ShmError) return true;
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { name?: unknown; code?: unknown };
  return (
    v.name === 'ShmError' &&
    typeof v.code === 'string' &&
    (SHM_ERROR_CODES as readonly string[]).includes(v.code)
  );
}

/** @internal Describe a value for an error message without dumping large objects. */
export function describe(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') {
    return String(value);
  }
  if (typeof value === 'string') return JSON.stringify(value.slice(0, 80));
  if (value === null || value === undefined) return String(value);
  return typeof value;
}
