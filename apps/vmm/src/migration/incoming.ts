/**
 * The target side of a migration stream (a MigrationService.Incoming call or a data-channel
 * connection, see transport/channel.ts): one {@link IncomingMigration} per stream, a state
 * machine with one method per frame kind (PROTOCOL.md, "Receiver state machine"):
 *
 * ```
 * await-header ──header──▶ receiving ──complete──▶ completing ──▶ resumed
 *      │                      │  └── switchover ran the guest ─────▶ resumed
 *      └──────────────────────┴──── any error ─────────────────────▶ failed
 * ```
 *
 * The stream is hostile until proven otherwise: the token is checked first, the header against
 * our format version and memstore's view of every RegionRef (header.ts), and every page run
 * against the block table before a byte is written. A failure fails only this migration: what
 * was opened is closed, any lease taken goes back, a StreamError goes back, the instance keeps
 * serving.
 */
import type { memstore as msPb, vmmStream } from '@handoff/proto';
import { leaseMoveToWire, statusToWire } from '@handoff/qapi/wire';
import { isCodedError, type Logger } from '@handoff/service';
import { handBack, settleArms, takeLease } from '../leases/protocol.js';
import type { MachineState } from '../machine/state.js';
import { MigrationError } from '../model/migration-error.js';
import { decodeDeviceState } from '../snapshot/index.js';
import { downtimeParts, type SwitchoverOutcome } from '../switchover/outcome.js';
import type { VmHost } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';
import { failpoint } from '../failpoints.js';
import { acceptHeader } from './header.js';
import { reapCopiedRegion } from './copied-regions.js';
import { discardPrebuilt, openBlock, prebuiltFits, type Block } from './incoming-blocks.js';
import { STREAM_FORMAT } from './format.js';
import { dropLazyRegions, followLazyFills, startLazyFills } from './lazy-blocks.js';
import { PageReceiver } from './pages/page-receiver.js';
import {
  AFTER_RUN_MS,
  armSwitchover,
  discardPrepared,
  dropSwitchover,
  recordMoved,
  type ArmedSwitchover,
  type IncomingPreparations,
  type Prepared,
} from './prepare.js';
import type { IncomingChannel } from './transport/channel.js';

/** What the frame loop sees when CancelIncoming stopped the stream. */
const STOPPED = Symbol('stopped by CancelIncoming');

/** The receiver's states. */
export type IncomingState = 'await-header' | 'receiving' | 'completing' | 'resumed' | 'failed';

/** The moves {@link IncomingMigration.transition} allows. */
const LEGAL: Readonly<Record<IncomingState, readonly IncomingState[]>> = {
  'await-header': ['receiving', 'failed'],
  receiving: ['completing', 'resumed', 'failed'],
  completing: ['resumed', 'failed'],
  resumed: [],
  failed: [],
};

type Frame = NonNullable<vmmStream.IncomingRequest['frame']>;
type FrameOf<K extends Frame['$case']> = Extract<Frame, { $case: K }>['value'];

/** What a stream's receiver needs from the instance. */
export interface IncomingDeps {
  readonly host: VmHost;
  readonly preparations: IncomingPreparations;
  readonly logger: Logger;
}

/** One incoming migration stream. */
export class IncomingMigration {
  private current: IncomingState = 'await-header';
  private log: Logger;
  private prepared: Prepared | undefined;
  private blocks: Block[] = [];
  private sourceHolder = '';
  /** Regions the VM owned on the source whose blocks were copied here (see copied-regions.ts). */
  private copiedOwned: readonly string[] = [];
  private pages: PageReceiver | undefined;
  private vm: Vm | null = null;
  private device: Uint8Array | null = null;
  private finalSeen = false;
  /** The prebuild was used, or discarded because the header differs: nothing left to undo. */
  private prebuildSettled = false;
  /** Shared blocks whose lease moved here. */
  private readonly moved: Block[] = [];
  /** The lease move on the stream, once started (at the final marker). */
  private leases: Promise<void> | undefined;
  /** performance.now() of the stream's lease steps. */
  private readonly marks = { final: 0, leased: 0, complete: 0 };
  /** The switchover offered with this stream, while it may still end the migration. */
  private switchover: ArmedSwitchover | undefined;
  private armsSettled = false;
  private switchoverFinished = false;
  /** Why CancelIncoming stopped this stream (set once), and the wake-up of the frame loop. */
  private stopReason: string | undefined;
  private readonly stopped: Promise<typeof STOPPED>;
  private wakeStopped: (() => void) | undefined;

