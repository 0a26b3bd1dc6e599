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
import { memstore as pb } from '@handoff/proto';
import { isCodedError, type Logger } from '@handoff/service';
import { specFromPb } from '../api/convert.js';
import type { MachineState } from '../machine/state.js';
import { byId, memstoreCall, type RamContext } from '../ram/backing.js';
import { holderOf } from '../ram/index.js';
import { decodeDeviceState } from '../snapshot/index.js';
import type { VmHost } from '../vm/host.js';
import type { VmSpec } from '../model/types.js';
import type { HandoffOutcome } from '../vcpu/protocol.js';
import type { Vm } from '../vm/vm.js';
import { failpoint } from '../failpoints.js';
import type { IncomingChannel } from './transport/channel.js';
import { MigrationError } from '../model/migration-error.js';
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
import { HandoffSlot } from '../switchover/slot.js';
import type { ArmedTransfer, HandoffLeasePlan } from '../leases/thread-step.js';
import { PageReceiver } from './pages/page-receiver.js';
import { PAGE_SIZE, STREAM_FORMAT } from './pages/frames.js';

/** How long a PrepareIncoming token stays valid. */
export const TOKEN_TTL_MS = 60_000;
/**
 * How long after a direct hand-off ran the guest here its bookkeeping waits (settling the armed
 * transfers with memstore, the log lines, freeing the name, the spare thread that replaces the
 * one taken): the source finishes in these milliseconds, and on a small machine this process and
 * memstore would take the CPUs its threads need to learn that the guest runs here.
 */
const AFTER_RUN_MS = 20;

interface Prepared {
  readonly name: string;
  readonly jobId: string;
  readonly release: () => void;
  readonly timer: NodeJS.Timeout;
  /** The machine PrepareIncoming built ahead (null: none, or it failed). */
  readonly prebuilt: Promise<Prebuilt | null>;
  /** The direct hand-off offered with it (all blocks by reference; undefined: none). */
  readonly direct: Promise<Direct | undefined>;
}

/** What PrepareIncoming answers. */
export interface PreparedIncoming {
  readonly token: string;
  /**
   * The hand-off slot prepared with the machine, or '' (PROTOCOL.md, "Direct hand-off"). A
   * source on this host that gets it hands the VM over through it, with no stream.
   */
  readonly handoffSlot: string;
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

  /**
   * @param handoffDir - where a target creates the hand-off slot of a direct hand-off (a folder
   *   the source vmm sees too); null: the device state always travels on the stream
   */
  constructor(
    private readonly host: VmHost,
    private readonly logger?: Logger,
    readonly handoffDir: string | null = null,
  ) {}

  /**
   * A token for a VM that will arrive under `name`. With a `hint` the machine is built first
   * (see {@link prebuild}), so the token comes back when the target is ready for the stream;
   * a stream whose header differs from it is served from scratch. When every block travels by
   * reference, a hand-off slot comes with it: a source that uses it needs no stream (see
   * {@link IncomingTokens.settleWithoutStream}).
   *
   * @throws VmmError `VMM_VM_EXISTS` when the name is taken or already prepared
   */
  async prepare(
    name: string,
    jobId: string,
    hint?: IncomingHint,
    ttlMs = TOKEN_TTL_MS,
  ): Promise<PreparedIncoming> {
    const reserved = await this.host.reserve(name);
    // No spare thread starts (and warms up) while this migration may be timed.
    const unhold = this.host.holdSpares();
    const release = (): void => {
      reserved();
      unhold();
    };
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
    // With the machine, the slot and the armed lease transfers: the header then only checks.
    // An offer that cannot be made is no failure: the state then travels on the stream.
    const direct = built
      .then((p) =>
        p !== null && p.blocks.every((b) => b.mode === 'ref')
          ? offerDirect(
              this.handoffDir,
              p.vm,
              p.blocks,
              sourceHolderOf(p.blocks),
              this.host,
              name,
              this.logger!.child({ vm: name, job: jobId }),
            )
          : undefined,
      )
      .catch((err: unknown) => {
        this.logger?.warn(
          { vm: name, job: jobId, error: (err as Error).message },
          'incoming migration: no direct hand-off offered',
        );
        return undefined;
      });
    const timer = setTimeout(() => {
      this.tokens.delete(token);
      void discardPrepared({ prebuilt: built, direct }, this.host).then(release);
    }, ttlMs);
    timer.unref();
    const prepared: Prepared = { name, jobId, release, timer, prebuilt: built, direct };
    this.tokens.set(token, prepared);
    const offered = await direct;
    offered?.outcome.then(
      (o) => this.settleWithoutStream(token, offered, o),
      () => undefined,
    );
    return { token, handoffSlot: offered?.slot.path ?? '' };
  }

