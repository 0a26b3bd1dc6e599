/**
 * The target's check of a stream's header, before anything is opened: format version, the
 * token's VM name, the block table against the spec, and every RegionRef against memstore (the
 * very region, its identity, size, holder and epoch). The stream is hostile until this passes.
 *
 * @packageDocumentation
 */
import type { memstore as msPb, vmmStream } from '@handoff/proto';
import { capabilitiesFromWire } from '@handoff/qapi/wire';
import { specFromPb } from '../wire/spec.js';
import { byId, memstoreCall } from '../leases/calls.js';
import { MigrationError } from '../model/migration-error.js';
import type { VmSpec } from '../model/types.js';
import type { VmHost } from '../vm/host.js';
import {
  copiedSpec,
  referencedSpec,
  refuseClaim,
  type BlockPlan,
  type Prebuilt,
} from './incoming-blocks.js';
import { ownedRegionName } from '../ram/shared.js';
import { STREAM_FORMAT } from './format.js';
import { PAGE_SIZE } from './pages/frames.js';

/** What a valid header says: how each block is opened here, and who sends it. */
export interface AcceptedHeader {
  readonly plans: BlockPlan[];
  /** Per block: the identity a `template` block's TemplateRef demands. */
  readonly templates: (string | undefined)[];
  /** The VM's spec here (after this instance's checks). */
  readonly spec: VmSpec;
  /** The lease holder of the shared blocks on the source (`vmm-id/vm-name`). */
  readonly sourceHolder: string;
  /**
   * Regions the VM owned on the source whose blocks are copied here into private memory: the
   * source deletes them when it retires the VM, this instance if the source dies first.
   */
  readonly copiedOwned: readonly string[];
}

/**
 * Validates header `h` of a stream whose token was issued for VM `name` and plans each block
 * (nothing is opened yet). A RegionRef is checked against what PrepareIncoming read moments ago
 * when it built the machine (`prebuilt`), else against memstore now: a lease that moved since
 * fails the lease move later instead, with the source still holding it.
 *
 * @throws MigrationError `MIGRATION_VERSION_MISMATCH`, `MIGRATION_BAD_TOKEN`,
 *   `MIGRATION_BAD_STREAM`, `MIGRATION_REGION_MISMATCH`; VmmError from the spec checks
 */
