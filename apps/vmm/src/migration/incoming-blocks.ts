/**
 * The target's RAM blocks and machine for one incoming migration: how each block of the table
 * is opened (a shared region mapped, not run; a clone's template mapped privately; private
 * memory for copied blocks), and the optional prebuild that PrepareIncoming starts from the
 * source's spec so the stream's setup only checks the header against what is ready.
 */
import type { memstore as msPb } from '@handoff/proto';
import type { MigrationCapabilities } from '@handoff/qapi';
import type { Logger } from '@handoff/service';
import { byName, memstoreCall } from '../leases/calls.js';
import { openClone } from '../ram/clone.js';
import type { RamBacking, RamContext } from '../ram/index.js';
import { openPrivate } from '../ram/private.js';
import { mapShared, ownedRegionDeleter, ownedRegionName } from '../ram/shared.js';
import type { VmHost } from '../vm/host.js';
import type { RamBlockSpec, VmSpec } from '../model/types.js';
import type { Vm } from '../vm/vm.js';
import { MigrationError } from '../model/migration-error.js';
import { modeFor, PAGE_SIZE, type IncomingBlock } from './pages/frames.js';
import { openLazyBlock } from './lazy-blocks.js';

/** One block of an incoming table: how it travels and, once opened, its memory here. */
export interface Block extends IncomingBlock {
  /** The block as it is opened here (copied blocks become private). */
  readonly spec: RamBlockSpec;
  /** The memstore region of a block sent by reference. */
  readonly region: msPb.Region | null;
  /** The lease epoch the source holds (blocks sent by reference). */
  readonly epoch: number;
  /**
   * Set for a block whose region lives on another host (post-copy): it is opened as a lazy
   * region of this host's memstore filled from that one; `region` is then this host's.
   */
  readonly remote?: RemoteSource;
  backing: RamBacking | null;
}

/** The source host's region a lazy block is filled from. */
export interface RemoteSource {
  /** The source host's memstore (gRPC address). */
  readonly memstore: string;
  readonly regionId: string;
  readonly identity: string;
  readonly size: number;
  /** The source VM's lease epoch there (the fill's claim compares it). */
  readonly epoch: number;
  /** The background fill's limit, bytes/s (0: none): the migration's max-postcopy-bandwidth. */
  readonly maxBytesPerSecond: number;
}

/** What a block needs before it is opened. */
export type BlockPlan = Omit<Block, 'bytes' | 'backing'>;

/**
 * The spec a copied block gets here: private memory of the same size and place. It owns no
 * region (the source deletes a region it owned when it retires the VM).
 */
export function copiedSpec(s: RamBlockSpec): RamBlockSpec {
  const { regionOwned: _region, ...rest } = s;
  return { ...rest, backend: 'private', region: '' };
}

/**
 * The spec a block travelling by reference gets here: the region named as memstore has it,
 * and the source's claim that the VM owns that region checked. Only a `shared` block may
 * claim its region, and only one named as a vmm names the regions it creates for a VM
 * (`<vm>-<block id>`): a stream (or a PrepareIncoming hint) can never make this instance
 * delete a region someone made by hand.
 *
 * @throws MigrationError `MIGRATION_REGION_MISMATCH` for a claim on any other region
 */
export function referencedSpec(s: RamBlockSpec, vm: string, regionName: string): RamBlockSpec {
  if (s.regionOwned === true && regionName !== ownedRegionName(vm, s.id)) {
    throw new MigrationError(
      'MIGRATION_REGION_MISMATCH',
      `block ${s.id} claims that VM ${vm} owns region ${regionName}, but a VM only owns the ` +
        `region created for it (${ownedRegionName(vm, s.id)}); refusing the claim`,
    );
  }
  return { ...s, region: regionName };
}

/**
 * Refuses a claim of region ownership on a block that does not travel by reference (a clone's
 * template is never the VM's).
 *
 * @throws MigrationError `MIGRATION_REGION_MISMATCH`
 */
export function refuseClaim(s: RamBlockSpec, what: string): void {
  if (s.regionOwned === true && s.backend !== 'shared') {
    throw new MigrationError(
      'MIGRATION_REGION_MISMATCH',
      `${what}: a ${s.backend} block cannot own its region; only a shared block's region can be the VM's`,
    );
  }
}

/**
 * Opens a planned block: maps the region of a block sent by reference (it runs only after
 * TransferLease moved the lease here), maps a clone's template privately, or creates private
 * memory.
 *
 * @param templateIdentity the identity a `template` block must have (the stream's TemplateRef)
 * @throws MigrationError `MIGRATION_REGION_MISMATCH` for a template of another identity
 */
