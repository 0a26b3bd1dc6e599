/**
 * The target side of a migration: one {@link receiveMigration} per incoming stream (a
 * MigrationService.Incoming call or a data-channel connection, see channel.ts). The stream is hostile until proven otherwise: the token is checked first, the header
 * against our format version and the memstore's view of every RegionRef, and every page run
 * against the block table before a byte is written. Any failure fails only this migration:
 * what was opened is closed, a StreamError goes back, the instance keeps serving.
 * States (PROTOCOL.md): await-header → receiving → completing → resumed | failed.
 */
import { randomBytes } from 'node:crypto';
import type { vmmStream } from '@handoff/proto';
import type { MigrationCapabilities } from '@handoff/qapi';
import { capabilitiesFromWire } from '@handoff/qapi/wire';
import { isCodedError, type Logger } from '@handoff/service';
import { specFromPb } from '../api/convert.js';
import type { MachineState } from '../machine/state.js';
import { byId, memstoreCall } from '../ram/backing.js';
import { holderOf } from '../ram/index.js';
import { decodeDeviceState } from '../snapshot/index.js';
import type { VmHost } from '../vm/host.js';
import type { VmSpec } from '../vm/types.js';
import type { Vm } from '../vm/vm.js';
import { failpoint } from '../failpoints.js';
import type { IncomingChannel } from './channel.js';
import { MigrationError } from './errors.js';
import {
  copiedSpec,
  discardPrebuilt,
  openBlock,
  prebuild,
  prebuiltFits,
  type Block,
  type BlockPlan,
  type Prebuilt,
} from './incoming-blocks.js';
import { PageReceiver } from './page-receiver.js';
import { PAGE_SIZE, STREAM_FORMAT } from './stream.js';

/** How long a PrepareIncoming token stays valid. */
export const TOKEN_TTL_MS = 60_000;

interface Prepared {
  readonly name: string;
  readonly jobId: string;
  readonly release: () => void;
  readonly timer: NodeJS.Timeout;
  /** The machine PrepareIncoming built ahead (null: none, or it failed). */
  readonly prebuilt: Promise<Prebuilt | null>;
}

/** What PrepareIncoming may know of the VM that will arrive. */
export interface IncomingHint {
  /** The VM's spec on the source. */
  readonly spec: VmSpec;
  readonly capabilities: MigrationCapabilities;
}

/** One-time tokens from PrepareIncoming; each reserves the VM name until used or expired. */
export class IncomingTokens {
  private readonly tokens = new Map<string, Prepared>();

  constructor(
    private readonly host: VmHost,
    private readonly logger?: Logger,
  ) {}

  /**
   * A token for a VM that will arrive under `name`. With a `hint` the machine is built first
   * (see {@link prebuild}), so the token comes back when the target is ready for the stream;
   * a stream whose header differs from it is served from scratch.
   *
   * @throws VmmError `VMM_VM_EXISTS` when the name is taken or already prepared
   */
  async prepare(
    name: string,
    jobId: string,
    hint?: IncomingHint,
    ttlMs = TOKEN_TTL_MS,
  ): Promise<string> {
    const release = this.host.reserve(name);
    const token = randomBytes(24).toString('base64url');
    const built =
      hint !== undefined && this.logger !== undefined
        ? prebuild(
            this.host,
            name,
            hint.spec,
            hint.capabilities,
            this.logger.child({ vm: name, job: jobId }),
          )
        : Promise.resolve(null);
    const timer = setTimeout(() => {
      this.tokens.delete(token);
      void built.then(async (p) => {
        if (p !== null) await discardPrebuilt(p);
        release();
      });
    }, ttlMs);
    timer.unref();
    this.tokens.set(token, { name, jobId, release, timer, prebuilt: built });
    await built;
    return token;
  }

  /** Consumes a token; the caller owns the name reservation (and any prebuild) from here. */
  take(token: string): Prepared {
    const p = this.tokens.get(token);
    if (p === undefined) {
      throw new MigrationError(
        'MIGRATION_BAD_TOKEN',
        'the stream presented no valid migration token (unknown, used or expired); ' +
          'ask the target for a fresh one with PrepareIncoming',
      );
    }
    this.tokens.delete(token);
    clearTimeout(p.timer);
    return p;
  }

