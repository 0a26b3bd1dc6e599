import { memstore as pb } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import { mapFile, type Mapping } from '@handoff/shm';
import { VmmError } from '../vm/errors.js';
import type { RamBlockSpec } from '../vm/types.js';
import {
  byId,
  byName,
  holderOf,
  memstoreCall,
  type RamBacking,
  type RamContext,
} from './backing.js';

/**
 * `shared` RAM: a memstore region mapped MAP_SHARED. The VM holds the region's writer lease
 * (holder `<vmm-id>/<vm-name>`) while it maps it; on migration with bypass-shared-memory only a
 * reference is sent. With no region named, one called `<vm>-<block>` is created (volatile)
 * and deleted again when the VM is destroyed; a named region must exist, be unsealed and have
 * exactly the block's size, and is kept.
 */
export async function openShared(spec: RamBlockSpec, ctx: RamContext): Promise<RamBacking> {
  const client = ctx.memstore();
  const holder = holderOf(ctx);
  const opts = { deadlineMs: ctx.deadlineMs };
  const block = `RAM block ${spec.id}`;
  const owned = spec.region === '';
  const name = owned ? `${ctx.vmName}-${spec.id}` : spec.region;
  let region: pb.Region;
  if (owned) {
    const res = await memstoreCall(ctx, `${block}: creating region ${name}`, () =>
      unaryCall(
        client,
        'createRegion',
        { name, size: BigInt(spec.size), kind: pb.RegionKind.REGION_KIND_VOLATILE },
        opts,
      ),
    );
    region = res.region!;
  } else {
    const res = await memstoreCall(ctx, `${block}: region ${name}`, () =>
      unaryCall(client, 'getRegion', { region: byName(name) }, opts),
    );
    region = res.region!;
  }
  const deleteOwned = async (): Promise<void> => {
    if (!owned) return;
    try {
      await unaryCall(client, 'deleteRegion', { region: byId(region.id) }, opts);
    } catch (err) {
      ctx.logger.warn(
        { block: spec.id, region: name, error: (err as Error).message },
        'could not delete the region this VM created; delete it with `vmctl region delete`',
      );
    }
  };
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
    let mapping: Mapping<SharedArrayBuffer>;
    try {
      mapping = mapFile(region.path, { sharing: 'shared', length: spec.size });
    } catch (err) {
      await release(region.id, lease.epoch).catch(() => undefined);
      throw err;
    }
    let closed = false;
    return {
      spec: { ...spec, region: name },
      buffer: mapping.buffer,
      regionRef: {
        regionId: region.id,
        regionName: name,
        epoch: Number(lease.epoch),
        size: spec.size,
        identity: region.identity,
        memstore: ctx.memstoreAddress,
      },
      zeroed: owned,
      close: async () => {
        if (closed) return;
        closed = true;
        // Revoke first: from here on nothing in this process can write the file.
        mapping.close();
        try {
          await release(region.id, lease.epoch);
        } catch (err) {
          ctx.logger.warn(
            { block: spec.id, region: name, error: (err as Error).message },
            'could not release the lease; memstore keeps it until released by hand',
          );
        }
        await deleteOwned();
      },
    };
  } catch (err) {
    await deleteOwned();
    throw err;
  }

  function release(regionId: string, epoch: bigint): Promise<unknown> {
    return unaryCall(client, 'releaseLease', { region: byId(regionId), holder, epoch }, opts);
  }
}
