import { INSECURE_CALLER, peerIdentity, type Caller, type HasAuthContext } from '@handoff/service';
import type { LeaseCaller } from '../leases/ownership.js';

/**
 * Who makes a gRPC call, for the memstore's checks: over plaintext (`--insecure`) nobody is
 * authenticated ({@link INSECURE_CALLER}); over TLS the caller is the identity its verified
 * certificate names, or null when it has none (refused by `requireRole`).
 */
export function callerOf(call: HasAuthContext): Caller | null {
  if (call.getAuthContext()?.transportSecurityType !== 'ssl') return INSECURE_CALLER;
  const identity = peerIdentity(call);
  return identity === null ? null : { secure: true, identity };
}

/** The vmm a gRPC caller is known to be (its certificate's id, role vmm), for lease ownership. */
export function leaseCallerOf(caller: Caller | null): LeaseCaller {
  return caller?.secure === true && caller.identity.role === 'vmm'
    ? { vmmId: caller.identity.id }
    : { vmmId: null };
}
