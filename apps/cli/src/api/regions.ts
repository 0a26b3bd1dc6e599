import { memstore as pb, timestampToDate } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import type { Clients } from './clients.js';

/** A region as vmctl shows it (converted from the wire at this edge). */
export interface RegionView {
  id: string;
  name: string;
  kind: 'volatile' | 'persistent' | 'unknown';
  state: 'active' | 'sealed' | 'lost' | 'unknown';
  size: bigint;
  allocated: bigint;
  path: string;
  identity: string;
  lease: { holder: string; epoch: bigint; grantedAt: string | undefined } | null;
  /** How the lease holder's vmm process is doing, as memstore judges it; null when unleased. */
  holder: HolderView | null;
  /** The last lease memstore took away (holder gone, or forced), until the region is leased again. */
  fenced: FencedView | null;
  mappedBy: string[];
  clones: number;
  parentId: string;
  createdAt: string | undefined;
}

/** A lease holder's process: alive, gone, or unknown to memstore (no session, or not judged yet). */
export interface HolderView {
  liveness: 'alive' | 'gone' | 'unknown';
  /** The vmm the holder names (`<vmm>/<vm>`); '' when it names none. */
  vmm: string;
  /** Its process id as memstore sees it; 0 when unknown. */
  pid: number;
  /** alive: since its session opened; gone: since found gone; unknown: since it disconnected. */
  since: string | undefined;
  /** Its lease-channel connection is open. */
  connected: boolean;
}

/** A lease memstore fenced: holder cleared, epoch + 1, region and memory kept. */
export interface FencedView {
  holder: string;
  /** The region's epoch after the fence. */
  epoch: bigint;
  at: string | undefined;
  reason: 'holder-gone' | 'operator' | 'unknown';
}

/** Region kinds a user may ask for. */
export const REGION_KINDS = ['volatile', 'persistent'] as const;
export type RegionKindName = (typeof REGION_KINDS)[number];

const KIND: Record<number, RegionView['kind']> = {
  [pb.RegionKind.REGION_KIND_VOLATILE]: 'volatile',
  [pb.RegionKind.REGION_KIND_PERSISTENT]: 'persistent',
};
const KIND_TO_WIRE: Record<RegionKindName, pb.RegionKind> = {
  volatile: pb.RegionKind.REGION_KIND_VOLATILE,
  persistent: pb.RegionKind.REGION_KIND_PERSISTENT,
};
const STATE: Record<number, RegionView['state']> = {
  [pb.RegionState.REGION_STATE_ACTIVE]: 'active',
  [pb.RegionState.REGION_STATE_SEALED]: 'sealed',
  [pb.RegionState.REGION_STATE_LOST]: 'lost',
};

const LIVENESS: Record<number, HolderView['liveness']> = {
  [pb.HolderLiveness.HOLDER_LIVENESS_ALIVE]: 'alive',
  [pb.HolderLiveness.HOLDER_LIVENESS_GONE]: 'gone',
};

const FENCE_REASON: Record<number, FencedView['reason']> = {
  [pb.FenceReason.FENCE_REASON_HOLDER_GONE]: 'holder-gone',
  [pb.FenceReason.FENCE_REASON_OPERATOR]: 'operator',
};

function holderView(h: pb.HolderStatus | undefined): HolderView | null {
  if (h === undefined) return null;
  return {
    liveness: LIVENESS[h.liveness] ?? 'unknown',
    vmm: h.vmmId,
    pid: h.pid,
    since: timestampToDate(h.since)?.toISOString(),
    connected: h.connected,
  };
}

function fencedView(f: pb.FencedLease | undefined): FencedView | null {
  if (f === undefined) return null;
  return {
    holder: f.holder,
    epoch: f.epoch,
    at: timestampToDate(f.fencedAt)?.toISOString(),
    reason: FENCE_REASON[f.reason] ?? 'unknown',
  };
}

function toView(r: pb.Region): RegionView {
  return {
    id: r.id,
    name: r.name,
    kind: KIND[r.kind] ?? 'unknown',
    state: STATE[r.state] ?? 'unknown',
    size: r.size,
    allocated: r.allocatedBytes,
    path: r.path,
    identity: r.identity,
    lease:
      r.lease !== undefined && r.lease.holder !== ''
        ? {
            holder: r.lease.holder,
            epoch: r.lease.epoch,
            grantedAt: timestampToDate(r.lease.grantedAt)?.toISOString(),
          }
        : null,
    holder: r.lease !== undefined && r.lease.holder !== '' ? holderView(r.holder) : null,
    fenced: fencedView(r.fenced),
    mappedBy: r.mappedBy,
    clones: r.cloneCount,
    parentId: r.parentId,
    createdAt: timestampToDate(r.createdAt)?.toISOString(),
  };
}

/** A region selector: a UUID-looking string is an id, anything else a name. */
function selector(ref: string): pb.RegionSelector {
  const isId = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(ref);
  return { selector: isId ? { $case: 'id', value: ref } : { $case: 'name', value: ref } };
}

/** memstore calls vmctl makes, in domain terms. */
export const regions = {
  async list(c: Clients): Promise<RegionView[]> {
    const res = await unaryCall(
      c.memstore,
      'listRegions',
      { kind: pb.RegionKind.REGION_KIND_UNSPECIFIED },
      {
        deadlineMs: c.endpoints.timeoutMs,
      },
    );
    return res.regions.map(toView);
  },
  async get(c: Clients, ref: string): Promise<RegionView> {
    const res = await unaryCall(
      c.memstore,
      'getRegion',
      { region: selector(ref) },
      {
        deadlineMs: c.endpoints.timeoutMs,
      },
    );
    return toView(res.region!);
  },
  async create(c: Clients, name: string, size: bigint, kind: RegionKindName): Promise<RegionView> {
    const res = await unaryCall(
      c.memstore,
      'createRegion',
      { name, size, kind: KIND_TO_WIRE[kind] },
      {
        deadlineMs: c.endpoints.timeoutMs,
      },
    );
    return toView(res.region!);
  },
  /**
   * ForceReleaseLease: fences the region's lease unless its holder's vmm process is alive
   * (LEASE_HOLDER_ALIVE). `fenced` is null when the region was not leased.
   */
  async forceRelease(
    c: Clients,
    ref: string,
  ): Promise<{ region: RegionView; fenced: FencedView | null }> {
    const res = await unaryCall(
      c.memstore,
      'forceReleaseLease',
      { region: selector(ref) },
      { deadlineMs: c.endpoints.timeoutMs },
    );
    return { region: toView(res.region!), fenced: fencedView(res.fenced) };
  },
  async delete(c: Clients, ref: string): Promise<void> {
    await unaryCall(
      c.memstore,
      'deleteRegion',
      { region: selector(ref) },
      { deadlineMs: c.endpoints.timeoutMs },
    );
  },
};