  private constructor(
    private readonly call: IncomingChannel,
    private readonly deps: IncomingDeps,
  ) {
    this.log = deps.logger;
    this.stopped = new Promise((resolve) => (this.wakeStopped = () => resolve(STOPPED)));
  }

  /**
   * CancelIncoming: stops this stream unless it is past its point of no return — the source's
   * stop (the final marker, or the stop announced in the switchover slot), after which the
   * lease may move and the arrival ends by itself. Stopped, it fails like any failure: nothing
   * moved, the name is free, the source is told.
   */
  private stop(why: string): void {
    const pastStop =
      this.finalSeen ||
      (this.current !== 'await-header' && this.current !== 'receiving') ||
      this.switchover?.slot.announced === true;
    if (pastStop || this.stopReason !== undefined) return;
    this.stopReason = why;
    this.wakeStopped?.();
  }

  /** Serves one stream to its end. Never rejects: failures go back as StreamError. */
  static serve(call: IncomingChannel, deps: IncomingDeps): Promise<void> {
    return new IncomingMigration(call, deps).run();
  }

  /** The receiver's state. */
  get state(): IncomingState {
    return this.current;
  }

  /**
   * Moves the state machine from `from` to `to`.
   *
   * @throws MigrationError `MIGRATION_BAD_STREAM` when the receiver is not in `from`, or the move
   *   is not one of {@link LEGAL}
   */
  private transition(from: IncomingState, to: IncomingState): void {
    if (this.current !== from || !LEGAL[from].includes(to)) {
      throw new MigrationError(
        'MIGRATION_BAD_STREAM',
        `the receiver cannot go from ${this.current} to ${to} (expected ${from})`,
      );
    }
    this.current = to;
  }

  private async run(): Promise<void> {
    try {
      /** The frame being waited for; kept across a switchover's outcome (one next() at a time). */
      let nextFrame: Promise<vmmStream.IncomingRequest | null> | undefined;
      const switchoverEnded = Symbol('switchover ended');
      for (;;) {
        nextFrame ??= this.call.next();
        const ending = this.switchover?.outcome.then((): typeof switchoverEnded => switchoverEnded);
        const raw = await Promise.race(
          ending !== undefined ? [nextFrame, ending, this.stopped] : [nextFrame, this.stopped],
        );
        if (raw === STOPPED) {
          if (this.stopReason !== undefined) {
            throw new MigrationError('MIGRATION_CANCELLED', `${this.stopReason}; nothing moved`);
          }
          continue;
        }
        if (raw === switchoverEnded) {
          if (await this.onSwitchoverEnded()) return;
          continue;
        }
        nextFrame = undefined;
        if (raw === null) {
          if (this.current === 'await-header') {
            // Nothing was sent: no migration, only a look whether this instance is still there.
            this.log.debug('an incoming stream ended before its first frame (a liveness probe)');
            return;
          }
          // A source that saw the guest run here (the slot says so) may close first.
          if (this.switchover?.slot.announced === true && (await this.onSwitchoverEnded())) return;
          throw new MigrationError(
            'MIGRATION_BAD_STREAM',
            'the stream ended before completion (truncated)',
          );
        }
        if (await this.onFrame(raw.frame)) return;
      }
    } catch (err) {
      await this.fail(err);
    }
  }

