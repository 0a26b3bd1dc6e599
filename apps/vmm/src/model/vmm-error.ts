/**
 * Stable codes of the VM host's errors. Each is mapped to a gRPC status in the one table of
 * `@handoff/service` (`STATUS_BY_CODE`); `errors.test.ts` keeps the two in step.
 */
export const VMM_ERROR_CODES = [
  'VMM_INVALID_SPEC', // the VM spec is malformed (name, block table, sizes, args)
  'VMM_INVALID_GUEST', // the guest file exists but is not a loadable RV32 ELF for this RAM
  'VMM_GUEST_NOT_FOUND', // neither a built-in guest nor an existing file
  'VMM_REGION_NOT_FOUND', // a shared block's region or a clone block's template is unknown
  'VMM_MEMSTORE_UNAVAILABLE', // memstore cannot be reached for a shared or clone block
  'VMM_LIMIT_EXCEEDED', // the VM asks for more than this instance allows (--max-vm-memory)
  'VMM_VM_NOT_FOUND',
  'VMM_VM_EXISTS',
  'VMM_INVALID_STATE', // the request does not fit the VM's state (pause a powered-off VM)
  'VMM_VCPU_FAILED', // the vCPU thread did not answer or died
  'VMM_UNIMPLEMENTED',
  'VMM_LEASE_LOST', // the VM's shared-RAM lease moved (migrated away); it must never run here again
  'VMM_INVALID_ARGUMENT', // a request the VM cannot serve as asked (a bypass save of private RAM)
  'VMM_SNAPSHOT_INVALID', // a snapshot fails the vmm's checks (spec, blocks, regions, device state)
] as const;

/** One of {@link VMM_ERROR_CODES}. */
export type VmmErrorCode = (typeof VMM_ERROR_CODES)[number];

/** The VM host's one error class: a stable code and a message saying what failed and what to do. */
export class VmmError extends Error {
  override readonly name = 'VmmError';
  constructor(
    readonly code: VmmErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** Name guard that also works across module copies (no `instanceof` needed). */
  static is(err: unknown, code?: VmmErrorCode): err is VmmError {
    return (
      err instanceof Error &&
      err.name === 'VmmError' &&
      (code === undefined || (err as VmmError).code === code)
    );
  }
}
