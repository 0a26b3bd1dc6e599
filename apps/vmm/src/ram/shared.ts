import { memstore as pb } from '@handoff/proto';
import { isCodedError, ServiceError, unaryCall } from '@handoff/service';
import { fileDataRanges, mapFile, type Mapping } from '@handoff/shm';
import { VmmError } from '../model/vmm-error.js';
import type { RamBlockSpec } from '../model/types.js';
import { byId, byName, holderOf, memstoreCall, unreachable } from '../leases/calls.js';
import type { RamBacking, RamContext, SealedRegion } from './backing.js';
import { attachClone, cloneBacking } from './clone.js';

/**
 * The name of the region a `shared` block gets when its spec names none: `<vm>-<block id>`.
 * The VM owns that region (`RamBlockSpec.regionOwned`); a migration target accepts a claim of
 * ownership only on a region of this name.
 */
export function ownedRegionName(vm: string, blockId: string): string {
  return `${vm}-${blockId}`;
}

/**
 * What deletes a region the VM owns once its lease is released (a `close()`'s last step).
 * Never throws: a failure is logged with what to do.
 */
export function ownedRegionDeleter(
  ctx: RamContext,
  region: Pick<pb.Region, 'id' | 'name'>,
  blockId: string,
): () => Promise<void> {
  return async () => {
    try {
      await unaryCall(
        ctx.memstore(),
        'deleteRegion',
        { region: byId(region.id) },
        { deadlineMs: ctx.deadlineMs },
      );
    } catch (err) {
      ctx.logger.warn(
        { block: blockId, region: region.name, error: (err as Error).message },
        'could not delete the region this VM owns; delete it with `vmctl region delete`',
      );
    }
  };
}

/**
 * `shared` RAM: a memstore region mapped MAP_SHARED. The VM holds the region's writer lease
 * (holder `<vmm-id>/<vm-name>`) while it maps it; on migration with bypass-shared-memory only a
 * reference is sent. With no region named, one called `<vm>-<block>` is created (volatile),
 * owned by the VM (its spec here says `regionOwned`) and deleted again when the VM is
 * destroyed; a named region must exist, be unsealed and have exactly the block's size, and is
 * kept.
 */
export async function openShared(spec: RamBlockSpec, ctx: RamContext): Promise<RamBacking> {
  const client = ctx.memstore();
  const holder = holderOf(ctx);
  const opts = { deadlineMs: ctx.deadlineMs };
  const block = `RAM block ${spec.id}`;
  const owned = spec.region === '';
  const name = owned ? ownedRegionName(ctx.vmName, spec.id) : spec.region;
  let region: pb.Region;
  if (owned) {
    const res = await memstoreCall(ctx, `${block}: creating region ${name}`, () =>
      unaryCall(
        client,
        'createRegion',
        { name, size: BigInt(spec.size), kind: pb.RegionKind.REGION_KIND_VOLATILE },
        opts,
      ),
    ).catch(async (err: unknown) => {
      if (isCodedError(err) && err.code === 'REGION_ALREADY_EXISTS') {
        throw await regionTaken(ctx, block, name, err);
      }
      throw err;
    });
    region = res.region!;
  } else {
    const res = await memstoreCall(ctx, `${block}: region ${name}`, () =>
      ctx.leases().getRegion({ region: byName(name) }, opts),
    );
    region = res.region!;
  }
  const deleteOwned = owned ? ownedRegionDeleter(ctx, region, spec.id) : () => Promise.resolve();
  try {
    if (region.state === pb.RegionState.REGION_STATE_SEALED) {
      throw new VmmError(
        'VMM_INVALID_SPEC',
        `${block}: region ${name} is a sealed template; map it with backend clone instead`,
      );
    }
    if (region.size !== BigInt(spec.size)) {
      throw new VmmError(
        'VMM_INVALID_SPEC',
        `${block}: region ${name} holds ${region.size} bytes but the block is ${spec.size}; ` +
          'give the block the region size',
      );
    }
    const lease = (
      await memstoreCall(ctx, `${block}: lease on region ${name}`, () =>
        unaryCall(client, 'acquireLease', { region: byId(region.id), holder }, opts),
      )
    ).lease!;
    try {
      const here: RamBlockSpec = owned
        ? { ...spec, region: name, regionOwned: true }
        : { ...spec, region: name };
      return mapShared(here, region, Number(lease.epoch), ctx, deleteOwned);
    } catch (err) {
      await unaryCall(
        client,
        'releaseLease',
        { region: byId(region.id), holder, epoch: lease.epoch },
        opts,
      ).catch(() => undefined);
      throw err;
    }
  } catch (err) {
    await deleteOwned();
    throw err;
  }
}