  /** Dispatches one frame; true when the migration ended here (the VM runs). */
  private async onFrame(frame: Frame | undefined): Promise<boolean> {
    if (frame === undefined) throw this.bad('a frame with no content arrived');
    if (this.current === 'await-header') {
      if (frame.$case !== 'header') {
        throw new MigrationError(
          'MIGRATION_BAD_TOKEN',
          `the stream began with ${frame.$case}; it must begin with a header carrying the token`,
        );
      }
      await this.onHeader(frame.value);
      return false;
    }
    if (this.current !== 'receiving') throw this.bad(`${frame.$case} arrived after completion`);
    switch (frame.$case) {
      case 'header':
        throw this.bad('a second header arrived');
      case 'pages':
        await this.onPages(frame.value);
        return false;
      case 'iteration':
        await this.onIteration(frame.value);
        return false;
      case 'device':
        this.onDevice(frame.value);
        return false;
      case 'complete':
        await this.onComplete();
        return true;
      default:
        throw this.bad(`a ${(frame as Frame).$case} frame is not expected from a source`);
    }
  }

  // ---- frames -------------------------------------------------------------------------------

  /**
   * The header: takes the token, checks the header, uses the machine PrepareIncoming built when
   * it fits (else builds one), keeps or offers a switchover, and answers.
   */
  private async onHeader(h: FrameOf<'header'>): Promise<void> {
    const { host } = this.deps;
    const prepared = this.deps.preparations.take(h.token, this.call.peer, {
      stop: (why) => this.stop(why),
    });
    this.prepared = prepared;
    this.log = this.log.child({ vm: prepared.name, job: prepared.jobId, side: 'target' });
    const t0 = performance.now();
    const ready = await prepared.prebuilt;
    const offered = await prepared.switchover;
    const accepted = await acceptHeader(h, prepared.name, ready, host, prepared.sourceMemstore);
    const t1 = performance.now();
    this.sourceHolder = accepted.sourceHolder;
    this.copiedOwned = accepted.copiedOwned;
    let prebuiltUsed = false;
    if (ready !== null && prebuiltFits(ready, accepted.spec, accepted.plans, accepted.templates)) {
      // PrepareIncoming built exactly this: the blocks are mapped, the machine waits.
      this.blocks = [...ready.blocks];
      this.vm = ready.vm;
      prebuiltUsed = true;
      this.prebuildSettled = true;
      // Armed for exactly this source at exactly these epochs (prebuiltFits checked them).
      if (offered !== undefined && h.formatMinor >= 1 && offered.from === this.sourceHolder) {
        this.switchover = offered;
      } else if (offered !== undefined) {
        await dropSwitchover(offered, host, prepared.name);
      }
    } else {
      this.prebuildSettled = true;
      if (offered !== undefined) await dropSwitchover(offered, host, prepared.name);
      if (ready !== null) await discardPrebuilt(ready);
      const ctx = host.ramContext(prepared.name);
      for (const [k, plan] of accepted.plans.entries()) {
        this.blocks.push(await openBlock(plan, ctx, `header block ${k}`, accepted.templates[k]));
      }
      // The vCPU thread starts now, off the pause; it waits for the device state.
      this.vm = host.spawnIncoming(
        accepted.spec,
        this.blocks.map((b) => b.backing!),
        this.blocks[0]!.mode !== 'ref',
      );
      await this.vm.spawned(); // the machine's set-up stays out of the pause
    }
    const vm = this.vm;
    this.pages = new PageReceiver(
      this.blocks,
      this.blocks[0]!.mode === 'ref' ? null : vm.touchedPages,
    );
    const byReference = this.blocks.every((b) => b.mode === 'ref');
    const lazy = this.blocks.some((b) => b.remote !== undefined);
    if (!prebuiltUsed && h.formatMinor >= 1 && byReference && !lazy) {
      this.switchover = await armSwitchover(
        this.deps.preparations.switchoverDir,
        host,
        { vm, blocks: this.blocks },
        this.log,
      );
    }
    // Taken over: the VM is this instance's from that instant, whatever the stream does.
    this.switchover?.outcome.then(
      (o) => o.ok && this.settleSwitchover(o),
      () => undefined,
    );
    const leaseMove =
      this.switchover !== undefined
        ? this.switchover.lease === 'armed'
          ? 'armed'
          : 'lease-channel'
        : lazy
          ? 'page-source'
          : this.blocks.some((b) => b.mode === 'ref')
            ? 'stream'
            : 'none';
    this.transition('await-header', 'receiving');
    this.call.write({
      reply: {
        $case: 'headerAck',
        value: {
          formatMajor: STREAM_FORMAT.major,
          formatMinor: STREAM_FORMAT.minor,
          handoffSlot: this.switchover?.slot.path ?? '',
          prebuilt: prebuiltUsed,
          leaseMove: leaseMoveToWire(leaseMove),
        },
      },
    });
    this.log.info(
      {
        modes: this.blocks.map((b) => b.mode),
        source: this.sourceHolder,
        checkMs: t1 - t0,
        spawnMs: performance.now() - t1,
        prebuilt: prebuiltUsed,
        leaseMove,
      },
      'incoming migration: header accepted',
    );
  }

