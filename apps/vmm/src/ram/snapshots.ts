/**
 * memstore's snapshot calls, in the vmm's own types: CreateSnapshot (a save records what it
 * made), GetSnapshot (a restore reads it, device state included), AttachClone of a snapshot's
 * region by a VM that runs over it. memstore owns snapshots; see apps/memstore for the rules.
 *
 * @packageDocumentation
 */
import { memstore as pb, timestampToDate } from '@handoff/proto';
import { RemoteError, ServiceError, unaryCall } from '@handoff/service';
import { holderOf, unreachable } from '../leases/calls.js';
import type { NewSnapshot, Snapshot, SnapshotKind } from '../model/snapshot.js';
import { VmmError } from '../model/vmm-error.js';
import type { RamContext } from './backing.js';

const KIND_FROM_PB: Partial<Record<pb.SnapshotKind, SnapshotKind>> = {
  [pb.SnapshotKind.SNAPSHOT_KIND_BYPASS]: 'bypass',
  [pb.SnapshotKind.SNAPSHOT_KIND_FULL]: 'full',
  [pb.SnapshotKind.SNAPSHOT_KIND_IMPORTED]: 'imported',
};

const KIND_TO_PB: Record<NewSnapshot['kind'], pb.SnapshotKind> = {
  bypass: pb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
  full: pb.SnapshotKind.SNAPSHOT_KIND_FULL,
};

/**
 * A number of bytes (or a guest address) from memstore, refused when it is past what a number
 * holds exactly: memstore is trusted to be memstore, not to be right.
 */
function safeNumber(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new VmmError('VMM_SNAPSHOT_INVALID', `${what} ${value} is out of range`);
  }
  return Number(value);
}

/** A snapshot from the wire. */
export function snapshotFromPb(s: pb.Snapshot): Snapshot {
  const what = `snapshot ${s.name}`;
  return {
    id: s.id,
    name: s.name,
    kind: KIND_FROM_PB[s.kind] ?? 'imported',
    template: s.template,
    createdAt: timestampToDate(s.createdAt) ?? null,
    vmName: s.vmName,
    vmmId: s.vmmId,
    vmSpec: s.vmSpec,
    blocks: s.blocks.map((b) => ({
      id: b.id,
      guestBase: safeNumber(b.guestBase, `${what}: block ${b.id}'s guest base`),
      size: safeNumber(b.size, `${what}: block ${b.id}'s size`),
      regionId: b.regionId,
      regionName: b.regionName,
      identity: b.identity,
      owned: b.owned,
      storedBytes: safeNumber(b.storedBytes, `${what}: block ${b.id}'s stored bytes`),
      layerPages: b.layerPages,
      layerPageCount: safeNumber(b.layerPageCount, `${what}: block ${b.id}'s layer pages`),
    })),
    deviceStateBytes: safeNumber(s.deviceStateBytes, `${what}: device state length`),
    deviceStateCrc32c: s.deviceStateCrc32c,
    clones: [...s.clones],
    parent: s.parent,
    storedBytes: safeNumber(s.storedBytes, `${what}: stored bytes`),
    depth: s.depth,
  };
}

/**
 * Runs a snapshot call: unreachable → `VMM_MEMSTORE_UNAVAILABLE`; an answer keeps memstore's
 * code (SNAPSHOT_NOT_FOUND, SNAPSHOT_EXISTS, LEASE_STALE, ...) with `what` in the message.
 */
async function snapshotCall<T>(ctx: RamContext, what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (!(err instanceof RemoteError)) throw err;
    if (unreachable(err)) {
      throw new VmmError(
        'VMM_MEMSTORE_UNAVAILABLE',
        `${what}: memstore at ${ctx.memstoreAddress} did not answer (${err.message})`,
        { cause: err },
      );
    }
    throw new ServiceError(err.code, `${what}: ${err.message}`, { cause: err });
  }
}