  /**
   * Ends a direct hand-off that ran through the slot alone (its source got the slot from
   * PrepareIncoming and opened no stream), once the target's vCPU thread ended it: the VM is
   * adopted here, or what moved goes back to the source. A token some stream took is that
   * stream's to settle; a slot given up before any stop leaves the token to a stream.
   */
  private async settleWithoutStream(token: string, d: Direct, o: HandoffOutcome): Promise<void> {
    const p = this.tokens.get(token);
    if (p === undefined || (!o.ok && o.stage === 'aborted' && !d.slot.announced)) return;
    this.tokens.delete(token);
    clearTimeout(p.timer);
    const built = (await p.prebuilt)!; // a slot is only offered with a prebuilt machine
    const ctx = this.host.ramContext(p.name);
    const log = (this.logger ?? ctx.logger).child({ vm: p.name, job: p.jobId, side: 'target' });
    const moved = recordMoved(built.blocks, o, []).map((b) => b.region!.id);
    if (o.ok) {
      this.host.adoptHandedOff(built.vm);
      setTimeout(() => {
        settleArms(ctx, d.armed, log);
        d.slot.close();
        p.release();
        log.info(
          { handoff: d.armed.length > 0 ? 'armed' : 'channel', prebuilt: true, ...partsOf(o) },
          'incoming migration by hand-off slot, no stream: the VM runs here (source stop to ' +
            'run, wall clocks)',
        );
      }, AFTER_RUN_MS);
      return;
    }
    settleArms(ctx, d.armed, log);
    d.slot.fail(); // the source may still wait (a thread that died wrote nothing)
    d.slot.close();
    log.warn(
      { stage: o.stage, code: o.code, error: o.message },
      'incoming migration by hand-off slot failed; what moved goes back to the source',
    );
    await handBack(ctx, moved, d.from, log);
    for (const b of built.blocks) b.backing?.abandon(); // never release the source's region
    await discardPrebuilt(built);
    p.release();
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
      await discardPrepared(p, this.host);
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
  /** The direct hand-off, when offered: the slot and how the vCPU thread ended it. */
  let direct: Direct | undefined;
  /** The VM runs here (direct hand-off): whatever the stream does now, it stays. */
  let runningHere = false;
  let armsSettled = false;
  /** Direct hand-off ended: records what moved; true when the VM runs here. */
  const settleDirect = (o: HandoffOutcome): boolean => {
    recordMoved(
      blocks.filter((x) => x.mode === 'ref'),
      o,
      moved,
    );
    if (o.ok && !runningHere) {
      runningHere = true;
      host.adoptHandedOff(vm!);
      const release = prepared!.release;
      setTimeout(release, AFTER_RUN_MS);
    }
    // Flipped or not, memstore settles the armed transfers (off the downtime; once the source
    // finished when the guest runs here).
    if (direct !== undefined && !armsSettled) {
      armsSettled = true;
      const { armed } = direct;
      const ctx = host.ramContext(prepared!.name);
      setTimeout(() => settleArms(ctx, armed, log), o.ok ? AFTER_RUN_MS : 0);
    }
    return o.ok;
  };
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
  /** The VM runs here after a direct hand-off: tell the source, close the slot. */
  let finished = false;
  const finishDirect = (o: HandoffOutcome): void => {
    if (finished) return;
    finished = true;
    direct?.slot.close();
    const epoch = moved[0]?.backing?.regionRef?.epoch ?? 0;
    try {
      if (!call.gone) {
        call.write({
          reply: {
            $case: 'resumed',
            value: { resumeTimeUnixUs: BigInt(Math.round(o.runAtMs * 1000)), epoch: BigInt(epoch) },
          },
        });
        call.end();
      }
    } catch {
      // the source already left: it saw the guest run here in the slot
    }
    const parts = partsOf(o);
    setTimeout(
      () =>
        log.info(
          { direct: true, ...parts },
          'incoming migration: the VM runs here (direct hand-off; source stop to run, wall clocks)',
        ),
      AFTER_RUN_MS,
    );
  };
  const bad = (what: string): never => {
    throw new MigrationError('MIGRATION_BAD_STREAM', what);
  };
  try {
    /** The frame being waited for; kept across a direct hand-off's outcome (one next() at a time). */
    let nextFrame: Promise<vmmStream.IncomingRequest | null> | undefined;
    const directEnded = Symbol('direct hand-off ended');
    for (;;) {
      nextFrame ??= call.next();
      const ending = direct?.outcome.then((): typeof directEnded => directEnded);
      const raw = ending !== undefined ? await Promise.race([nextFrame, ending]) : await nextFrame;
      if (raw === directEnded) {
        // The target's vCPU thread ended the direct hand-off: it runs the guest, or it failed
        // after the source's stop (the leases it moved go back in the catch below), or the slot
        // was given up before the stop (the state comes on this stream).
        const o = await direct!.outcome;
        if (settleDirect(o)) {
          finishDirect(o);
          return;
        }
        if (o.stage !== 'aborted' || direct!.slot.announced) {
          throw new MigrationError(
            o.code === 'MIGRATION_BAD_STREAM' ? 'MIGRATION_BAD_STREAM' : 'MIGRATION_FAILED',
            `the direct hand-off failed (${o.stage}${o.code !== undefined ? `, ${o.code}` : ''}): ` +
              `${o.message ?? 'no reason given'}`,
          );
        }
        direct!.slot.close();
        direct = undefined;
        continue;
      }
      nextFrame = undefined;
      if (raw === null && prepared === undefined) {
        // Nothing was sent: no migration, only a look whether this instance is still there.
        log.debug('an incoming stream ended before its first frame (a liveness probe)');
        return;
      }
      if (raw === null) {
        // A source that saw the guest run here (the slot says so) may close first.
        if (direct?.slot.announced === true) {
          const o = await direct.outcome;
          if (settleDirect(o)) {
            finishDirect(o);
            return;
          }
        }
        break;
      }
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
        const offered = await prepared.direct;
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
          // Armed for exactly this source at exactly these epochs (prebuiltFits checked them).
          if (
            offered !== undefined &&
            frame.value.formatMinor >= 1 &&
            offered.from === sourceHolder
          ) {
            direct = offered;
          } else if (offered !== undefined) {
            await dropDirect(offered, host, prepared.name);
          }
        } else {
          prebuiltSettled = true;
          if (offered !== undefined) await dropDirect(offered, host, prepared.name);
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
        if (
          !prebuiltUsed &&
          frame.value.formatMinor >= 1 &&
          blocks.every((b) => b.mode === 'ref')
        ) {
          direct = await offerDirect(
            deps.tokens.handoffDir,
            vm,
            blocks,
            sourceHolder,
            host,
            prepared.name,
            log,
          );
        }
        // Taken over: the VM is this instance's from that instant, whatever the stream does.
        direct?.outcome.then(
          (o) => o.ok && settleDirect(o),
          () => undefined,
        );
        call.write({
          reply: {
            $case: 'headerAck',
            value: {
              formatMajor: STREAM_FORMAT.major,
              formatMinor: STREAM_FORMAT.minor,
              handoffSlot: direct?.slot.path ?? '',
            },
          },
        });
        log.info(
          {
            modes: blocks.map((b) => b.mode),
            source: sourceHolder,
            checkMs: t1 - t0,
            spawnMs: performance.now() - t1,
            prebuilt: prebuiltUsed,
            // How the device state and the lease will move: through the hand-off slot with
            // memstore's armed transfers or its lease channel, or on the stream.
            handoff:
              direct === undefined ? 'stream' : direct.armed.length > 0 ? 'armed' : 'channel',
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
          if (direct !== undefined && finalSeen) {
            // A source that did not take the slot: it sends everything on the stream. Give the
            // slot up first; if the source's stop was announced there, its thread decides.
            if (!direct.slot.abort())
              bad('the final marker came although the stop went to the slot');
            settleDirect(await direct.outcome);
            direct.slot.close();
            direct = undefined;
          }
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
          if (direct !== undefined) {
            bad('completion arrived during a direct hand-off; the slot carries the state');
          }
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
    if (direct !== undefined) {
      // Published before the failure: the vCPU thread decides where the VM runs.
      const published = !direct.slot.abort();
      const ran = settleDirect(await direct.outcome);
      if (published && ran) {
        log.warn(
          { code: e.code, error: e.message },
          'the migration stream failed after the VM took over here; it runs here',
        );
        finishDirect(await direct.outcome);
        return;
      }
      direct.slot.close();
    }
    log.warn({ code: e.code, error: e.message }, 'incoming migration failed');
    await leases?.catch(() => undefined); // a transfer in flight may still move a lease here
    await pages?.drain().catch(() => undefined); // no write may outlive the blocks
    // Give back what moved, so the source can re-take its lease and resume.
    for (const b of blocks) if (b.mode === 'ref') b.backing?.abandon(); // never release theirs
    if (moved.length > 0) {
      const ctx = host.ramContext(prepared!.name);
      await handBack(
        ctx,
        moved.map((b) => b.region!.id),
        sourceHolder,
        log,
      );
    }
    if (vm !== null) await vm.destroy().catch(() => undefined);
    for (const b of blocks) await b.backing?.close();
    if (!prebuiltSettled && prepared !== undefined) await discardPrepared(prepared, host);
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
    if (srcSpec.name !== name) {
      throw new MigrationError(
        'MIGRATION_BAD_TOKEN',
        `the stream carries VM ${srcSpec.name} but its token was issued for VM ${name}; ` +
          'ask the target for a token for this VM with PrepareIncoming',
      );
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

/** An offered direct hand-off: the slot, how the vCPU thread ended it, and what was armed. */
interface Direct {
  readonly slot: HandoffSlot;
  readonly outcome: Promise<HandoffOutcome>;
  /** Regions whose transfer memstore armed (settled by ResolveTransfer afterwards). */
  readonly armed: readonly string[];
  /** The lease holder the transfers come from (the source's VM). */
  readonly from: string;
}

/**
 * The blocks (by reference, in order) whose lease a direct hand-off moved here, with their new
 * epoch recorded; appended to `moved` unless already there. Returns `moved`.
 */
function recordMoved(refs: readonly Block[], o: HandoffOutcome, moved: Block[]): Block[] {
  for (const [k, b] of refs.entries()) {
    const epoch = o.epochs[k];
    if (epoch === null || epoch === undefined || moved.includes(b)) continue;
    moved.push(b);
    b.backing!.setLeaseEpoch?.(epoch);
  }
  return moved;
}

/** Where the downtime of a direct hand-off went (ms after the source's stop, wall clocks). */
function partsOf(o: HandoffOutcome): Record<string, number> {
  return {
    stopToRunMs: o.runAtMs - o.stopAtMs,
    stopSeenMs: (o.stopSeenAtMs ?? 0) - o.stopAtMs,
    publishedMs: (o.publishedAtMs ?? 0) - o.stopAtMs,
    restoredMs: (o.restoredAtMs ?? 0) - o.stopAtMs,
    leasedMs: (o.leasedAtMs ?? 0) - o.stopAtMs,
  };
}

/**
 * After a failed incoming migration: gives each region's lease that this instance holds back
 * to `to` (the source), so that it can re-take its lease and resume. Failures are logged; the
 * source then finds the lease moved and stays paused.
 */
async function handBack(
  ctx: RamContext,
  regionIds: readonly string[],
  to: string,
  log: Logger,
): Promise<void> {
  for (const id of regionIds) {
    try {
      const held = (
        await ctx.leases().getRegion({ region: byId(id) }, { deadlineMs: ctx.deadlineMs })
      ).region?.lease;
      if (held !== undefined && held.holder === holderOf(ctx)) {
        await ctx.leases().transferLease(
          {
            region: byId(id),
            fromHolder: holderOf(ctx),
            expectedEpoch: held.epoch,
            toHolder: to,
          },
          { deadlineMs: ctx.deadlineMs },
        );
      }
    } catch (err) {
      log.warn({ error: (err as Error).message }, 'could not hand the lease back to the source');
    }
  }
}

/** The holder of the blocks' leases (the source's VM), as the prebuild read them. */
function sourceHolderOf(blocks: readonly Block[]): string {
  const holders = new Set(blocks.map((b) => b.region?.lease?.holder ?? ''));
  return holders.size === 1 ? [...holders][0]! : '';
}

/**
 * Gives up an offered direct hand-off no stream will use: the slot aborted (before any stop),
 * the vCPU thread back to waiting, the armed transfers settled (cancelled), the slot deleted.
 */
async function dropDirect(d: Direct, host: VmHost, name: string): Promise<void> {
  d.slot.abort();
  await d.outcome;
  const ctx = host.ramContext(name);
  settleArms(ctx, d.armed, ctx.logger);
  d.slot.close();
}

/** Undoes what PrepareIncoming prepared and no stream used. */
async function discardPrepared(
  p: Pick<Prepared, 'prebuilt' | 'direct'>,
  host: VmHost,
): Promise<void> {
  const built = await p.prebuilt;
  const direct = await p.direct;
  if (built !== null && direct !== undefined) await dropDirect(direct, host, built.spec.name);
  if (built !== null) await discardPrebuilt(built);
}

/**
 * Offers a direct hand-off for a stream whose every block travels by reference: creates the
 * slot and arms the VM's waiting vCPU thread with the lease step it will take — memstore's armed
 * transfers when it can arm them all, else TransferLease over the lease channel. Undefined (the
 * state comes on the stream) when hand-offs are off here, memstore serves no lease channel, or
 * the slot cannot be created.
 */
async function offerDirect(
  dir: string | null,
  vm: Vm,
  blocks: readonly Block[],
  sourceHolder: string,
  host: VmHost,
  name: string,
  log: Logger,
): Promise<Direct | undefined> {
  if (dir === null) return undefined;
  const ctx = host.ramContext(name);
  const socketPath = await ctx.leaseChannel();
  if (socketPath === null) {
    log.info('memstore serves no lease channel: the device state comes on the stream');
    return undefined;
  }
  let slot: HandoffSlot | undefined;
  try {
    slot = HandoffSlot.create(dir, ctx.vmmId, name);
    slot.expect({
      from: sourceHolder,
      blocks: blocks.map((b) => ({
        id: b.spec.id,
        regionId: b.region!.id,
        identity: b.region!.identity,
        epoch: b.epoch,
        size: b.spec.size,
        guestBase: b.spec.guestBase,
      })),
    });
  } catch (err) {
    slot?.close();
    log.warn(
      { error: (err as Error).message, dir },
      'cannot create a hand-off slot: the device state comes on the stream',
    );
    return undefined;
  }
  const to = holderOf(ctx);
  const timeoutMs = ctx.deadlineMs;
  const armed = await armTransfers(ctx, blocks, sourceHolder, to, log);
  let plan: HandoffLeasePlan;
  if (armed !== null) {
    plan = { kind: 'armed', armsPath: armed.armsPath, transfers: armed.transfers, timeoutMs };
  } else {
    const transfers = blocks.map((b, k) => {
      const id = BigInt(k + 1);
      const value: pb.TransferLeaseRequest = {
        region: byId(b.region!.id),
        fromHolder: sourceHolder,
        expectedEpoch: BigInt(b.epoch),
        toHolder: to,
      };
      const request = pb.LeaseChannelRequest.encode({
        id,
        call: { $case: 'transferLease', value },
      }).finish();
      return { id, request, toHolder: to, fromEpoch: BigInt(b.epoch) };
    });
    plan = { kind: 'channel', socketPath, transfers, timeoutMs };
  }
  return {
    slot,
    outcome: vm.handOffIncoming(slot.buffer, plan),
    armed: armed === null ? [] : blocks.map((b) => b.region!.id),
    from: sourceHolder,
  };
}

/**
 * Asks memstore to arm the transfer of every block's lease to `to`. Null when it cannot arm
 * them all (those armed are settled again, i.e. cancelled): the caller uses TransferLease.
 */
async function armTransfers(
  ctx: RamContext,
  blocks: readonly Block[],
  from: string,
  to: string,
  log: Logger,
): Promise<{ armsPath: string; transfers: ArmedTransfer[] } | null> {
  const transfers: ArmedTransfer[] = [];
  let armsPath = '';
  try {
    for (const b of blocks) {
      const res = await ctx.leases().armTransfer(
        {
          region: byId(b.region!.id),
          fromHolder: from,
          expectedEpoch: BigInt(b.epoch),
          toHolder: to,
        },
        { deadlineMs: ctx.deadlineMs },
      );
      if (armsPath !== '' && res.armsPath !== armsPath) {
        throw new Error(`memstore armed in two files (${armsPath}, ${res.armsPath})`);
      }
      armsPath = res.armsPath;
      transfers.push({
        regionName: b.region!.name,
        offset: res.slotOffset,
        armedWord: res.armedWord,
        flippedWord: res.flippedWord,
        epoch: Number(res.epoch),
      });
    }
    return { armsPath, transfers };
  } catch (err) {
    const code = isCodedError(err) ? err.code : undefined;
    (code === 'LEASE_ARM_UNSUPPORTED' ? log.info.bind(log) : log.warn.bind(log))(
      { code, error: (err as Error).message },
      'memstore did not arm the lease transfers: the hand-off uses TransferLease',
    );
    settleArms(
      ctx,
      blocks.slice(0, transfers.length).map((b) => b.region!.id),
      log,
    );
    return null;
  }
}

/**
 * Settles armed transfers in the background (memstore commits a flipped one, cancels the rest),
 * so the catalog catches up at once and no slot waits for memstore's timeout.
 */
function settleArms(ctx: RamContext, regions: readonly string[], log: Logger): void {
  for (const id of regions) {
    ctx
      .leases()
      .resolveTransfer({ region: byId(id) }, { deadlineMs: ctx.deadlineMs })
      .catch((err: unknown) =>
        log.warn(
          { region: id, error: (err as Error).message },
          'could not settle an armed lease transfer (memstore settles it on its own later)',
        ),
      );
  }
}