  /** Page runs, each checked against the block table before any write. */
  private async onPages(frame: FrameOf<'pages'>): Promise<void> {
    await this.pages!.apply(frame);
    this.pages!.afterWrites(() => this.call.release?.(frame)); // its memory may carry another frame
  }

  /**
   * A pass marker. The final one says the source's vCPU stopped: the lease move starts now,
   * beside the last pages and the device state, not after them.
   */
  private async onIteration(it: FrameOf<'iteration'>): Promise<void> {
    if (this.finalSeen && it.final) throw this.bad('a second final pass marker arrived');
    this.finalSeen ||= it.final;
    if (!this.finalSeen) return;
    const offered = this.switchover;
    if (offered !== undefined) {
      // A source that did not take the slot sends everything on the stream. Give the slot up
      // first; if the source's stop was announced there, its thread decides.
      if (!offered.slot.abort())
        throw this.bad('the final marker came although the stop went to the slot');
      this.settleSwitchover(await offered.outcome);
      offered.slot.close();
      this.switchover = undefined;
    }
    if (this.leases === undefined) {
      this.marks.final = performance.now();
      this.leases = this.takeLeases();
      this.leases.catch(() => undefined); // awaited at completion (or on failure)
    }
  }

  private onDevice(d: FrameOf<'device'>): void {
    if (this.device !== null) throw this.bad('device state arrived twice');
    this.device = d.container;
  }

  /** Completion: every page in, the leases here, the device state loaded; the guest runs. */
  private async onComplete(): Promise<void> {
    if (this.switchover !== undefined) {
      throw this.bad('completion arrived during a switchover; the slot carries the state');
    }
    if (this.device === null) throw this.bad('completion arrived before the device state');
    this.transition('receiving', 'completing');
    this.marks.complete = performance.now();
    let state: MachineState;
    try {
      state = decodeDeviceState(this.device).state;
    } catch (err) {
      throw new MigrationError(
        'MIGRATION_BAD_STREAM',
        `the device state does not load: ${(err as Error).message}`,
        { cause: err },
      );
    }
    await this.pages!.drain(); // every page landed before the memory runs
    await (this.leases ??= this.takeLeases());
    const leased = performance.now();
    const resumedUs = Math.round((await this.deps.host.adoptAndRun(this.vm!, state)) * 1000);
    const running = performance.now();
    this.prepared!.release();
    this.prepared!.settle('arrived');
    this.transition('completing', 'resumed');
    this.reapCopiedRegions();
    this.call.write({
      reply: {
        $case: 'resumed',
        value: { resumeTimeUnixUs: BigInt(resumedUs), epoch: BigInt(this.movedEpoch()) },
      },
    });
    this.log.info(
      {
        leaseMs: this.marks.final > 0 ? this.marks.leased - this.marks.final : undefined,
        completeToLeasedMs: leased - this.marks.complete,
        loadAndRunMs: running - leased,
      },
      'incoming migration: the VM runs here (parts of the pause, target clock)',
    );
    const lazy = this.lazyRegions();
    if (lazy.length === 0) this.call.end();
    else void this.followFill(lazy);
  }