export async function openBlock(
  plan: BlockPlan,
  ctx: RamContext,
  what: string,
  templateIdentity?: string,
): Promise<Block> {
  const block: Block = { ...plan, bytes: null, backing: null };
  if (plan.mode === 'copy') block.backing = openPrivate(plan.spec, ctx);
  if (plan.mode === 'ref' && plan.remote !== undefined) {
    const lazy = await openLazyBlock(plan.spec, plan.remote, ctx);
    (block as { region: msPb.Region | null }).region = lazy.region;
    block.backing = lazy.backing;
  } else if (plan.mode === 'ref') {
    // A region the VM owns goes with it: destroyed here, the VM deletes it after its lease.
    const region = plan.region!;
    const afterRelease =
      plan.spec.regionOwned === true ? ownedRegionDeleter(ctx, region, plan.spec.id) : undefined;
    block.backing = mapShared(plan.spec, region, plan.epoch, ctx, afterRelease);
  }
  if (plan.mode === 'template') {
    block.backing = await openClone(plan.spec, ctx);
    const identity = block.backing.regionRef?.identity;
    if (templateIdentity !== undefined && identity !== templateIdentity) {
      await block.backing.close();
      throw new MigrationError(
        'MIGRATION_REGION_MISMATCH',
        `${what}: template ${plan.spec.region} has another identity than the stream's TemplateRef`,
      );
    }
  }
  (block as { bytes: Uint8Array | null }).bytes = new Uint8Array(block.backing!.buffer);
  return block;
}

/**
 * Closes opened blocks; a block sent by reference is only unmapped (its lease is not ours),
 * a lazy one (its lease is ours, on this host's memstore) is closed like a block of its own.
 */
export async function closeBlocks(blocks: readonly Block[]): Promise<void> {
  for (const b of blocks) {
    if (b.mode === 'ref' && b.remote === undefined) b.backing?.abandon();
    else await b.backing?.close();
  }
}

/** A machine built ahead of its stream by PrepareIncoming. */
export interface Prebuilt {
  /** The VM's spec here (after the host's checks). */
  readonly spec: VmSpec;
  readonly blocks: readonly Block[];
  /** The vCPU thread with the machine built, waiting for device state. */
  readonly vm: Vm;
}

/**
 * Builds the machine a stream from the source will need, from the spec and capabilities the
 * migrator passed to PrepareIncoming: regions looked up by name and mapped (not run), private
 * memory created, the vCPU thread spawned and its machine built. Resolves null (after logging)
 * when anything fails: the stream then builds it the usual way.
 */
export async function prebuild(
  host: VmHost,
  name: string,
  source: VmSpec,
  caps: MigrationCapabilities,
  log: Logger,
): Promise<Prebuilt | null> {
  const ctx = host.ramContext(name);
  const blocks: Block[] = [];
  try {
    const plans: BlockPlan[] = [];
    for (const s of source.ram) {
      const mode = modeFor(s, caps);
      let region: msPb.Region | null = null;
      let spec = mode === 'copy' ? copiedSpec(s) : s;
      if (mode === 'ref') {
        region =
          (
            await memstoreCall(ctx, `prebuilding block ${s.id}: region ${s.region}`, () =>
              ctx.leases().getRegion({ region: byName(s.region) }, { deadlineMs: ctx.deadlineMs }),
            )
          ).region ?? null;
        if (region?.lease === undefined) return null; // nothing to hand off: the stream will say
        spec = referencedSpec(s, name, region.name);
      } else {
        refuseClaim(s, `prebuilding block ${s.id}`);
      }
      plans.push({
        spec,
        pages: s.size / PAGE_SIZE,
        mode,
        region,
        epoch: region?.lease !== undefined ? Number(region.lease.epoch) : 0,
      });
    }
    // Checked like CreateVm before any memory is opened (the hint is not trusted either).
    const spec = host.checkIncomingSpec({ ...source, name, ram: plans.map((p) => p.spec) });
    for (const plan of plans) {
      blocks.push(await openBlock(plan, ctx, `prebuilding block ${plan.spec.id}`));
    }
    const vm = host.spawnIncoming(
      spec,
      blocks.map((b) => b.backing!),
      blocks[0]!.mode !== 'ref',
    );
    try {
      await vm.spawned();
    } catch (err) {
      for (const b of blocks) if (b.mode === 'ref') b.backing?.abandon(); // the source's
      await vm.destroy().catch(() => undefined);
      throw err;
    }
    return { spec, blocks, vm };
  } catch (err) {
    log.info(
      { error: (err as Error).message },
      'incoming migration: could not build the machine ahead; the stream will',
    );
    await closeBlocks(blocks);
    return null;
  }
}

/**
 * Undoes a prebuild that no stream used. Blocks sent by reference are unmapped first: their
 * lease and region are the source's (or nobody's, if memstore fenced a dead source), and the
 * VM's destroy must not give back or delete either.
 */
export async function discardPrebuilt(p: Prebuilt): Promise<void> {
  for (const b of p.blocks) if (b.mode === 'ref') b.backing?.abandon();
  await p.vm.destroy().catch(() => undefined);
  await closeBlocks(p.blocks);
}

/**
 * True when a prebuild serves a stream exactly: the same spec here, and block by block the
 * same mode, region (id, identity, lease epoch), template identity and spec. Anything else is
 * rebuilt.
 *
 * @param templates per block, the identity the stream's TemplateRef demands
 */
export function prebuiltFits(
  p: Prebuilt,
  spec: VmSpec,
  plans: readonly BlockPlan[],
  templates: readonly (string | undefined)[],
): boolean {
  if (p.blocks.length !== plans.length || !sameJson(p.spec, spec)) return false;
  return plans.every((plan, k) => {
    const b = p.blocks[k]!;
    return (
      b.mode === plan.mode &&
      b.epoch === plan.epoch &&
      b.region?.id === plan.region?.id &&
      b.region?.identity === plan.region?.identity &&
      (plan.mode !== 'template' || b.backing?.regionRef?.identity === templates[k]) &&
      sameJson(b.spec, plan.spec)
    );
  });
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
