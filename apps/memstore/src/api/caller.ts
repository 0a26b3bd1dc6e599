import type { Caller } from '@handoff/service';
import type { LeaseCaller } from '../leases/ownership.js';

/**
 * The vmm a gRPC caller is known to be (its certificate's id, role vmm), for lease ownership.
 * The caller is the one the access check verified (`callerOf` of @handoff/service): over
 * plaintext (`--insecure`) nobody is authenticated and nothing is restricted here.
 */
export function leaseCallerOf(caller: Caller | null): LeaseCaller {
  return caller?.secure === true && caller.identity.role === 'vmm'
    ? { vmmId: caller.identity.id }
    : { vmmId: null };
}