  /**
   * Post-copy: the guest runs while its memory arrives; the fill's progress goes to the source
   * until every page is here, then the stream ends. The source going away changes nothing here
   * (the fill is this host's memstore's, from the source host's memstore).
   */
  private async followFill(regions: readonly msPb.Region[]): Promise<void> {
    const ctx = this.deps.host.ramContext(this.prepared!.name);
    const last = await followLazyFills(ctx, regions, (p) => {
      if (p.status !== 'postcopy-active') {
        this.log.info({ status: p.status, error: p.error }, 'post-copy fill');
      }
      if (this.call.gone) return;
      try {
        this.call.write({
          reply: {
            $case: 'postcopy',
            value: {
              status: statusToWire(p.status),
              presentPages: BigInt(p.presentPages),
              totalPages: BigInt(p.totalPages),
              demandPages: BigInt(p.demandPages),
              backgroundPages: BigInt(p.backgroundPages),
              faultP50Us: BigInt(p.faultP50Us),
              faultP99Us: BigInt(p.faultP99Us),
              bytesPerSecond: BigInt(p.bytesPerSecond),
              error: p.error,
            },
          },
        });
      } catch {
        /* the source is gone: the fill goes on */
      }
    });
    this.log.info(
      {
        status: last.status,
        pages: last.totalPages,
        demandPages: last.demandPages,
        faultP50Us: last.faultP50Us,
        faultP99Us: last.faultP99Us,
      },
      last.status === 'completed'
        ? 'post-copy: every page of the VM is here'
        : "post-copy: the fill of the VM's memory failed",
    );
    if (!this.call.gone) this.call.end();
  }

  /**
   * The target's vCPU thread ended the switchover: it runs the guest (true: done), or it failed
   * after the source's stop (the leases it moved go back in {@link fail}), or the slot was given
   * up before the stop (false: the state comes on this stream).
   */
  private async onSwitchoverEnded(): Promise<boolean> {
    const d = this.switchover!;
    const o = await d.outcome;
    if (this.settleSwitchover(o)) {
      this.finishSwitchover(o);
      return true;
    }
    if (o.stage !== 'aborted' || d.slot.announced) {
      throw new MigrationError(
        o.code === 'MIGRATION_BAD_STREAM' ? 'MIGRATION_BAD_STREAM' : 'MIGRATION_FAILED',
        `the switchover failed (${o.stage}${o.code !== undefined ? `, ${o.code}` : ''}): ` +
          `${o.message ?? 'no reason given'}`,
      );
    }
    d.slot.close();
    this.switchover = undefined;
    return false;
  }

  // ---- leases and the switchover's bookkeeping ----------------------------------------------

  /** This host's lazy regions of the blocks that come from another host (opened so far). */
  private lazyRegions(): msPb.Region[] {
    return this.blocks.flatMap((b) =>
      b.remote !== undefined && b.region !== null ? [b.region] : [],
    );
  }

  /** The stream's lease move: takes every shared region's lease from the source (epoch + 1). */
  private async takeLeases(): Promise<void> {
    const ctx = this.deps.host.ramContext(this.prepared!.name);
    // Another host's memory: this host's memstore claims it and starts filling.
    await startLazyFills(ctx, this.lazyRegions());
    for (const b of this.blocks) {
      if (b.mode !== 'ref' || b.remote !== undefined) continue;
      const r = b.region!;
      const epoch = await takeLease(
        ctx,
        { regionId: r.id, regionName: r.name, epoch: b.epoch },
        this.sourceHolder,
      );
      this.moved.push(b);
      b.backing!.setLeaseEpoch?.(epoch);
    }
    this.marks.leased = performance.now();
    failpoint('incoming-after-lease');
  }

  /**
   * The VM runs here: the regions it owned on the source and left there (its blocks were copied)
   * are this instance's to delete should the source die before it does (in the background).
   */
  private reapCopiedRegions(): void {
    if (this.copiedOwned.length === 0) return;
    const ctx = this.deps.host.ramContext(this.prepared!.name);
    for (const name of this.copiedOwned) {
      void reapCopiedRegion(ctx, name, this.sourceHolder, this.log);
    }
  }

