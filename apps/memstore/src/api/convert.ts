import { dateToTimestamp, memstore as pb } from '@handoff/proto';
import { MemstoreError } from '../errors.js';
import type { FencedLease, Lease } from '../leases/lease.js';
import type { HolderStatus, Liveness } from '../leases/liveness.js';
import type { MemstoreInfo } from '../memstore.js';
import type { Region, RegionKind, RegionRef, RegionState } from '../regions/region.js';
import type { LazyFillStatus } from '../lazy/lazy-fill.js';
import type { RemoteRegionRef } from '../lazy/lazy-regions.js';

/**
 * Conversions between wire types and domain types. Only the api/ folder
 * imports generated code; everything below it speaks the domain types.
 */

/** Wire kind -> domain kind; UNSPECIFIED gives `fallback` (undefined = every kind). */
export function kindFromPb<F extends RegionKind | undefined>(
  kind: pb.RegionKind,
  fallback: F,
): RegionKind | F {
  switch (kind) {
    case pb.RegionKind.REGION_KIND_VOLATILE:
      return 'volatile';
    case pb.RegionKind.REGION_KIND_PERSISTENT:
      return 'persistent';
    case pb.RegionKind.REGION_KIND_UNSPECIFIED:
      return fallback;
    default:
      throw new MemstoreError(
        'REGION_INVALID_ARGUMENT',
        `region kind ${String(kind)} is unknown; use REGION_KIND_VOLATILE or REGION_KIND_PERSISTENT`,
      );
  }
}

function kindToPb(kind: RegionKind): pb.RegionKind {
  return kind === 'volatile'
    ? pb.RegionKind.REGION_KIND_VOLATILE
    : pb.RegionKind.REGION_KIND_PERSISTENT;
}

function stateToPb(state: RegionState): pb.RegionState {
  switch (state) {
    case 'active':
      return pb.RegionState.REGION_STATE_ACTIVE;
    case 'sealed':
      return pb.RegionState.REGION_STATE_SEALED;
    case 'lost':
      return pb.RegionState.REGION_STATE_LOST;
  }
}

/** A RegionSelector -> RegionRef; REGION_INVALID_ARGUMENT when empty. */
export function refFromPb(selector: pb.RegionSelector | undefined, field = 'region'): RegionRef {
  const s = selector?.selector;
  if (s === undefined || s.value === '') {
    throw new MemstoreError(
      'REGION_INVALID_ARGUMENT',
      `${field} is missing; select the region by id or by name`,
    );
  }
  return s.$case === 'id' ? { id: s.value } : { name: s.value };
}

/** A uint64 epoch or page number -> number; REGION_INVALID_ARGUMENT beyond 2^53. */
export function safeNumber(value: bigint, field: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new MemstoreError(
      'REGION_INVALID_ARGUMENT',
      `${field} ${value} is out of range (at most 2^53 - 1)`,
    );
  }
  return Number(value);
}

/** Domain lease -> wire lease (undefined stays unset). */
export function leaseToPb(lease: Lease | undefined): pb.Lease | undefined {
  if (lease === undefined) return undefined;
  return {
    holder: lease.holder,
    epoch: BigInt(lease.epoch),
    grantedAt: dateToTimestamp(lease.grantedAt),
  };
}

const LIVENESS: Record<Liveness, pb.HolderLiveness> = {
  alive: pb.HolderLiveness.HOLDER_LIVENESS_ALIVE,
  gone: pb.HolderLiveness.HOLDER_LIVENESS_GONE,
  unknown: pb.HolderLiveness.HOLDER_LIVENESS_UNKNOWN,
};

/** Domain holder status -> wire (undefined stays unset). */
export function holderStatusToPb(h: HolderStatus | undefined): pb.HolderStatus | undefined {
  if (h === undefined) return undefined;
  return {
    liveness: LIVENESS[h.liveness],
    vmmId: h.vmmId ?? '',
    pid: h.pid,
    since: h.since === undefined ? undefined : dateToTimestamp(h.since),
    connected: h.connected,
  };
}

