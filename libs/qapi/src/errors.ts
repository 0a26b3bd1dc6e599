/**
 * The one error class of `@handoff/qapi`. Every failure carries a stable,
 * upper-snake `code` (mapped to a gRPC status in `@handoff/service`) and a
 * message that says what failed and what to do about it.
 *
 * @packageDocumentation
 */

/**
 * Stable codes of {@link QapiError}. Scripts and the gRPC boundary match on
 * these, never on message text.
 *
 * - `QAPI_INVALID_CAPABILITY` — an unknown capability name or a malformed
 *   capability setting.
 * - `QAPI_INVALID_PARAMETER` — an unknown parameter name, a value that does
 *   not parse, or a value outside the parameter's range.
 * - `QAPI_INCOMPATIBLE` — capabilities and parameters that are each valid
 *   but cannot be used together.
 * - `QAPI_ILLEGAL_TRANSITION` — a migration status change that the status
 *   state machine does not allow.
 * - `QAPI_INVALID_STATUS` — an unknown migration status name.
 * - `QAPI_INVALID_WIRE_VALUE` — a protobuf value with no QAPI meaning
 *   (UNSPECIFIED, an unknown enum number, a uint64 beyond 2^53 − 1).
 */
export type QapiErrorCode =
  | 'QAPI_INVALID_CAPABILITY'
  | 'QAPI_INVALID_PARAMETER'
  | 'QAPI_INCOMPATIBLE'
  | 'QAPI_ILLEGAL_TRANSITION'
  | 'QAPI_INVALID_STATUS'
  | 'QAPI_INVALID_WIRE_VALUE';

/** Every {@link QapiErrorCode}, in a stable order. */
export const QAPI_ERROR_CODES: readonly QapiErrorCode[] = Object.freeze([
  'QAPI_INVALID_CAPABILITY',
  'QAPI_INVALID_PARAMETER',
  'QAPI_INCOMPATIBLE',
  'QAPI_ILLEGAL_TRANSITION',
  'QAPI_INVALID_STATUS',
  'QAPI_INVALID_WIRE_VALUE',
]);

/** Options of the {@link QapiError} constructor. */
export interface QapiErrorOptions {
  /** The underlying error, if any. */
  readonly cause?: unknown;
  /**
   * The individual problems when one error reports several (validation of a
   * whole capability/parameter set). Each carries its own code and message.
   */
  readonly issues?: readonly QapiIssue[];
}

/** One problem found by validation or parsing; see `validateMigrationConfig`. */
export interface QapiIssue {
  /** `error` blocks the migration; `warning` is advice (the setting has no effect or is risky). */
  readonly severity: 'error' | 'warning';
  /** Stable code; for warnings, the code the problem would have as an error. */
  readonly code: QapiErrorCode;
  /** Stable kebab-case identifier of the rule that fired, e.g. `postcopy-needs-return-path`. */
  readonly rule: string;
  /** The capability and parameter names involved. */
  readonly names: readonly string[];
  /** What is wrong and what to do. */
  readonly message: string;
}

/**
 * The error class of `@handoff/qapi`: a stable {@link QapiErrorCode} and a
 * message saying what failed and what to do. Recognise it with
 * {@link isQapiError} (works across package copies), not only `instanceof`.
 */
export class QapiError extends Error {
  override readonly name = 'QapiError';
  /** Stable code; see {@link QapiErrorCode}. */
  readonly code: QapiErrorCode;
  /** The individual problems, when this error reports several (otherwise empty). */
  readonly issues: readonly QapiIssue[];

  /**
   * @param code - stable code of the failure
   * @param message - what failed and what the caller can do
   * @param options - cause and, for aggregated failures, the individual issues
   */
  constructor(code: QapiErrorCode, message: string, options?: QapiErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.issues = Object.freeze([...(options?.issues ?? [])]);
  }
}

/**
 * Name guard for {@link QapiError}: true for any error named `QapiError` with
 * a known code, even one created by another copy of this package.
 *
 * @param err - anything caught
 */
export function isQapiError(err: unknown): err is QapiError {
  if (!(err instanceof Error) || err.name !== 'QapiError') return false;
  const code: unknown = (err as Error & { code?: unknown }).code;
  return typeof code === 'string' && (QAPI_ERROR_CODES as readonly string[]).includes(code);
}
