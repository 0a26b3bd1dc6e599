import { memstore as pb } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import { mapFile, type Mapping } from '@handoff/shm';
import { VmmError } from '../model/vmm-error.js';
import type { RamBlockSpec } from '../model/types.js';
import { byId, byName, holderOf, memstoreCall } from '../leases/calls.js';
import type { RamBacking, RamContext } from './backing.js';

/**
 * `clone` RAM: a sealed memstore template mapped MAP_PRIVATE (copy-on-write): the clone shares
 * every page it has not written. The VM is recorded as a clone of the template (AttachClone),
 * which pins the template against deletion until DetachClone.
 */
export async function openClone(spec: RamBlockSpec, ctx: RamContext): Promise<RamBacking> {
  const client = ctx.memstore();
  const holder = holderOf(ctx);
  const opts = { deadlineMs: ctx.deadlineMs };
  const block = `RAM block ${spec.id}`;
  const template = (
    await memstoreCall(ctx, `${block}: template ${spec.region}`, () =>
      unaryCall(client, 'attachClone', { template: byName(spec.region), holder }, opts),
    )
  ).template!;
  const detach = async (): Promise<void> => {
    try {
      await unaryCall(client, 'detachClone', { template: byId(template.id), holder }, opts);
    } catch (err) {
      ctx.logger.warn(
        { block: spec.id, template: spec.region, error: (err as Error).message },
        'could not detach the clone from its template',
      );
    }
  };
  let mapping: Mapping<SharedArrayBuffer>;
  try {
    if (template.state !== pb.RegionState.REGION_STATE_SEALED) {
      throw new VmmError(
        'VMM_INVALID_SPEC',
        `${block}: region ${spec.region} is not a sealed template; seal it first or map it shared`,
      );
    }
    if (template.size !== BigInt(spec.size)) {
      throw new VmmError(
        'VMM_INVALID_SPEC',
        `${block}: template ${spec.region} holds ${template.size} bytes but the block is ` +
          `${spec.size}; give the block the template's size`,
      );
    }
    mapping = mapFile(template.path, { sharing: 'private', length: spec.size });
  } catch (err) {
    await detach();
    throw err;
  }
  let closed = false;
  return {
    spec,
    buffer: mapping.buffer,
    regionRef: {
      regionId: template.id,
      regionName: spec.region,
      epoch: 0,
      size: spec.size,
      identity: template.identity,
      memstore: ctx.memstoreAddress,
    },
    zeroed: false,
    abandon: () => {
      if (closed) return;
      closed = true;
      mapping.close();
    },
    close: async () => {
      if (closed) return;
      closed = true;
      mapping.close();
      await detach();
    },
  };
}
