import { MemstoreError } from '../errors.js';

/**
 * Which lease holders a caller may act for. A vmm's holders are `<vmm-id>/<vm-name>`; a caller
 * known to be vmm X (a lease-channel connection bound by its session, or a gRPC call with X's
 * client certificate) may take leases only for its own holders, so one vmm cannot grant,
 * release or steal leases in another's name. Callers not known to be a vmm (plaintext gRPC,
 * operators) are not restricted here.
 */

/** Who makes a lease call. */
export interface LeaseCaller {
  /** The vmm the caller is known to be, or null when it is not known to be one. */
  readonly vmmId: string | null;
}

/** A caller that is not known to be a vmm. */
export const ANY_CALLER: LeaseCaller = Object.freeze({ vmmId: null });

function own(caller: LeaseCaller, holder: string): boolean {
  return caller.vmmId === null || holder.startsWith(`${caller.vmmId}/`);
}

function foreign(caller: LeaseCaller, holder: string, what: string): MemstoreError {
  return new MemstoreError(
    'LEASE_FOREIGN_HOLDER',
    `${what}: vmm ${caller.vmmId} may only act for its own lease holders ` +
      `("${caller.vmmId}/<vm>"), not ${JSON.stringify(holder.slice(0, 80))}; ` +
      'the vmm that runs that VM must make this call',
  );
}

/**
 * Acquire, release: the holder must be the caller's own.
 *
 * @throws MemstoreError LEASE_FOREIGN_HOLDER
 */
export function assertOwnHolder(caller: LeaseCaller, holder: string, what: string): void {
  if (!own(caller, holder)) throw foreign(caller, holder, what);
}

/**
 * Transfer, arm: the lease must move to one of the caller's own holders (a migration target
 * takes it), or away from one of them (a failed target hands it back to its source).
 *
 * @throws MemstoreError LEASE_FOREIGN_HOLDER
 */
export function assertMayMove(
  caller: LeaseCaller,
  fromHolder: string,
  toHolder: string,
  what: string,
): void {
  if (!own(caller, toHolder) && !own(caller, fromHolder)) throw foreign(caller, toHolder, what);
}
