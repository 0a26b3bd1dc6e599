import * as grpc from '@grpc/grpc-js';

/**
 * Every error a Handoff module raises carries a stable, upper-snake `code`
 * (e.g. `REGION_NOT_FOUND`). This module holds the one table that maps those
 * codes to gRPC status codes, and the conversions at the wire boundary.
 */

/** Metadata key carrying the stable error code across the wire. */
export const ERROR_CODE_METADATA_KEY = 'handoff-error-code';

/** An error with a stable code, recognised structurally (any module's error class). */
export interface CodedError extends Error {
  readonly code: string;
}

const CODE_PATTERN = /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/;

/** True for errors whose `code` follows the Handoff convention (UPPER_SNAKE with a module prefix). */
export function isCodedError(err: unknown): err is CodedError {
  return (
    err instanceof Error &&
    typeof (err as { code?: unknown }).code === 'string' &&
    CODE_PATTERN.test((err as unknown as { code: string }).code)
  );
}

const S = grpc.status;

/**
 * Stable codes of the service runtime's own errors ({@link ServiceError}, and `FrameError` of
 * the framed side channels).
 */
export const SERVICE_ERROR_CODES = [
  'SERVICE_INVALID_CONFIG',
  'SERVICE_UNIMPLEMENTED',
  'SERVICE_UNAVAILABLE',
  'SERVICE_SHUTTING_DOWN',
  'SERVICE_INTERNAL',
  'SERVICE_INVALID_ARGUMENT',
  'SERVICE_DEADLINE_EXCEEDED',
  'SERVICE_BAD_FRAME',
  'SERVICE_UNAUTHENTICATED',
  'SERVICE_PERMISSION_DENIED',
] as const;

/** A code of {@link SERVICE_ERROR_CODES}. */
export type ServiceErrorCode = (typeof SERVICE_ERROR_CODES)[number];

/**
 * The one table from stable error codes to gRPC status. Codes not listed
 * fall back to INTERNAL (and are logged as such), so add new codes here.
 */
