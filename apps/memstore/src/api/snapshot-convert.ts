import { dateToTimestamp, memstore as pb } from '@handoff/proto';
import { MemstoreError } from '../errors.js';
import type {
  NewSnapshot,
  Snapshot,
  SnapshotBlockSource,
  SnapshotKind,
  SnapshotRef,
} from '../snapshots/snapshot.js';
import type { ChainRegion } from '../snapshots/chain.js';
import { refFromPb } from './convert.js';

/** Conversions between the snapshot wire types and the snapshot domain types. */

function invalid(message: string): MemstoreError {
  return new MemstoreError('SNAPSHOT_INVALID', message);
}

const KIND_TO_PB: Record<SnapshotKind, pb.SnapshotKind> = {
  bypass: pb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
  full: pb.SnapshotKind.SNAPSHOT_KIND_FULL,
  imported: pb.SnapshotKind.SNAPSHOT_KIND_IMPORTED,
};

/** Wire kind -> domain kind; UNSPECIFIED and unknown values are SNAPSHOT_INVALID. */
export function snapshotKindFromPb(kind: pb.SnapshotKind): SnapshotKind {
  switch (kind) {
    case pb.SnapshotKind.SNAPSHOT_KIND_BYPASS:
      return 'bypass';
    case pb.SnapshotKind.SNAPSHOT_KIND_FULL:
      return 'full';
    case pb.SnapshotKind.SNAPSHOT_KIND_IMPORTED:
      return 'imported';
    default:
      throw invalid(
        `snapshot kind ${String(kind)} is not valid; use SNAPSHOT_KIND_BYPASS or SNAPSHOT_KIND_FULL`,
      );
  }
}

/** A SnapshotSelector -> SnapshotRef; SNAPSHOT_INVALID when empty. */
export function snapshotRefFromPb(selector: pb.SnapshotSelector | undefined): SnapshotRef {
  const s = selector?.selector;
  if (s === undefined || s.value === '') {
    throw invalid('snapshot is missing; select the snapshot by id or by name');
  }
  return s.$case === 'id' ? { id: s.value } : { name: s.value };
}

/** A uint64 field -> number; SNAPSHOT_INVALID beyond 2^53 - 1. */
function safe(value: bigint, field: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw invalid(`${field} ${value} is out of range (at most 2^53 - 1)`);
  }
  return Number(value);
}

function blockSourceFromPb(b: pb.SnapshotBlockSource, i: number): SnapshotBlockSource {
  const field = `blocks[${i}]`;
  return {
    id: b.id,
    guestBase: safe(b.guestBase, `${field}.guest_base`),
    size: safe(b.size, `${field}.size`),
    region: refFromPb(b.region, `${field}.region`),
    epoch: safe(b.epoch, `${field}.epoch`),
    owned: b.owned,
    layerPages: b.layerPages,
  };
}

/** CreateSnapshotRequest -> NewSnapshot (shape only; the store checks the content). */
export function newSnapshotFromPb(req: pb.CreateSnapshotRequest): NewSnapshot {
  return {
    name: req.name,
    template: req.template,
    kind: snapshotKindFromPb(req.kind),
    vmName: req.vmName,
    vmSpec: req.vmSpec,
    deviceState: req.deviceState,
    blocks: req.blocks.map(blockSourceFromPb),
    holder: req.holder,
    parent: req.parent,
  };
}

/** Domain snapshot -> wire snapshot. */
export function snapshotToPb(s: Snapshot): pb.Snapshot {
  return {
    id: s.id,
    name: s.name,
    kind: KIND_TO_PB[s.kind],
    template: s.template,
    createdAt: dateToTimestamp(s.createdAt),
    vmName: s.vmName,
    vmmId: s.vmmId,
    vmSpec: s.vmSpec,
    blocks: s.blocks.map((b) => ({
      id: b.id,
      guestBase: BigInt(b.guestBase),
      size: BigInt(b.size),
      regionId: b.regionId,
      regionName: b.regionName,
      identity: b.identity,
      owned: b.owned,
      storedBytes: BigInt(b.storedBytes),
      layerPages: b.layerPages ?? new Uint8Array(0),
      layerPageCount: BigInt(b.layerPageCount),
    })),
    deviceStateBytes: BigInt(s.deviceStateBytes),
    deviceStateCrc32c: s.deviceStateCrc32c,
    clones: [...s.clones],
    parent: s.parent ?? '',
    storedBytes: BigInt(s.storedBytes),
    depth: s.depth,
  };
}

/** One region of a clone's chain -> CloneLayer (the root's `pages` empty). */
export function chainToPb(c: ChainRegion): pb.CloneLayer {
  return {
    regionId: c.regionId,
    path: c.path,
    identity: c.identity,
    pages: c.pages ?? new Uint8Array(0),
  };
}
