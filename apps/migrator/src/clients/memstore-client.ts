import type { ChannelCredentials } from '@grpc/grpc-js';
import { memstore as pb } from '@handoff/proto';
import { RemoteError, createClient, unaryCall } from '@handoff/service';

/**
 * The migrator's one use of memstore: after a migration ended uncertainly (a dropped
 * connection, a restart), who holds the lease of the VM's shared regions says which vmm may run
 * it. Holders are `<vmm-id>/<vm>`.
 */

/**
 * Whether a lease holder's process still lives, as memstore knows it. Memstore's GetRegion
 * does not say yet (every holder is `unknown` here); {@link holderLivenessOf} is the one place
 * that will read it.
 */
export type HolderLiveness = 'alive' | 'gone' | 'unknown';

/** A region's lease as the migrator needs it. */
export interface RegionLease {
  readonly region: string;
  /** `<vmm-id>/<vm>`, or null when nobody holds the lease. */
  readonly holder: string | null;
  readonly epoch: number;
  readonly holderLiveness: HolderLiveness;
}

/** What a job's resolution asks memstore. */
export interface RegionLeases {
  /**
   * The lease of region `name`; null when memstore has no such region.
   *
   * @throws RemoteError when memstore cannot be reached
   */
  leaseOf(name: string): Promise<RegionLease | null>;
  close(): void;
}

/**
 * The hook for the holder's liveness: memstore's GetRegion reports no liveness of the lease
 * holder yet, so it is `unknown`. When it does, map its field here and nothing else changes:
 * the job's verdict (jobs/outcome.ts) already prefers a `gone` holder's word over a mere
 * unreachable vmm.
 */
export function holderLivenessOf(_region: pb.Region): HolderLiveness {
  return 'unknown';
}

/** memstore over gRPC, every call with a deadline. */
export class MemstoreClient implements RegionLeases {
  private client: pb.MemstoreServiceClient | undefined;

  /** @param credentials - the migrator's client credentials (its certificate, role migrator) */
  constructor(
    private readonly address: string,
    private readonly callTimeoutMs: number,
    private readonly credentials: ChannelCredentials,
  ) {}

  async leaseOf(name: string): Promise<RegionLease | null> {
    this.client ??= createClient(pb.MemstoreServiceClient, this.address, this.credentials);
    try {
      const { region } = await unaryCall(
        this.client,
        'getRegion',
        { region: { selector: { $case: 'name', value: name } } },
        { deadlineMs: this.callTimeoutMs },
      );
      if (region === undefined) return null;
      return {
        region: region.name,
        holder: region.lease?.holder ?? null,
        epoch: Number(region.lease?.epoch ?? 0n),
        holderLiveness: holderLivenessOf(region),
      };
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'REGION_NOT_FOUND') return null;
      throw err;
    }
  }

  close(): void {
    this.client?.close();
    this.client = undefined;
  }
}