  /** Records what a switchover moved; true when the VM runs here (adopted once). */
  private settleSwitchover(o: SwitchoverOutcome): boolean {
    recordMoved(
      this.blocks.filter((x) => x.mode === 'ref'),
      o,
      this.moved,
    );
    if (o.ok && this.current === 'receiving') {
      // The vCPU thread took over: nothing the stream says changes it any more.
      this.transition('receiving', 'resumed');
      this.deps.host.adoptRunning(this.vm!);
      this.reapCopiedRegions();
      const p = this.prepared!;
      setTimeout(() => {
        p.release();
        p.settle('arrived');
      }, AFTER_RUN_MS);
    }
    // Flipped or not, memstore settles the armed transfers (off the pause), at once: a resolve
    // names only the region, so one sent late would settle (cancel) the arm of the VM's next
    // migration, which may follow within milliseconds.
    const d = this.switchover;
    if (d !== undefined && !this.armsSettled) {
      this.armsSettled = true;
      settleArms(this.deps.host.ramContext(this.prepared!.name), d.armed, this.log);
    }
    return o.ok;
  }

  /** The VM runs here after a switchover: tell the source, close the slot. */
  private finishSwitchover(o: SwitchoverOutcome): void {
    if (this.switchoverFinished) return;
    this.switchoverFinished = true;
    this.switchover?.slot.close();
    try {
      if (!this.call.gone) {
        this.call.write({
          reply: {
            $case: 'resumed',
            value: {
              resumeTimeUnixUs: BigInt(Math.round(o.runAtMs * 1000)),
              epoch: BigInt(this.movedEpoch()),
            },
          },
        });
        this.call.end();
      }
    } catch {
      // the source already left: it saw the guest run here in the slot
    }
    const parts = downtimeParts(o);
    setTimeout(
      () =>
        this.log.info(
          { switchover: true, ...parts },
          'incoming migration: the VM runs here (switchover; source stop to run, wall clocks)',
        ),
      AFTER_RUN_MS,
    );
  }

  private movedEpoch(): number {
    return this.moved[0]?.backing?.regionRef?.epoch ?? 0;
  }

  // ---- failure ------------------------------------------------------------------------------

  /** Fails this migration: gives back what moved, closes what was opened, tells the source. */
  private async fail(err: unknown): Promise<void> {
    const { host } = this.deps;
    const e = isCodedError(err)
      ? err
      : new MigrationError('MIGRATION_FAILED', (err as Error).message, { cause: err });
    const d = this.switchover;
    if (d !== undefined) {
      // Published before the failure: the vCPU thread decides where the VM runs.
      const published = !d.slot.abort();
      const ran = this.settleSwitchover(await d.outcome);
      if (published && ran) {
        this.log.warn(
          { code: e.code, error: e.message },
          'the migration stream failed after the VM took over here; it runs here',
        );
        this.finishSwitchover(await d.outcome);
        return;
      }
      d.slot.close();
    }
    this.current = 'failed'; // from any state but resumed, which returned above
    // A PrepareIncoming of this name waits for what follows (the name is released at the end).
    if (this.prepared !== undefined) this.prepared.phase = 'failing';
    this.log.warn({ code: e.code, error: e.message }, 'incoming migration failed');
    await this.leases?.catch(() => undefined); // a transfer in flight may still move a lease here
    await this.pages?.drain().catch(() => undefined); // no write may outlive the blocks
    // Give back what moved, so the source can re-take its lease and resume.
    for (const b of this.blocks) {
      if (b.mode === 'ref' && b.remote === undefined) b.backing?.abandon(); // never release theirs
    }
    if (this.moved.length > 0) {
      await handBack(
        host.ramContext(this.prepared!.name),
        this.moved.map((b) => b.region!.id),
        this.sourceHolder,
        this.log,
      );
    }
    if (this.vm !== null) await this.vm.destroy().catch(() => undefined);
    for (const b of this.blocks) await b.backing?.close();
    const lazy = this.lazyRegions();
    if (lazy.length > 0) await dropLazyRegions(host.ramContext(this.prepared!.name), lazy);
    if (!this.prebuildSettled && this.prepared !== undefined) {
      await discardPrepared(this.prepared, host);
    }
    this.prepared?.release();
    this.prepared?.settle(this.stopReason !== undefined ? 'dropped' : 'failed');
    try {
      if (!this.call.gone) {
        this.call.write({ reply: { $case: 'error', value: { code: e.code, message: e.message } } });
        this.call.end();
      }
    } catch {
      /* the source is gone */
    }
  }

  private bad(what: string): MigrationError {
    return new MigrationError('MIGRATION_BAD_STREAM', what);
  }
}