export const STATUS_BY_CODE: Readonly<Record<string, grpc.status>> = {
  // service runtime
  SERVICE_INVALID_CONFIG: S.INVALID_ARGUMENT,
  SERVICE_UNIMPLEMENTED: S.UNIMPLEMENTED,
  SERVICE_UNAVAILABLE: S.UNAVAILABLE,
  SERVICE_SHUTTING_DOWN: S.UNAVAILABLE,
  SERVICE_INTERNAL: S.INTERNAL,
  SERVICE_INVALID_ARGUMENT: S.INVALID_ARGUMENT,
  SERVICE_DEADLINE_EXCEEDED: S.DEADLINE_EXCEEDED,
  SERVICE_BAD_FRAME: S.INVALID_ARGUMENT,
  SERVICE_UNAUTHENTICATED: S.UNAUTHENTICATED,
  SERVICE_PERMISSION_DENIED: S.PERMISSION_DENIED,
  // memstore
  REGION_INVALID_NAME: S.INVALID_ARGUMENT,
  REGION_INVALID_SIZE: S.INVALID_ARGUMENT,
  REGION_INVALID_ARGUMENT: S.INVALID_ARGUMENT,
  REGION_NOT_FOUND: S.NOT_FOUND,
  REGION_ALREADY_EXISTS: S.ALREADY_EXISTS,
  REGION_IN_USE: S.FAILED_PRECONDITION,
  REGION_SEALED: S.FAILED_PRECONDITION,
  REGION_NOT_SEALED: S.FAILED_PRECONDITION,
  REGION_LOST: S.DATA_LOSS,
  REGION_NO_SPACE: S.RESOURCE_EXHAUSTED,
  REGION_LIMIT_EXCEEDED: S.RESOURCE_EXHAUSTED,
  REGION_IO_FAILED: S.INTERNAL,
  LEASE_HELD: S.FAILED_PRECONDITION,
  LEASE_NOT_HELD: S.FAILED_PRECONDITION,
  LEASE_STALE_EPOCH: S.ABORTED,
  LEASE_WRONG_HOLDER: S.PERMISSION_DENIED,
  LEASE_ARM_UNSUPPORTED: S.FAILED_PRECONDITION,
  LEASE_ARMS_FULL: S.RESOURCE_EXHAUSTED,
  LEASE_HOLDER_ALIVE: S.FAILED_PRECONDITION,
  LEASE_FOREIGN_HOLDER: S.PERMISSION_DENIED,
  LEASE_SESSION_CONFLICT: S.FAILED_PRECONDITION,
  CATALOG_CORRUPT: S.DATA_LOSS,
  CATALOG_FAILED: S.INTERNAL,
  REGION_OUT_OF_RANGE: S.OUT_OF_RANGE,
  REGION_UNSAFE_DIRECTORY: S.FAILED_PRECONDITION,
  CATALOG_LOCKED: S.FAILED_PRECONDITION,
  CATALOG_INCOMPATIBLE: S.FAILED_PRECONDITION,
  SNAPSHOT_INVALID: S.INVALID_ARGUMENT,
  SNAPSHOT_NOT_FOUND: S.NOT_FOUND,
  SNAPSHOT_EXISTS: S.ALREADY_EXISTS,
  SNAPSHOT_IN_USE: S.FAILED_PRECONDITION,
  SNAPSHOT_CORRUPT: S.DATA_LOSS,
  SNAPSHOT_FORMAT: S.INVALID_ARGUMENT,
  REGION_IDENTITY_MISMATCH: S.FAILED_PRECONDITION,
  REGION_NOT_LAZY: S.FAILED_PRECONDITION,
  LAZY_SOURCE_UNAVAILABLE: S.UNAVAILABLE,
  LAZY_FILL_FAILED: S.FAILED_PRECONDITION,
  PAGE_SOURCE_NOT_FOUND: S.NOT_FOUND,
  // native mappings
  SHM_INVALID_ARGUMENT: S.INVALID_ARGUMENT,
  SHM_NOT_FOUND: S.NOT_FOUND,
  SHM_OPEN_FAILED: S.INTERNAL,
  SHM_MAP_FAILED: S.RESOURCE_EXHAUSTED,
  SHM_CLOSED: S.FAILED_PRECONDITION,
  SHM_OUT_OF_RANGE: S.OUT_OF_RANGE,
  SHM_ALREADY_EXISTS: S.ALREADY_EXISTS,
  SHM_PERMISSION_DENIED: S.PERMISSION_DENIED,
  SHM_NO_SPACE: S.RESOURCE_EXHAUSTED,
  SHM_SYSCALL_FAILED: S.INTERNAL,
  SHM_NATIVE_UNAVAILABLE: S.FAILED_PRECONDITION,
  SHM_UNSUPPORTED: S.UNIMPLEMENTED,
  SHM_TIMED_OUT: S.DEADLINE_EXCEEDED,
  SHM_PEER_CLOSED: S.UNAVAILABLE,
  // bitmaps and migration vocabulary
  BITMAP_MALFORMED: S.INVALID_ARGUMENT,
  BITMAP_OUT_OF_RANGE: S.OUT_OF_RANGE,
  BITMAP_SIZE_MISMATCH: S.INVALID_ARGUMENT,
  BITMAP_INVALID_ARGUMENT: S.INVALID_ARGUMENT,
  BITMAP_UNSUPPORTED_VERSION: S.FAILED_PRECONDITION,
  BITMAP_TOO_LARGE: S.RESOURCE_EXHAUSTED,
  BITMAP_INVALID_STATE: S.FAILED_PRECONDITION,
  BITMAP_TIMEOUT: S.DEADLINE_EXCEEDED,
  QAPI_INVALID_CAPABILITY: S.INVALID_ARGUMENT,
  QAPI_INVALID_PARAMETER: S.INVALID_ARGUMENT,
  QAPI_INCOMPATIBLE: S.INVALID_ARGUMENT,
  QAPI_ILLEGAL_TRANSITION: S.FAILED_PRECONDITION,
  QAPI_INVALID_WIRE_VALUE: S.INVALID_ARGUMENT,
  QAPI_INVALID_STATUS: S.INVALID_ARGUMENT,
  // vmm
  VMM_INVALID_SPEC: S.INVALID_ARGUMENT,
  VMM_INVALID_GUEST: S.INVALID_ARGUMENT,
  VMM_GUEST_NOT_FOUND: S.NOT_FOUND,
  VMM_REGION_NOT_FOUND: S.NOT_FOUND,
  VMM_MEMSTORE_UNAVAILABLE: S.UNAVAILABLE,
  VMM_LIMIT_EXCEEDED: S.INVALID_ARGUMENT,
  VMM_VCPU_FAILED: S.INTERNAL,
  VMM_VM_NOT_FOUND: S.NOT_FOUND,
  VMM_VM_EXISTS: S.ALREADY_EXISTS,
  VMM_INVALID_STATE: S.FAILED_PRECONDITION,
  VMM_UNIMPLEMENTED: S.UNIMPLEMENTED,
  VMM_LEASE_LOST: S.FAILED_PRECONDITION,
  VMM_INVALID_ARGUMENT: S.INVALID_ARGUMENT,
  VMM_SNAPSHOT_INVALID: S.DATA_LOSS,
  // vmm migration (apps/vmm/src/migration)
  MIGRATION_BAD_TOKEN: S.PERMISSION_DENIED,
  MIGRATION_BAD_STREAM: S.INVALID_ARGUMENT,
  MIGRATION_VERSION_MISMATCH: S.FAILED_PRECONDITION,
  MIGRATION_REGION_MISMATCH: S.FAILED_PRECONDITION,
  MIGRATION_IN_PROGRESS: S.FAILED_PRECONDITION,
  MIGRATION_NOT_FOUND: S.NOT_FOUND,
  MIGRATION_TARGET_FAILED: S.ABORTED,
  MIGRATION_NOT_CONVERGED: S.ABORTED,
  MIGRATION_CANCELLED: S.CANCELLED,
  MIGRATION_UNCERTAIN: S.DATA_LOSS,
  MIGRATION_POSTCOPY_FAILED: S.ABORTED,
  MIGRATION_UNSUPPORTED: S.UNIMPLEMENTED,
  MIGRATION_FAILED: S.INTERNAL,
  // device-state container (apps/vmm/src/snapshot)
  SNAPSHOT_BAD_MAGIC: S.INVALID_ARGUMENT,
  SNAPSHOT_BAD_CRC: S.DATA_LOSS,
  SNAPSHOT_UNSUPPORTED_VERSION: S.FAILED_PRECONDITION,
  SNAPSHOT_TRUNCATED: S.DATA_LOSS,
  SNAPSHOT_MALFORMED: S.INVALID_ARGUMENT,
  SNAPSHOT_UNKNOWN_SECTION: S.FAILED_PRECONDITION,
  SNAPSHOT_INVALID_STATE: S.INVALID_ARGUMENT,
  SNAPSHOT_TOO_LARGE: S.RESOURCE_EXHAUSTED,
  // migrator
  MIGRATOR_VMM_NOT_FOUND: S.NOT_FOUND,
  MIGRATOR_VMM_UNAVAILABLE: S.UNAVAILABLE,
  MIGRATOR_JOB_NOT_FOUND: S.NOT_FOUND,
  MIGRATOR_INVALID_ARGUMENT: S.INVALID_ARGUMENT,
  MIGRATOR_VM_NOT_FOUND: S.NOT_FOUND,
  MIGRATOR_VM_BUSY: S.FAILED_PRECONDITION,
  MIGRATOR_JOB_FINISHED: S.FAILED_PRECONDITION,
  MIGRATOR_JOURNAL_FAILED: S.INTERNAL,
  MIGRATOR_UNIMPLEMENTED: S.UNIMPLEMENTED,
  MIGRATOR_CROSS_HOST: S.FAILED_PRECONDITION,
  MIGRATOR_OWNERSHIP_CONFLICT: S.ABORTED,
};

