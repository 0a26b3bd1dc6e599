import { memstore as pb } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import { fileDataRanges, type Mapping } from '@handoff/shm';
import { VmmError } from '../model/vmm-error.js';
import type { RamBlockSpec } from '../model/types.js';
import { byId, byName, holderOf, memstoreCall } from '../leases/calls.js';
import type { RamBacking, RamContext } from './backing.js';
import { chainDataRanges, cloneChainOf, mapCloneChain, type ChainLevel } from './clone-chain.js';

/** What a restore demands of a snapshot's region beyond what CreateVm checks. */
export interface CloneExpectation {
  /** The identity the snapshot recorded: a region recreated since is another file. */
  readonly identity: string;
  /** For messages: whose region it is (`snapshot s1`). */
  readonly owner: string;
  /**
   * A layered snapshot: the identity each snapshot of its chain recorded for this block, root
   * first, the snapshot's own last; every level AttachClone answers must be that region.
   */
  readonly chain?: readonly string[];
}

/**
 * `clone` RAM: a sealed memstore template mapped MAP_PRIVATE (copy-on-write): the clone shares
 * every page it has not written. The VM is recorded as a clone of the template (AttachClone),
 * which pins the template (and the chain below a layer's region) against deletion until
 * DetachClone. A layer's region is mapped as the chain AttachClone answers: the root whole, each
 * layer's pages over it (`clone-chain.ts`). With `expect` (a restore from a snapshot), the
 * template must also still be the region the snapshot recorded, and each level of the chain the
 * one its snapshot recorded. A refused chain leaves nothing mapped or attached.
 */
export async function openClone(
  spec: RamBlockSpec,
  ctx: RamContext,
  expect?: CloneExpectation,
): Promise<RamBacking> {
  const block = `RAM block ${spec.id}`;
  const { template, layers } = await attachCloneChain(
    ctx,
    byName(spec.region),
    `${block}: template ${spec.region}`,
  );
  let mapping: Mapping<SharedArrayBuffer>;
  let chain: ChainLevel[];
  try {
    if (template.state !== pb.RegionState.REGION_STATE_SEALED) {
      throw new VmmError(
        'VMM_INVALID_SPEC',
        `${block}: region ${spec.region} is not a sealed template; seal it first or map it shared`,
      );
    }
    if (template.size !== BigInt(spec.size)) {
      throw new VmmError(
        expect === undefined ? 'VMM_INVALID_SPEC' : 'VMM_SNAPSHOT_INVALID',
        `${block}: template ${spec.region} holds ${template.size} bytes but the block is ` +
          `${spec.size}; give the block the template's size`,
      );
    }
    if (expect !== undefined && template.identity !== expect.identity) {
      throw new VmmError(
        'VMM_SNAPSHOT_INVALID',
        `${block}: region ${spec.region} is not the one ${expect.owner} was saved into (identity ` +
          `${template.identity}, recorded ${expect.identity}); the region was replaced, so the ` +
          'snapshot cannot be restored',
      );
    }
    const code = expect === undefined ? 'VMM_INVALID_SPEC' : 'VMM_SNAPSHOT_INVALID';
    chain = cloneChainOf(template, layers, spec.size, block, code, expect?.chain);
    mapping = mapCloneChain(chain, spec.size, block, code);
  } catch (err) {
    await detachClone(ctx, template.id, spec);
    throw err;
  }
  return cloneBacking(spec, mapping, template, ctx, chain);
}

/**
 * AttachClone as this VM: records that it maps the sealed region (pins it).
 *
 * @throws VmmError `VMM_REGION_NOT_FOUND`, `VMM_MEMSTORE_UNAVAILABLE`; memstore's codes
 */
export async function attachClone(
  ctx: RamContext,
  template: pb.RegionSelector,
  what: string,
): Promise<pb.Region> {
  return (await attachCloneChain(ctx, template, what)).template;
}

/**
 * AttachClone as this VM, with the chain memstore answers (empty from a memstore without
 * chains: the region alone).
 *
 * @throws see {@link attachClone}
 */
async function attachCloneChain(
  ctx: RamContext,
  template: pb.RegionSelector,
  what: string,
): Promise<{ readonly template: pb.Region; readonly layers: readonly pb.CloneLayer[] }> {
  const res = await memstoreCall(ctx, what, () =>
    unaryCall(
      ctx.memstore(),
      'attachClone',
      { template, holder: holderOf(ctx) },
      { deadlineMs: ctx.deadlineMs },
    ),
  );
  return { template: res.template!, layers: res.layers ?? [] };
}

/** DetachClone as this VM; a failure is logged (the attachment stays until removed by hand). */
async function detachClone(ctx: RamContext, templateId: string, spec: RamBlockSpec): Promise<void> {
  try {
    await unaryCall(
      ctx.memstore(),
      'detachClone',
      { template: byId(templateId), holder: holderOf(ctx) },
      { deadlineMs: ctx.deadlineMs },
    );
  } catch (err) {
    ctx.logger.warn(
      { block: spec.id, template: spec.region, error: (err as Error).message },
      'could not detach the clone from its template',
    );
  }
}

/**
 * The backing of a clone block over `mapping`, a private mapping of the sealed `template` this
 * VM is attached to (of the chain below it, when it is a layer's region): `close()` revokes the
 * mapping, then detaches the clone.
 */
export function cloneBacking(
  spec: RamBlockSpec,
  mapping: Mapping<SharedArrayBuffer>,
  template: Pick<pb.Region, 'id' | 'identity' | 'path'>,
  ctx: RamContext,
  chain?: readonly ChainLevel[],
): RamBacking {
  // Only the strings: the closures below must not keep AttachClone's Region, whose clone list
  // grows with every clone (kept by each, memory would grow with the square of the count).
  const { id: templateId, path: templatePath } = template;
  let closed = false;
  return {
    spec,
    buffer: mapping.buffer,
    regionRef: {
      regionId: templateId,
      regionName: spec.region,
      epoch: 0,
      size: spec.size,
      identity: template.identity,
      memstore: ctx.memstoreAddress,
    },
    zeroed: false,
    templateDataRanges: () => {
      if (chain !== undefined && chain.length > 1) return chainDataRanges(chain, spec.size);
      try {
        return fileDataRanges(templatePath, 0, spec.size);
      } catch {
        return null;
      }
    },
    memoryUsage: () => {
      if (closed) return null;
      const u = mapping.usage();
      // Copy-on-write copies are anonymous; the template's pages are shmem or page cache.
      return { pss: u.pss, privateDirty: u.anonymous, rss: u.rss };
    },
    abandon: () => {
      if (closed) return;
      closed = true;
      mapping.close();
    },
    close: async () => {
      if (closed) return;
      closed = true;
      mapping.close();
      await detachClone(ctx, templateId, spec);
    },
  };
}