/**
 * The error for a VM whose own region `<vm>-<block>` exists already, saying how to get out by
 * what holds it: a live VM elsewhere (pick another name), a VM whose vmm is gone or unknown
 * (force-release, then delete), or nobody — a region kept from a VM whose vmm died, its lease
 * fenced and its memory kept for a restore (delete it, or pick another name).
 */
async function regionTaken(
  ctx: RamContext,
  block: string,
  name: string,
  cause: Error,
): Promise<ServiceError> {
  let region: pb.Region | undefined;
  try {
    region = (
      await ctx.leases().getRegion({ region: byName(name) }, { deadlineMs: ctx.deadlineMs })
    ).region;
  } catch {
    // Described without what holds it.
  }
  const lease = region?.lease;
  const alive = region?.holder?.liveness === pb.HolderLiveness.HOLDER_LIVENESS_ALIVE;
  let why: string;
  if (lease !== undefined && alive) {
    why =
      `VM ${lease.holder} holds it and its vmm process is alive: give this VM another name ` +
      '(a VM with --shared and no region keeps its RAM in the region <vm>-<block>)';
  } else if (lease !== undefined) {
    const state =
      region?.holder?.liveness === pb.HolderLiveness.HOLDER_LIVENESS_GONE
        ? 'is gone'
        : 'is not known to be alive';
    why =
      `it is kept from VM ${lease.holder}, whose vmm process ${state}: take its lease with ` +
      `\`vmctl region release ${name} --force\`, then delete it with \`vmctl region delete ` +
      `${name}\` (its memory is lost), or give this VM another name`;
  } else {
    const f = region?.fenced;
    const fenced =
      f === undefined
        ? ''
        : ` (its lease was taken from ${f.holder} ` +
          (f.reason === pb.FenceReason.FENCE_REASON_OPERATOR
            ? 'by an operator'
            : 'when that vmm process was gone') +
          '; the memory is kept for a restore)';
    why =
      `it is kept from an earlier VM of this name${fenced}: delete it with \`vmctl region ` +
      `delete ${name}\` (its memory is lost), map it with \`--region ${name}\` instead of ` +
      '--shared (the guest boots afresh on it), or give this VM another name';
  }
  return new ServiceError(
    'REGION_ALREADY_EXISTS',
    `${block}: region ${name} already exists; ${why}`,
    { cause },
  );
}

/**
 * Maps a region whose lease `<vmm-id>/<vm>` already holds at `epoch` (a fresh grant, or a
 * lease an incoming migration took over with TransferLease). `close()` revokes the mapping,
 * then releases the lease and, only once memstore accepted the release, runs `afterRelease`
 * (which deletes a region the VM owns); `abandon()` only unmaps.
 */
