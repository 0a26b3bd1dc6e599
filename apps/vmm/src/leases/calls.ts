/**
 * What a VM's lease moves need from memstore, and how a failed memstore call reads to the user.
 *
 * @packageDocumentation
 */
import * as grpc from '@grpc/grpc-js';
import type { memstore } from '@handoff/proto';
import { RemoteError, ServiceError, type Logger } from '@handoff/service';
import { VmmError } from '../model/vmm-error.js';
import type { LeaseCalls, PageCalls } from './lease-channel.js';

/** One VM's access to memstore's lease calls. */
export interface LeaseContext {
  readonly vmmId: string;
  readonly vmName: string;
  /**
   * TransferLease / GetRegion / ValidateLease / ArmTransfer / ResolveTransfer: over memstore's
   * lease channel when it serves one, else gRPC; same results and errors either way (one client
   * per vmm instance).
   */
  readonly leases: () => LeaseCalls;
  /**
   * Post-copy calls (FetchPages on the lease channel only, StartLazyFill): the same client as
   * {@link LeaseContext.leases}. Absent where nothing serves them (tests).
   */
  readonly pages?: () => PageCalls;
  /** The lease channel's socket path, or null when memstore serves none. */
  readonly leaseChannel: () => Promise<string | null>;
  /**
   * A hello (an encoded LeaseChannelRequest with a fresh session token) for another connection
   * of this process to the lease channel: a switchover's vCPU thread sends it first.
   */
  readonly channelHello: () => Promise<Uint8Array>;
  readonly memstoreAddress: string;
  readonly logger: Logger;
  /** Deadline of each memstore call. */
  readonly deadlineMs: number;
}

/** Lease holder (and clone holder) identity of a VM: `<vmm-id>/<vm-name>`. */
export function holderOf(ctx: Pick<LeaseContext, 'vmmId' | 'vmName'>): string {
  return `${ctx.vmmId}/${ctx.vmName}`;
}

/**
 * Runs a memstore call and turns its failure into what a VM's owner should read:
 * NOT_FOUND → `VMM_REGION_NOT_FOUND`, unreachable → `VMM_MEMSTORE_UNAVAILABLE`, anything else
 * keeps memstore's code (e.g. LEASE_HELD) with `what` named in the message.
 */
export async function memstoreCall<T>(
  ctx: Pick<LeaseContext, 'memstoreAddress'>,
  what: string,
  call: () => Promise<T>,
): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (!(err instanceof RemoteError)) throw err;
    if (err.status === grpc.status.NOT_FOUND) {
      throw new VmmError('VMM_REGION_NOT_FOUND', `${what}: ${err.message}`, { cause: err });
    }
    if (unreachable(err)) {
      throw new VmmError(
        'VMM_MEMSTORE_UNAVAILABLE',
        `${what}: memstore at ${ctx.memstoreAddress} did not answer (${err.message}); start it ` +
          'or point the vmm at it with --memstore / HANDOFF_MEMSTORE_ADDR',
        { cause: err },
      );
    }
    throw new ServiceError(err.code, `${what}: ${err.message}`, { cause: err });
  }
}

/** True when a memstore call failed without an answer (memstore down, slow or unreachable). */
export function unreachable(err: unknown): boolean {
  return (
    !(err instanceof RemoteError) ||
    err.status === grpc.status.UNAVAILABLE ||
    err.status === grpc.status.DEADLINE_EXCEEDED
  );
}

/** A RegionSelector by name. */
export function byName(name: string): memstore.RegionSelector {
  return { selector: { $case: 'name', value: name } };
}

/** A RegionSelector by id. */
export function byId(id: string): memstore.RegionSelector {
  return { selector: { $case: 'id', value: id } };
}