  async close(): Promise<void> {
    const all = [...this.tokens.values()];
    this.tokens.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      const built = await p.prebuilt;
      if (built !== null) await discardPrebuilt(built);
      p.release();
    }
  }
}

/** Serves one Incoming stream to its end. Never rejects: failures go back as StreamError. */
export async function receiveMigration(
  call: IncomingChannel,
  deps: { host: VmHost; tokens: IncomingTokens; logger: Logger },
): Promise<void> {
  const { host } = deps;
  let log = deps.logger;
  let prepared: Prepared | undefined;
  let blocks: Block[] = [];
  let spec: VmSpec | undefined;
  let sourceHolder = '';
  let pages: PageReceiver | undefined;
  let vm: Vm | null = null;
  let device: Uint8Array | null = null;
  let finalSeen = false;
  let prebuiltUsed = false;
  let prebuiltSettled = false; // used, or discarded because the header differs
  let done = false;
  const moved: Block[] = []; // shared blocks whose lease we took
  let leases: Promise<void> | undefined; // the lease hand-off, once started
  const marks = { final: 0, leased: 0, complete: 0 }; // performance.now() of the hand-off steps
  /** Hand-off: takes every shared region's lease from the source (epoch + 1). */
  const takeLeases = async (): Promise<void> => {
    const ctx = host.ramContext(prepared!.name);
    const to = holderOf(ctx);
    for (const b of blocks) {
      if (b.mode !== 'ref') continue;
      const region = b.region!;
      const lease = (
        await memstoreCall(ctx, `taking over the lease of region ${region.name}`, () =>
          ctx.leases().transferLease(
            {
              region: byId(region.id),
              fromHolder: sourceHolder,
              expectedEpoch: BigInt(b.epoch),
              toHolder: to,
            },
            { deadlineMs: ctx.deadlineMs },
          ),
        )
      ).lease!;
      moved.push(b);
      b.backing!.setLeaseEpoch?.(Number(lease.epoch));
    }
    marks.leased = performance.now();
    failpoint('incoming-after-lease');
  };
  const bad = (what: string): never => {
    throw new MigrationError('MIGRATION_BAD_STREAM', what);
  };
  try {
    for (let raw = await call.next(); raw !== null; raw = await call.next()) {
      const frame = raw.frame;
      if (frame === undefined) return bad('a frame with no content arrived');
      if (done) bad(`${frame.$case} arrived after completion`);
      if (prepared === undefined) {
        if (frame.$case !== 'header') {
          throw new MigrationError(
            'MIGRATION_BAD_TOKEN',
            `the stream began with ${frame.$case}; it must begin with a header carrying the token`,
          );
        }
        prepared = deps.tokens.take(frame.value.token);
        log = log.child({ vm: prepared.name, job: prepared.jobId, side: 'target' });
        const t0 = performance.now();
        const ready = await prepared.prebuilt;
        const h = await acceptHeader(frame.value, prepared.name, ready);
        const t1 = performance.now();
        spec = h.spec;
        sourceHolder = h.sourceHolder;
        if (ready !== null && prebuiltFits(ready, h.spec, h.plans, h.templates)) {
          // PrepareIncoming built exactly this: the blocks are mapped, the machine waits.
          blocks = [...ready.blocks];
          vm = ready.vm;
          prebuiltUsed = true;
          prebuiltSettled = true;
        } else {
          prebuiltSettled = true;
          if (ready !== null) await discardPrebuilt(ready);
          const ctx = host.ramContext(prepared.name);
          for (const [k, plan] of h.plans.entries()) {
            blocks.push(await openBlock(plan, ctx, `header block ${k}`, h.templates[k]));
          }
          // The vCPU thread starts now, off the downtime path; it waits for the device state.
          vm = host.spawnIncoming(
            spec,
            blocks.map((b) => b.backing!),
            blocks[0]!.mode !== 'ref',
          );
          await vm.spawned(); // the machine's set-up stays out of the downtime
        }
        pages = new PageReceiver(blocks, blocks[0]!.mode === 'ref' ? null : vm.touchedPages);
        call.write({
          reply: {
            $case: 'headerAck',
            value: { formatMajor: STREAM_FORMAT.major, formatMinor: STREAM_FORMAT.minor },
          },
        });
        log.info(
          {
            modes: blocks.map((b) => b.mode),
            source: sourceHolder,
            checkMs: t1 - t0,
            spawnMs: performance.now() - t1,
            prebuilt: prebuiltUsed,
          },
          'incoming migration: header accepted',
        );
        continue;
      }
      switch (frame.$case) {
        case 'header':
          bad('a second header arrived');
          break;
        case 'pages':
          await pages!.apply(frame.value); // every run checked before any write
          {
            const done = frame.value;
            pages!.afterWrites(() => call.release?.(done)); // its memory may carry another frame
          }
          break;
        case 'iteration':
          if (finalSeen && frame.value.final) bad('a second final pass marker arrived');
          finalSeen ||= frame.value.final;
          // The source's vCPU stopped before it sent the final marker: the lease hand-off
          // runs now, beside the last pages and the device state, not after them.
          if (finalSeen && leases === undefined) {
            marks.final = performance.now();
            leases = takeLeases();
            leases.catch(() => undefined); // awaited at completion (or on failure)
          }
          break;
        case 'device':
          if (device !== null) bad('device state arrived twice');
          device = frame.value.container;
          break;
        case 'complete': {
          if (device === null) bad('completion arrived before the device state');
          done = true;
          marks.complete = performance.now();
          let state: MachineState;
          try {
            state = decodeDeviceState(device!).state;
          } catch (err) {
            throw new MigrationError(
              'MIGRATION_BAD_STREAM',
              `the device state does not load: ${(err as Error).message}`,
              { cause: err },
            );
          }
          await pages!.drain(); // every page landed before the memory runs
          await (leases ??= takeLeases());
          const leased = performance.now();
          const resumedUs = Math.round((await host.adoptIncoming(vm!, state)) * 1000);
          const running = performance.now();
          prepared.release();
          const epoch = moved[0]?.backing?.regionRef?.epoch ?? 0;
          call.write({
            reply: {
              $case: 'resumed',
              value: { resumeTimeUnixUs: BigInt(resumedUs), epoch: BigInt(epoch) },
            },
          });
          log.info(
            {
              leaseMs: marks.final > 0 ? marks.leased - marks.final : undefined,
              completeToLeasedMs: leased - marks.complete,
              loadAndRunMs: running - leased,
            },
            'incoming migration: the VM runs here (parts of the downtime, target clock)',
          );
          call.end();
          return;
        }
      }
    }
    bad(
      prepared === undefined
        ? 'the stream ended before the header'
        : 'the stream ended before completion (truncated)',
    );
  } catch (err) {
    const e = isCodedError(err)
      ? err
      : new MigrationError('MIGRATION_FAILED', (err as Error).message, { cause: err });
    log.warn({ code: e.code, error: e.message }, 'incoming migration failed');
    await leases?.catch(() => undefined); // a transfer in flight may still move a lease here
    await pages?.drain().catch(() => undefined); // no write may outlive the blocks
    // Give back what moved, so the source can re-take its lease and resume.
    for (const b of blocks) if (b.mode === 'ref') b.backing?.abandon(); // never release theirs
    for (const b of moved) {
      const ctx = host.ramContext(prepared!.name);
      try {
        const held = (
          await ctx.leases().getRegion(
            { region: byId(b.region!.id) },
            {
              deadlineMs: ctx.deadlineMs,
            },
          )
        ).region?.lease;
        if (held !== undefined && held.holder === holderOf(ctx)) {
          await ctx.leases().transferLease(
            {
              region: byId(b.region!.id),
              fromHolder: holderOf(ctx),
              expectedEpoch: held.epoch,
              toHolder: sourceHolder,
            },
            { deadlineMs: ctx.deadlineMs },
          );
        }
      } catch (err2) {
        log.warn({ error: (err2 as Error).message }, 'could not hand the lease back to the source');
      }
    }
    if (vm !== null) await vm.destroy().catch(() => undefined);
    for (const b of blocks) await b.backing?.close();
    const unused = prebuiltSettled ? null : await prepared?.prebuilt;
    if (unused != null) await discardPrebuilt(unused);
    prepared?.release();
    try {
      if (!call.gone) {
        call.write({ reply: { $case: 'error', value: { code: e.code, message: e.message } } });
        call.end();
      }
    } catch {
      /* the source is gone */
    }
  }

  /**
   * Validates the header against our version, the token's name and memstore; plans each
   * block (nothing is opened yet).
   */
  async function acceptHeader(
    h: vmmStream.StreamHeader,
    name: string,
    prebuilt: Prebuilt | null,
  ): Promise<{
    plans: BlockPlan[];
    /** Per block: the identity a `template` block's TemplateRef demands. */
    templates: (string | undefined)[];
    spec: VmSpec;
    sourceHolder: string;
  }> {
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
    const src = `${h.sourceVmmId}/${srcSpec.name}`;
    if (h.blocks.length !== srcSpec.ram.length || h.blocks.length === 0) {
      bad(`the header has ${h.blocks.length} blocks but its spec ${srcSpec.ram.length}`);
    }
    const ctx = host.ramContext(name);
    const plans: BlockPlan[] = [];
    const templates: (string | undefined)[] = [];
    for (const [k, b] of h.blocks.entries()) {
      const s = srcSpec.ram[k]!;
      const what = `header block ${k} (${b.id})`;
      if (b.index !== k) bad(`${what}: index ${b.index}, expected ${k}`);
      if (b.id !== s.id || b.size !== BigInt(s.size) || b.guestBase !== BigInt(s.guestBase)) {
        bad(`${what}: id, size or base differ from the spec's block ${s.id}`);
      }
      if (s.size <= 0 || s.size % PAGE_SIZE !== 0)
        bad(`${what}: size ${s.size} is not whole pages`);
      const pages = s.size / PAGE_SIZE;
      templates.push(undefined);
      if (b.regionRef !== undefined) {
        if (s.backend !== 'shared') bad(`${what}: a RegionRef on a ${s.backend} block`);
        const ref = b.regionRef;
        // What PrepareIncoming read from memstore for this block moments ago, when it built
        // the machine; else memstore now. A lease that moved since then fails the hand-off's
        // compare-and-set instead, with the source still holding it.
        const seen = prebuilt?.blocks[k]?.region;
        const region =
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
        if (region === null) mismatch('region', ref.regionId, 'missing');
        if (region!.id !== ref.regionId) mismatch('id', ref.regionId, region!.id);
        if (region!.identity !== ref.identity) mismatch('identity', ref.identity, region!.identity);
        if (region!.size !== ref.size || ref.size !== BigInt(s.size)) {
          mismatch('size', ref.size, region!.size);
        }
        const lease = region!.lease;
        if (lease === undefined || lease.holder !== src) {
          mismatch('lease holder', src, lease?.holder ?? 'nobody');
        }
        if (lease!.epoch !== ref.epoch) mismatch('lease epoch', ref.epoch, lease!.epoch);
        // Mapped when opened, run only after TransferLease moved the lease here (epoch + 1).
        plans.push({
          spec: { ...s, region: region!.name },
          pages,
          mode: 'ref',
          region,
          epoch: Number(ref.epoch),
        });
      } else if (b.templateRef !== undefined) {
        if (s.backend !== 'clone') bad(`${what}: a TemplateRef on a ${s.backend} block`);
        templates[k] = b.templateRef.identity;
        plans.push({ spec: s, pages, mode: 'template', region: null, epoch: 0 });
      } else {
        // Copied blocks land in private memory here.
        plans.push({ spec: copiedSpec(s), pages, mode: 'copy', region: null, epoch: 0 });
      }
    }
    const spec = host.checkIncomingSpec({ ...srcSpec, name, ram: plans.map((p) => p.spec) });
    return { plans, templates, spec, sourceHolder: src };
  }
}