export function mapShared(
  spec: RamBlockSpec,
  region: pb.Region,
  epoch: number,
  ctx: RamContext,
  afterRelease: () => Promise<void> = () => Promise.resolve(),
): RamBacking {
  const client = ctx.memstore();
  const holder = holderOf(ctx);
  const opts = { deadlineMs: ctx.deadlineMs };
  const mapping: Mapping<SharedArrayBuffer> = mapFile(region.path, {
    sharing: 'shared',
    length: spec.size,
  });
  const regionRef = {
    regionId: region.id,
    regionName: region.name,
    epoch,
    size: spec.size,
    identity: region.identity,
    memstore: ctx.memstoreAddress,
  };
  let closed = false;
  let populate = true;
  return {
    spec,
    buffer: mapping.buffer,
    regionRef,
    zeroed: false,
    setLeaseEpoch: (e) => {
      regionRef.epoch = e;
    },
    // Outgoing migration reads data ranges whole: map them in one call, not a fault per page.
    prefault: (offset, length, access = 'write') => {
      if (closed || !populate || length <= 0) return;
      try {
        mapping.advise(access === 'read' ? 'populate-read' : 'populate-write', offset, length);
      } catch {
        populate = false; // before Linux 5.14: pages fault in one by one
      }
    },
    // Holes of the region file were never written: zero without reading them (reading a tmpfs
    // hole through this MAP_SHARED mapping would allocate the page).
    dataRanges: () => {
      if (closed) return null;
      try {
        return fileDataRanges(region.path, 0, spec.size);
      } catch (err) {
        ctx.logger.debug(
          { block: spec.id, region: region.name, error: (err as Error).message },
          'no hole map of the region file; every page is read',
        );
        return null;
      }
    },
    memoryUsage: () => {
      if (closed) return null;
      const u = mapping.usage();
      return { pss: u.pss, privateDirty: u.privateDirty, rss: u.rss };
    },
    remap: (sharing) => {
      if (closed) throw new Error(`RAM block ${spec.id} is closed`);
      return mapping.remap(sharing, { deferUnmap: true });
    },
    becomeClone: (sealed) => {
      if (closed) throw new Error(`RAM block ${spec.id} is closed`);
      if (mapping.sharing !== 'private') {
        throw new Error(`RAM block ${spec.id} is still mapped shared; remap it private first`);
      }
      closed = true; // the lease went with the seal; the region is the snapshot's now
      return becomeCloneOf(spec, mapping, region.path, sealed, ctx);
    },
    abandon: () => {
      if (closed) return;
      closed = true;
      mapping.close();
    },
    close: async () => {
      if (closed) return;
      closed = true;
      // Revoke first: from here on nothing in this process can write the file.
      mapping.close();
      const release = () =>
        unaryCall(
          client,
          'releaseLease',
          { region: byId(region.id), holder, epoch: BigInt(regionRef.epoch) },
          opts,
        );
      try {
        await release();
      } catch (err) {
        if (unreachable(err)) {
          // memstore is down or restarting: the lease is still ours to give back. Keep trying
          // in the background, or the region stays leased to a VM that no longer maps it (and
          // `region release --force` refuses while this process lives).
          void releaseLater(release, afterRelease, spec.id, region.name, ctx);
          return;
        }
        // Not ours to give back: the region is left as it is, never deleted by a VM that did
        // not hold its lease.
        ctx.logger.warn(
          { block: spec.id, region: region.name, error: (err as Error).message },
          'could not release the lease; memstore keeps it until released by hand',
        );
        return;
      }
      await afterRelease();
    },
  };
}

/**
 * The clone block a shared block becomes once a bypass save sealed its region: the same private
 * mapping, attached to the sealed region as a clone. A failed attach is logged: the mapping
 * stays valid without it (a deleted file lives on while mapped), only the pin is missing.
 */
function becomeCloneOf(
  spec: RamBlockSpec,
  mapping: Mapping<SharedArrayBuffer>,
  path: string,
  sealed: SealedRegion,
  ctx: RamContext,
): { backing: RamBacking; attached: Promise<void> } {
  const here: RamBlockSpec = {
    id: spec.id,
    guestBase: spec.guestBase,
    size: spec.size,
    backend: 'clone',
    region: sealed.regionName,
  };
  const attached = attachClone(
    ctx,
    byId(sealed.regionId),
    `RAM block ${spec.id}: snapshot region`,
  ).then(
    () => undefined,
    (err: unknown) =>
      ctx.logger.warn(
        { block: spec.id, region: sealed.regionName, error: (err as Error).message },
        'could not attach the VM as a clone of the region its save sealed; it runs on, but ' +
          'the snapshot is not pinned by it',
      ),
  );
  const template = { id: sealed.regionId, identity: sealed.identity, path };
  return { backing: cloneBacking(here, mapping, template, ctx), attached };
}

/** Backoff of {@link releaseLater}: from 0.2 s, doubling, at most 5 s between tries. */
const RELEASE_RETRY = { firstMs: 200, maxMs: 5000 } as const;

/**
 * Gives a lease back once memstore answers again, then runs `afterRelease`. Stops when memstore
 * answers anything but success (the lease is then not ours: fenced meanwhile) or after about ten
 * minutes; logs either way. Never throws.
 */
async function releaseLater(
  release: () => Promise<unknown>,
  afterRelease: () => Promise<void>,
  block: string,
  regionName: string,
  ctx: RamContext,
): Promise<void> {
  const deadline = Date.now() + 10 * 60_000;
  for (let delay: number = RELEASE_RETRY.firstMs; Date.now() < deadline;) {
    await new Promise((r) => setTimeout(r, delay).unref());
    delay = Math.min(delay * 2, RELEASE_RETRY.maxMs);
    try {
      await release();
    } catch (err) {
      if (unreachable(err)) continue;
      ctx.logger.warn(
        { block, region: regionName, error: (err as Error).message },
        'the lease was not ours any more when memstore answered again; the region is left as it is',
      );
      return;
    }
    ctx.logger.info({ block, region: regionName }, 'lease given back once memstore answered again');
    await afterRelease();
    return;
  }
  ctx.logger.warn(
    { block, region: regionName },
    'memstore did not answer for ten minutes: the lease is kept until released by hand',
  );
}
