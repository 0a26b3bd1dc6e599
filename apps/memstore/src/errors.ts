/**
 * Stable codes of memstore errors. Each is mapped to a gRPC status in the one
 * table of `@handoff/service` (`STATUS_BY_CODE`); a unit test keeps them in step.
 */
export const MEMSTORE_ERROR_CODES = [
  'REGION_INVALID_NAME',
  'REGION_INVALID_SIZE',
  'REGION_INVALID_ARGUMENT',
  'REGION_OUT_OF_RANGE',
  'REGION_NOT_FOUND',
  'REGION_ALREADY_EXISTS',
  'REGION_IN_USE',
  'REGION_SEALED',
  'REGION_NOT_SEALED',
  'REGION_LOST',
  'REGION_NO_SPACE',
  'REGION_LIMIT_EXCEEDED',
  'REGION_IO_FAILED',
  'REGION_UNSAFE_DIRECTORY',
  'LEASE_HELD',
  'LEASE_NOT_HELD',
  'LEASE_STALE_EPOCH',
  'LEASE_WRONG_HOLDER',
  'LEASE_ARM_UNSUPPORTED',
  'LEASE_ARMS_FULL',
  'LEASE_HOLDER_ALIVE',
  'LEASE_FOREIGN_HOLDER',
  'LEASE_SESSION_CONFLICT',
  'CATALOG_CORRUPT',
  'CATALOG_FAILED',
  'CATALOG_LOCKED',
  'CATALOG_INCOMPATIBLE',
  'SNAPSHOT_INVALID',
  'SNAPSHOT_NOT_FOUND',
  'SNAPSHOT_EXISTS',
  'SNAPSHOT_IN_USE',
  'SNAPSHOT_CORRUPT',
  'SNAPSHOT_FORMAT',
  'REGION_IDENTITY_MISMATCH',
  'REGION_NOT_LAZY',
  'LAZY_SOURCE_UNAVAILABLE',
  'LAZY_FILL_FAILED',
  'PAGE_SOURCE_NOT_FOUND',
] as const;

/** One of MEMSTORE_ERROR_CODES. */
export type MemstoreErrorCode = (typeof MEMSTORE_ERROR_CODES)[number];

/** The memstore's one error class: a stable code and a message saying what failed and what to do. */
export class MemstoreError extends Error {
  override readonly name = 'MemstoreError';
  constructor(
    readonly code: MemstoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** Name guard that also works across module copies (no `instanceof` needed). */
  static is(err: unknown, code?: MemstoreErrorCode): err is MemstoreError {
    return (
      err instanceof Error &&
      err.name === 'MemstoreError' &&
      (code === undefined || (err as MemstoreError).code === code)
    );
  }

  /** True when `code` is one of {@link MEMSTORE_ERROR_CODES}. */
  static isCode(code: string): code is MemstoreErrorCode {
    return (MEMSTORE_ERROR_CODES as readonly string[]).includes(code);
  }

  /**
   * Normalises anything thrown inside the memstore at its boundary: memstore
   * and other coded errors pass through; SQLite failures become CATALOG_*;
   * file-system failures (errno codes) become REGION_IO_FAILED or
   * REGION_NO_SPACE. Anything else passes through unchanged (the service
   * runtime turns it into SERVICE_INTERNAL).
   */
  static from(err: unknown, what: string): unknown {
    if (MemstoreError.is(err)) return err;
    if (err instanceof Error && err.name === 'SqliteError') {
      const sqliteCode = (err as Error & { code?: string }).code ?? 'SQLITE_ERROR';
      if (sqliteCode === 'SQLITE_FULL') {
        return new MemstoreError(
          'REGION_NO_SPACE',
          `${what}: the catalog's disk is full (${err.message}); free space in the state directory`,
          { cause: err },
        );
      }
      if (sqliteCode.startsWith('SQLITE_CORRUPT') || sqliteCode === 'SQLITE_NOTADB') {
        return new MemstoreError(
          'CATALOG_CORRUPT',
          `${what}: the catalog is damaged (${sqliteCode}: ${err.message}); restore catalog.db from a backup or move it away to start empty`,
          { cause: err },
        );
      }
      return new MemstoreError(
        'CATALOG_FAILED',
        `${what}: catalog operation failed (${sqliteCode}: ${err.message}); check the state directory's disk and permissions`,
        { cause: err },
      );
    }
    const errno = (err as { code?: unknown; syscall?: unknown } | null)?.code;
    if (err instanceof Error && typeof errno === 'string' && /^E[A-Z0-9]+$/.test(errno)) {
      if (errno === 'ENOSPC' || errno === 'EDQUOT') {
        return new MemstoreError(
          'REGION_NO_SPACE',
          `${what}: no space left (${err.message}); free space or use a smaller region`,
          { cause: err },
        );
      }
      return new MemstoreError(
        'REGION_IO_FAILED',
        `${what}: file operation failed (${err.message}); check the region directories' permissions and disk`,
        { cause: err },
      );
    }
    return err;
  }
}
