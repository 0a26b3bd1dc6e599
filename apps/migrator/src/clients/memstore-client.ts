import type { ChannelCredentials } from '@grpc/grpc-js';
import { memstore as pb, timestampToDate } from '@handoff/proto';
import { RemoteError, createClient, unaryCall } from '@handoff/service';

/**
 * What the migrator asks memstore. After a migration ended uncertainly (a dropped connection, a
 * restart), who holds the lease of the VM's shared regions says which vmm may run it, and
 * whether that holder's process lives (holders are `<vmm-id>/<vm>`). For snapshot jobs: what a
 * snapshot is (a restore takes the VM name it was saved with), and whether a save whose end the
 * migrator did not see made its snapshot.
 */

/** Whether a lease holder's process still lives, as memstore judges it ({@link holderLivenessOf}). */
export type HolderLiveness = 'alive' | 'gone' | 'unknown';

/** A region's lease as the migrator needs it. */
export interface RegionLease {
  readonly region: string;
  /** `<vmm-id>/<vm>`, or null when nobody holds the lease. */
  readonly holder: string | null;
  readonly epoch: number;
  /** Of the holder; of the one it was fenced from when nobody holds it. */
  readonly holderLiveness: HolderLiveness;
  /**
   * When nobody holds the lease because memstore fenced it: the holder it took it from, and
   * why (`holder-gone`: that holder's vmm process is gone; `operator`: ForceReleaseLease).
   */
  readonly fenced: { readonly from: string; readonly because: 'holder-gone' | 'operator' } | null;
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

/** How a snapshot holds its RAM (memstore's SnapshotKind). */
export type SnapshotKind = 'bypass' | 'full' | 'imported' | 'unknown';

/** A snapshot as the migrator's jobs need it (GetSnapshot, without its device state). */
export interface SnapshotFacts {
  readonly id: string;
  readonly name: string;
  readonly kind: SnapshotKind;
  readonly template: boolean;
  /** The VM it was saved from and the vmm instance that ran it. */
  readonly vmName: string;
  readonly vmmId: string;
  readonly createdAt: Date | undefined;
  /** Its device state plus the stored bytes of the regions it owns. */
  readonly storedBytes: number;
}

/** What snapshot jobs ask memstore. */
export interface SnapshotCatalog {
  /**
   * Snapshot `name`; null when memstore has none of that name.
   *
   * @throws RemoteError when memstore cannot be reached (or answers another error)
   */
  snapshotOf(name: string): Promise<SnapshotFacts | null>;
  close(): void;
}

const SNAPSHOT_KIND: Partial<Record<pb.SnapshotKind, SnapshotKind>> = {
  [pb.SnapshotKind.SNAPSHOT_KIND_BYPASS]: 'bypass',
  [pb.SnapshotKind.SNAPSHOT_KIND_FULL]: 'full',
  [pb.SnapshotKind.SNAPSHOT_KIND_IMPORTED]: 'imported',
};

/**
 * Whether the process behind the region's lease holder lives, as memstore's GetRegion says
 * (`Region.holder.liveness`); for a lease memstore fenced because its holder's process was gone,
 * `gone`. The job's verdict (jobs/outcome.ts) takes a `gone` holder's word over a vmm that merely
 * does not answer.
 */
export function holderLivenessOf(region: pb.Region): HolderLiveness {
  if (region.lease === undefined) {
    return region.fenced?.reason === pb.FenceReason.FENCE_REASON_HOLDER_GONE ? 'gone' : 'unknown';
  }
  switch (region.holder?.liveness) {
    case pb.HolderLiveness.HOLDER_LIVENESS_ALIVE:
      return 'alive';
    case pb.HolderLiveness.HOLDER_LIVENESS_GONE:
      return 'gone';
    default:
      return 'unknown';
  }
}

/** The fence that left the region unleased, if any. */
function fenceOf(region: pb.Region): RegionLease['fenced'] {
  const f = region.fenced;
  if (region.lease !== undefined || f === undefined || f.holder === '') return null;
  return {
    from: f.holder,
    because: f.reason === pb.FenceReason.FENCE_REASON_HOLDER_GONE ? 'holder-gone' : 'operator',
  };
}

/** memstore over gRPC, every call with a deadline. */
export class MemstoreClient implements RegionLeases, SnapshotCatalog {
  private client: pb.MemstoreServiceClient | undefined;

  /** @param credentials - the migrator's client credentials (its certificate, role migrator) */
  constructor(
    private readonly address: string,
    private readonly callTimeoutMs: number,
    private readonly credentials: ChannelCredentials,
  ) {}

  /**
   * RecoverLazyRegion on region `name`: true when it is a lazy region whose fill goes on now
   * (reconnected, or filling anyway), false when nothing of it waits for a source (an ordinary
   * region, or a fill that completed or never started).
   */
  async recoverLazyRegion(name: string, sourceMemstore: string): Promise<boolean> {
    try {
      const { region } = await unaryCall(
        this.connection(),
        'recoverLazyRegion',
        { region: { selector: { $case: 'name', value: name } }, sourceMemstore },
        { deadlineMs: this.callTimeoutMs },
      );
      const state = region?.lazy?.state;
      return (
        state === pb.LazyFillState.LAZY_FILL_STATE_FILLING ||
        state === pb.LazyFillState.LAZY_FILL_STATE_SOURCE_PAUSED
      );
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'REGION_NOT_LAZY') return false;
      throw err;
    }
  }

  async leaseOf(name: string): Promise<RegionLease | null> {
    try {
      const { region } = await unaryCall(
        this.connection(),
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
        fenced: fenceOf(region),
      };
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'REGION_NOT_FOUND') return null;
      throw err;
    }
  }

  async snapshotOf(name: string): Promise<SnapshotFacts | null> {
    try {
      const { snapshot: s } = await unaryCall(
        this.connection(),
        'getSnapshot',
        { snapshot: { selector: { $case: 'name', value: name } }, withDeviceState: false },
        { deadlineMs: this.callTimeoutMs },
      );
      if (s === undefined) return null;
      return {
        id: s.id,
        name: s.name,
        kind: SNAPSHOT_KIND[s.kind] ?? 'unknown',
        template: s.template,
        vmName: s.vmName,
        vmmId: s.vmmId,
        createdAt: timestampToDate(s.createdAt),
        storedBytes: Number(s.storedBytes),
      };
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'SNAPSHOT_NOT_FOUND') return null;
      throw err;
    }
  }

  private connection(): pb.MemstoreServiceClient {
    return (this.client ??= createClient(pb.MemstoreServiceClient, this.address, this.credentials, {
      waitForReady: true,
    }));
  }

  close(): void {
    this.client?.close();
    this.client = undefined;
  }
}