/** gRPC status for a coded error (INTERNAL when the code is not in the table). */
export function statusForCode(code: string): grpc.status {
  return STATUS_BY_CODE[code] ?? S.INTERNAL;
}

/** The error class of the service runtime itself. */
export class ServiceError extends Error implements CodedError {
  override readonly name = 'ServiceError';
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /**
   * Normalises anything thrown at a boundary into a coded error: coded errors
   * pass through unchanged, anything else becomes SERVICE_INTERNAL with the
   * original message kept.
   */
  static from(err: unknown): CodedError {
    if (isCodedError(err)) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new ServiceError('SERVICE_INTERNAL', `internal error: ${message}`, { cause: err });
  }
}

/** A gRPC error object built from a coded error: status, details, and the code in metadata. */
export function toGrpcError(err: unknown): Partial<grpc.ServiceError> {
  const coded = ServiceError.from(err);
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, coded.code);
  return {
    code: statusForCode(coded.code),
    details: coded.message,
    metadata,
    message: coded.message,
  };
}

/** An error received from a remote Handoff service (client side). */
export class RemoteError extends Error implements CodedError {
  override readonly name = 'RemoteError';
  constructor(
    /** The stable Handoff code if the server sent one, else `GRPC_<STATUS>`. */
    readonly code: string,
    /** The gRPC status code. */
    readonly status: grpc.status,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** Converts a grpc-js client error; non-gRPC errors become GRPC_UNKNOWN. */
  static fromGrpc(err: unknown, what?: string): RemoteError {
    const e = err as Partial<grpc.ServiceError>;
    const status = typeof e.code === 'number' ? (e.code as grpc.status) : S.UNKNOWN;
    const sent = e.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
    const code = typeof sent === 'string' && sent !== '' ? sent : `GRPC_${S[status] ?? 'UNKNOWN'}`;
    const raw = e.details ?? (err instanceof Error ? err.message : String(err));
    // grpc-js appends an empty "Resolution note:" to connection failures.
    const details = raw.replace(/\.?\s*Resolution note:\s*$/, '');
    const prefix = what !== undefined ? `${what}: ` : '';
    return new RemoteError(code, status, `${prefix}${details}`, { cause: err });
  }
}
