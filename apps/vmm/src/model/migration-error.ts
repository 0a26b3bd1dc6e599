/**
 * Stable codes of the migration module, named by phase like Cloud Hypervisor's
 * `MigratableError`. Each is mapped to a gRPC status in `@handoff/service` (`STATUS_BY_CODE`).
 */
export const MIGRATION_ERROR_CODES = [
  'MIGRATION_BAD_TOKEN', // Incoming presented no, an unknown, a used or an expired token
  'MIGRATION_BAD_STREAM', // a frame broke the protocol: order, bounds, sizes, truncation
  'MIGRATION_VERSION_MISMATCH', // stream format major differs or minor is newer than ours
  'MIGRATION_REGION_MISMATCH', // a RegionRef does not resolve to the very region (id, epoch, identity, size)
  'MIGRATION_IN_PROGRESS', // the VM already migrates (or the name is already prepared)
  'MIGRATION_NOT_FOUND', // no migration known for this VM
  'MIGRATION_TARGET_FAILED', // the target refused or failed; the source runs unchanged
  'MIGRATION_NOT_CONVERGED', // pre-copy did not fit downtime-limit within max-iterations
  'MIGRATION_CANCELLED',
  'MIGRATION_UNCERTAIN', // the source cannot tell whether the lease moved; it stays paused
  'MIGRATION_POSTCOPY_FAILED', // after the target ran the guest, the fill of its memory failed
  'MIGRATION_UNSUPPORTED', // a capability or block kind this vmm does not migrate yet
  'MIGRATION_FAILED', // anything else; the message says what
] as const;

/** One of {@link MIGRATION_ERROR_CODES}. */
export type MigrationErrorCode = (typeof MIGRATION_ERROR_CODES)[number];

/**
 * The phases of an outgoing migration, in order: `setup` (the target is reached and the route
 * chosen), `pre-copy` (copied RAM while the guest runs), `stop-and-copy` (the vCPU stops; the
 * last pages and the device state move), `await-resumed` (the target runs the guest), and with
 * post-copy `postcopy` (the target fills the memory while the guest runs there).
 */
export const OUTGOING_PHASES = [
  'setup',
  'pre-copy',
  'stop-and-copy',
  'await-resumed',
  'postcopy',
] as const;

/** One of {@link OUTGOING_PHASES}. */
export type OutgoingPhase = (typeof OUTGOING_PHASES)[number];

/** The migration module's one error class. */
export class MigrationError extends Error {
  override readonly name = 'MigrationError';
  /** The outgoing phase it failed in, when it came from one. */
  readonly phase: OutgoingPhase | undefined;
  constructor(
    readonly code: MigrationErrorCode,
    message: string,
    options?: { cause?: unknown; phase?: OutgoingPhase },
  ) {
    super(message, options);
    this.phase = options?.phase;
  }

  /** Name guard that also works across module copies. */
  static is(err: unknown, code?: MigrationErrorCode): err is MigrationError {
    return (
      err instanceof Error &&
      err.name === 'MigrationError' &&
      (code === undefined || (err as MigrationError).code === code)
    );
  }
}