/** Domain fenced lease -> wire (undefined stays unset). */
export function fencedToPb(f: FencedLease | undefined): pb.FencedLease | undefined {
  if (f === undefined) return undefined;
  return {
    holder: f.holder,
    epoch: BigInt(f.epoch),
    fencedAt: dateToTimestamp(f.at),
    reason:
      f.reason === 'operator'
        ? pb.FenceReason.FENCE_REASON_OPERATOR
        : pb.FenceReason.FENCE_REASON_HOLDER_GONE,
  };
}

/** Domain region -> wire region. */
export function regionToPb(r: Region, lazy?: LazyFillStatus): pb.Region {
  return {
    id: r.id,
    name: r.name,
    kind: kindToPb(r.kind),
    state: stateToPb(r.state),
    size: BigInt(r.size),
    allocatedBytes: BigInt(r.allocatedBytes),
    path: r.path,
    lease: leaseToPb(r.lease),
    lazy: lazyFillToPb(lazy),
    mappedBy: [...r.mappedBy],
    cloneCount: r.cloneCount,
    createdAt: dateToTimestamp(r.createdAt),
    parentId: r.parentId ?? '',
    identity: r.identity,
    holder: holderStatusToPb(r.holder),
    fenced: fencedToPb(r.fenced),
  };
}

/** Domain info -> GetInfoResponse; `leaseChannel` is the served lease socket ('' = none). */
export function infoToPb(info: MemstoreInfo, leaseChannel = ''): pb.GetInfoResponse {
  return {
    version: info.version,
    regionCount: info.regionCount,
    totalSize: BigInt(info.totalSize),
    allocatedBytes: BigInt(info.allocatedBytes),
    volatileDir: info.volatileDir,
    persistentDir: info.persistentDir,
    maxRegionSize: BigInt(info.maxRegionSize),
    leaseChannel,
  };
}

const LAZY_STATE_TO_PB: Record<LazyFillStatus['state'], pb.LazyFillState> = {
  waiting: pb.LazyFillState.LAZY_FILL_STATE_WAITING,
  filling: pb.LazyFillState.LAZY_FILL_STATE_FILLING,
  paused: pb.LazyFillState.LAZY_FILL_STATE_SOURCE_PAUSED,
  complete: pb.LazyFillState.LAZY_FILL_STATE_COMPLETE,
  failed: pb.LazyFillState.LAZY_FILL_STATE_FAILED,
};

/** A lazy region's fill on the wire (Region.lazy); undefined for an ordinary region. */
export function lazyFillToPb(s: LazyFillStatus | undefined): pb.LazyFill | undefined {
  if (s === undefined) return undefined;
  return {
    source: {
      memstore: s.source.memstore,
      regionId: s.source.regionId,
      identity: s.source.identity,
      size: BigInt(s.source.size),
      epoch: BigInt(s.source.epoch),
    },
    state: LAZY_STATE_TO_PB[s.state],
    presentPages: BigInt(s.presentPages),
    totalPages: BigInt(s.totalPages),
    presentPath: s.presentPath,
    demandPages: BigInt(s.demandPages),
    backgroundPages: BigInt(s.backgroundPages),
    faultRequests: BigInt(s.faultRequests),
    faultP50Us: BigInt(s.faultP50Us),
    faultP99Us: BigInt(s.faultP99Us),
    bytesPerSecond: BigInt(s.bytesPerSecond),
    startedAt: s.startedAt === undefined ? undefined : dateToTimestamp(s.startedAt),
    completedAt: s.completedAt === undefined ? undefined : dateToTimestamp(s.completedAt),
    error: s.error,
  };
}

/** CreateLazyRegion's source reference, checked for presence. */
export function remoteRegionFromPb(r: pb.RemoteRegion | undefined): RemoteRegionRef {
  if (r === undefined) {
    throw new MemstoreError(
      'REGION_INVALID_ARGUMENT',
      'source is required: the source memstore, region id, identity, size and lease epoch',
    );
  }
  return {
    memstore: r.memstore,
    regionId: r.regionId,
    identity: r.identity,
    size: safeNumber(r.size, 'source.size'),
    epoch: safeNumber(r.epoch, 'source.epoch'),
  };
}