/**
 * CreateSnapshot as VM `ctx.vmName` of this vmm (the holder of the leases it presents).
 *
 * @throws VmmError `VMM_MEMSTORE_UNAVAILABLE` (then it may or may not exist: see the caller);
 *   memstore's codes otherwise (nothing was made)
 */
export async function createSnapshot(ctx: RamContext, s: NewSnapshot): Promise<Snapshot> {
  const req: pb.CreateSnapshotRequest = {
    name: s.name,
    template: s.template,
    kind: KIND_TO_PB[s.kind],
    vmName: s.vmName,
    vmSpec: s.vmSpec,
    deviceState: s.deviceState,
    blocks: s.blocks.map((b) => ({
      id: b.id,
      guestBase: BigInt(b.guestBase),
      size: BigInt(b.size),
      region: { selector: { $case: 'id', value: b.regionId } },
      epoch: BigInt(b.epoch),
      owned: b.owned,
      layerPages: b.layerPages ?? new Uint8Array(0),
    })),
    holder: holderOf(ctx),
    parent: s.parent ?? '',
  };
  const res = await snapshotCall(ctx, `creating snapshot ${s.name}`, () =>
    unaryCall(ctx.memstore(), 'createSnapshot', req, { deadlineMs: ctx.deadlineMs }),
  );
  if (res.snapshot === undefined) {
    throw new VmmError('VMM_SNAPSHOT_INVALID', `memstore made snapshot ${s.name} but sent none`);
  }
  return snapshotFromPb(res.snapshot);
}

/** A snapshot, by id or name, and its device state when asked. */
export interface FetchedSnapshot {
  readonly snapshot: Snapshot;
  readonly deviceState: Uint8Array;
}

/**
 * GetSnapshot by name, or by id when `ref` looks like one (memstore's ids are UUIDs; a snapshot
 * whose name looks like one is found by name when no id matches).
 *
 * @throws `SNAPSHOT_NOT_FOUND`, `SNAPSHOT_CORRUPT` (memstore's CRC of the device state failed),
 *   VmmError `VMM_MEMSTORE_UNAVAILABLE`
 */
export async function getSnapshot(
  ctx: RamContext,
  ref: string,
  withDeviceState: boolean,
): Promise<FetchedSnapshot> {
  const get = (selector: pb.SnapshotSelector) =>
    snapshotCall(ctx, `snapshot ${ref}`, () =>
      unaryCall(
        ctx.memstore(),
        'getSnapshot',
        { snapshot: selector, withDeviceState },
        { deadlineMs: ctx.deadlineMs },
      ),
    );
  const byName = { selector: { $case: 'name' as const, value: ref } };
  const res = UUID.test(ref)
    ? await get({ selector: { $case: 'id', value: ref } }).catch((err: unknown) => {
        if ((err as { code?: unknown }).code === 'SNAPSHOT_NOT_FOUND') return get(byName);
        throw err;
      })
    : await get(byName);
  if (res.snapshot === undefined) {
    throw new VmmError('VMM_SNAPSHOT_INVALID', `memstore answered no snapshot for ${ref}`);
  }
  return { snapshot: snapshotFromPb(res.snapshot), deviceState: res.deviceState };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The snapshot whose blocks are the regions `regionIds` (in order), or null: what a clone that
 * does not know its snapshot's name (a VM migrated here) runs from. One ListSnapshots call.
 *
 * @throws VmmError `VMM_MEMSTORE_UNAVAILABLE`
 */
export async function findSnapshotOfRegions(
  ctx: RamContext,
  regionIds: readonly string[],
): Promise<Snapshot | null> {
  const res = await snapshotCall(ctx, 'listing snapshots', () =>
    unaryCall(
      ctx.memstore(),
      'listSnapshots',
      { templatesOnly: false },
      { deadlineMs: ctx.deadlineMs },
    ),
  );
  const found = res.snapshots.find(
    (s) =>
      s.blocks.length === regionIds.length && s.blocks.every((b, k) => b.regionId === regionIds[k]),
  );
  return found === undefined ? null : snapshotFromPb(found);
}
