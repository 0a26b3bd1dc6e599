/** Stable codes of vmctl's own errors. */
export type CliErrorCode =
  'CLI_USAGE' | 'CLI_UNREACHABLE' | 'CLI_UNHEALTHY' | 'CLI_FAILED' | 'CLI_NO_CREDENTIALS';

/** Process exit codes of vmctl. */
export const EXIT = {
  ok: 0,
  /** The request reached the cluster and failed, or a service is unreachable. */
  failed: 1,
  /** The command line is wrong (unknown command, bad flag or value). */
  usage: 2,
  /** `vmctl status` found a service that is not SERVING. */
  unhealthy: 3,
} as const;

/** vmctl's error class: a code, an exit status and a message saying what to do. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    readonly code: CliErrorCode,
    message: string,
    readonly exitCode: number = code === 'CLI_USAGE' ? EXIT.usage : EXIT.failed,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