export async function acceptHeader(
  h: vmmStream.StreamHeader,
  name: string,
  prebuilt: Prebuilt | null,
  host: VmHost,
  sourceMemstore = '',
): Promise<AcceptedHeader> {
  const bad = (what: string): never => {
    throw new MigrationError('MIGRATION_BAD_STREAM', what);
  };
  if (h.formatMajor !== STREAM_FORMAT.major || h.formatMinor > STREAM_FORMAT.minor) {
    throw new MigrationError(
      'MIGRATION_VERSION_MISMATCH',
      `stream format ${h.formatMajor}.${h.formatMinor} is not loadable here (this vmm speaks ` +
        `${STREAM_FORMAT.major}.${STREAM_FORMAT.minor}); migrate to a vmm of a matching version`,
    );
  }
  capabilitiesFromWire(h.capabilities);
  if (h.sourceVmmId === '') bad('the header names no source vmm');
  let srcSpec: VmSpec;
  try {
    srcSpec = specFromPb(h.spec);
  } catch (err) {
    throw new MigrationError('MIGRATION_BAD_STREAM', `header spec: ${(err as Error).message}`);
  }
  if (srcSpec.name !== name) {
    throw new MigrationError(
      'MIGRATION_BAD_TOKEN',
      `the stream carries VM ${srcSpec.name} but its token was issued for VM ${name}; ` +
        'ask the target for a token for this VM with PrepareIncoming',
    );
  }
  // The spec against this board and instance before anything is looked up or opened.
  host.checkIncomingSpec(srcSpec);
  const src = `${h.sourceVmmId}/${srcSpec.name}`;
  if (h.blocks.length !== srcSpec.ram.length || h.blocks.length === 0) {
    bad(`the header has ${h.blocks.length} blocks but its spec ${srcSpec.ram.length}`);
  }
  const ctx = host.ramContext(name);
  const plans: BlockPlan[] = [];
  const templates: (string | undefined)[] = [];
  const copiedOwned: string[] = [];
  for (const [k, b] of h.blocks.entries()) {
    const s = srcSpec.ram[k]!;
    const what = `header block ${k} (${b.id})`;
    if (b.index !== k) bad(`${what}: index ${b.index}, expected ${k}`);
    if (b.id !== s.id || b.size !== BigInt(s.size) || b.guestBase !== BigInt(s.guestBase)) {
      bad(`${what}: id, size or base differ from the spec's block ${s.id}`);
    }
    if (s.size <= 0 || s.size % PAGE_SIZE !== 0) bad(`${what}: size ${s.size} is not whole pages`);
    const pages = s.size / PAGE_SIZE;
    templates.push(undefined);
    if (b.regionRef !== undefined && sourceMemstore !== '') {
      // Another host's region: never mapped here; filled through this host's memstore.
      if (s.backend !== 'shared') bad(`${what}: a RegionRef on a ${s.backend} block`);
      const caps = capabilitiesFromWire(h.capabilities);
      if (!caps['postcopy-ram']) {
        throw new MigrationError(
          'MIGRATION_UNSUPPORTED',
          `${what}: its memory is a region of the memstore at ${sourceMemstore}, on another host, ` +
            "and a vmm maps only its own host's memory: migrate with --postcopy to fill it " +
            "through this host's memstore, or with --no-bypass to copy it",
        );
      }
      const ref = b.regionRef;
      if (ref.size !== BigInt(s.size))
        bad(`${what}: the RegionRef's size differs from the block's`);
      plans.push({
        spec: referencedSpec(s, name, s.region),
        pages,
        mode: 'ref',
        region: null,
        epoch: Number(ref.epoch),
        remote: {
          memstore: sourceMemstore,
          regionId: ref.regionId,
          identity: ref.identity,
          size: Number(ref.size),
          epoch: Number(ref.epoch),
          maxBytesPerSecond: Number(h.maxPostcopyBandwidth ?? 0n),
        },
      });
    } else if (b.regionRef !== undefined) {
      if (s.backend !== 'shared') bad(`${what}: a RegionRef on a ${s.backend} block`);
      const ref = b.regionRef;
      const seen = prebuilt?.blocks[k]?.region;
      const region: msPb.Region | null =
        seen?.id === ref.regionId
          ? seen
          : ((
              await memstoreCall(ctx, `${what}: region ${ref.regionId}`, () =>
                ctx
                  .leases()
                  .getRegion({ region: byId(ref.regionId) }, { deadlineMs: ctx.deadlineMs }),
              )
            ).region ?? null);
      const mismatch = (field: string, want: unknown, got: unknown): never => {
        throw new MigrationError(
          'MIGRATION_REGION_MISMATCH',
          `${what}: the RegionRef does not resolve to the very region: ${field} is ${String(got)} ` +
            `in memstore but ${String(want)} in the stream; refusing to run on other memory`,
        );
      };
      if (region === null) return mismatch('region', ref.regionId, 'missing');
      if (region.id !== ref.regionId) mismatch('id', ref.regionId, region.id);
      if (region.identity !== ref.identity) mismatch('identity', ref.identity, region.identity);
      if (region.size !== ref.size || ref.size !== BigInt(s.size)) {
        mismatch('size', ref.size, region.size);
      }
      const lease = region.lease;
      if (lease === undefined || lease.holder !== src) {
        mismatch('lease holder', src, lease?.holder ?? 'nobody');
      }
      if (lease!.epoch !== ref.epoch) mismatch('lease epoch', ref.epoch, lease!.epoch);
      // Mapped when opened, run only after the lease moved here (epoch + 1).
      plans.push({
        spec: referencedSpec(s, name, region.name),
        pages,
        mode: 'ref',
        region,
        epoch: Number(ref.epoch),
      });
    } else if (b.templateRef !== undefined) {
      if (s.backend !== 'clone') bad(`${what}: a TemplateRef on a ${s.backend} block`);
      refuseClaim(s, what);
      templates[k] = b.templateRef.identity;
      plans.push({ spec: s, pages, mode: 'template', region: null, epoch: 0 });
    } else {
      // Copied blocks land in private memory here.
      plans.push({ spec: copiedSpec(s), pages, mode: 'copy', region: null, epoch: 0 });
      if (
        s.regionOwned === true &&
        s.backend === 'shared' &&
        s.region === ownedRegionName(name, s.id)
      ) {
        copiedOwned.push(s.region);
      }
    }
  }
  const spec = host.checkIncomingSpec({ ...srcSpec, name, ram: plans.map((p) => p.spec) });
  return { plans, templates, spec, sourceHolder: src, copiedOwned };
}
