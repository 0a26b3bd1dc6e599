/** Stable codes of migrator errors (mapped to gRPC status in @handoff/service). */
export type MigratorErrorCode =
  | 'MIGRATOR_VMM_NOT_FOUND'
  | 'MIGRATOR_VMM_UNAVAILABLE'
  | 'MIGRATOR_JOB_NOT_FOUND'
  | 'MIGRATOR_INVALID_ARGUMENT'
  | 'MIGRATOR_VM_NOT_FOUND'
  | 'MIGRATOR_VM_BUSY'
  | 'MIGRATOR_JOB_FINISHED'
  | 'MIGRATOR_JOURNAL_FAILED'
  | 'MIGRATOR_UNIMPLEMENTED'
  | 'MIGRATOR_CROSS_HOST'
  | 'MIGRATOR_OWNERSHIP_CONFLICT';

/** The migrator's error class: a stable code and a message saying what to do. */
export class MigratorError extends Error {
  override readonly name = 'MigratorError';
  constructor(
    readonly code: MigratorErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
