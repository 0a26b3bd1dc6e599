/**
 * The source side of a migration, in four named phases (PROTOCOL.md):
 *
 * 1. **setup** — reach the target: through the switchover slot PrepareIncoming prepared for
 *    this very VM (no stream), or on a stream whose header the target accepts;
 * 2. **pre-copy** — copied RAM travels while the guest runs, until the rest fits downtime-limit;
 * 3. **stop-and-copy** — the vCPU stops; the state goes into the slot, or the last pages and the
 *    device state go on the stream;
 * 4. **await-resumed** — the target runs the guest; the VM is postmigrate here and retires.
 *
 * A failure names its phase. Failure rules: before the lease can have moved the VM resumes
 * unchanged; once it moved the VM never resumes here; when it cannot tell, it stays paused and
 * says so.
 */
import { PageBitmap } from '@handoff/bitmap';
import type { vmmStream } from '@handoff/proto';
import {
  MigrationStateMachine,
  type LeaseMove,
  type MigrationCapabilities,
  type MigrationInfo,
  type MigrationParameters,
} from '@handoff/qapi';
import { capabilitiesToWire, leaseMoveFromWire, statusFromWire } from '@handoff/qapi/wire';
import type { Logger, TlsMaterial } from '@handoff/service';
import { specToPb } from '../wire/spec.js';
import { holderOf } from '../leases/calls.js';
import { retakeLease, type RetakeOutcome } from '../leases/protocol.js';
import { failpoint, failpointHit } from '../failpoints.js';
import type { LeaseContext } from '../leases/calls.js';
import type { RamBacking } from '../ram/index.js';
import { stillArriving } from '../ram/lazy.js';
import { MigrationError, type OutgoingPhase } from '../model/migration-error.js';
import { encodeDeviceState } from '../snapshot/index.js';
import type { SwitchoverBlock } from '../switchover/offer.js';
import { SlotState, type SwitchoverSlot } from '../switchover/slot.js';
import { awaitTakeOver, openOfferedSlot, openPreparedSlot } from '../switchover/source.js';
import type { VmHost } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';
import { nextThrottle, throttlePercent, type PassMeasure } from './converge.js';
import { refusePostcopyOfCopiedRam } from './support.js';
import { HEADER_FORMAT_MINOR, STREAM_FORMAT } from './format.js';
import { modeFor, PAGE_SIZE, type BlockMode } from './pages/frames.js';
import { PageSender } from './pages/page-sender.js';
import { MigrationStats } from './stats.js';
import { recheckLeases, type LeaseRecheck } from './uncertain.js';
import { dataChannelAlive } from './transport/data-channel.js';
import {
  chooseTransport,
  StreamToTarget,
  type TargetEndpoints,
  type Transport,
} from './transport/to-target.js';

/** How long the target may take to answer the header, and to resume after completion. */
const HEADER_TIMEOUT_MS = 15_000;
const RESUME_TIMEOUT_MS = 30_000;
/** The target reports a post-copy's progress at least every second; this long silent is gone. */
const POSTCOPY_REPORT_TIMEOUT_MS = 30_000;
/** Bandwidth assumed before the first pass measured one (bytes/ms; 400 MB/s). */
const INITIAL_BANDWIDTH = 400_000;

export interface OutgoingOptions {
  readonly vm: Vm;
  readonly host: VmHost;
  readonly jobId: string;
  readonly target: TargetEndpoints;
  /** A (possibly shared, already connected) client of the target's MigrationService. */
  readonly grpcClient: () => vmmStream.MigrationServiceClient;
  /** This vmm's TLS material for a TCP data channel (null: plaintext). */
  readonly dataTls?: TlsMaterial | null;
  readonly token: string;
  readonly capabilities: MigrationCapabilities;
  readonly parameters: MigrationParameters;
  readonly logger: Logger;
}

/** What setup decided. */
interface Route {
  readonly modes: readonly BlockMode[];
  /** Every block travels by reference: the device state is all that moves at the stop. */
  readonly byReference: boolean;
  /** The stream, unless the slot alone carries the migration. */
  readonly stream: StreamToTarget | null;
  /** The switchover slot in use, if any (set to null when given up at the stop). */
  slot: SwitchoverSlot | null;
  /**
   * The target fills blocks sent by reference from this host's memstore (post-copy across
   * hosts): the guest runs there at once and the stream carries the fill's progress after it.
   */
  readonly postcopy: boolean;
}

/** What stop-and-copy leaves for await-resumed. */
type Stopped =
  | { readonly published: true; readonly pausedAtMs: number; readonly tStop: number }
  | {
      readonly published: false;
      readonly pausedAtMs: number;
      readonly tStop: number;
      readonly tPaused: number;
      readonly tPages: number;
      readonly tSent: number;
      /** Epoch ms the final marker left (0: it did not). */
      readonly markerAt: number;
    };

/** Where a failure found the VM, for {@link OutgoingMigration.recover}. */
interface Progress {
  wasRunning: boolean;
  /** The vCPU was asked to stop: a failure checks where the lease is before resuming. */
  paused: boolean;
  /** The target may have everything (or may take the lease): never resume blindly. */
  completeSent: boolean;
  modes: readonly BlockMode[];
}

const now = (): number => performance.now();

/** One outgoing migration of one VM; {@link OutgoingMigration.run} resolves with the final info. */
export class OutgoingMigration {
  private readonly sm = new MigrationStateMachine();
  private readonly pages: PageSender;
  private readonly stats: MigrationStats;
  private cancelled = false;
  private stream: StreamToTarget | null = null;
  /** The last pre-copy harvest: those pages go at the stop, with the ones dirtied since. */
  private lastPass: PageBitmap | null = null;
  /** The background lease re-check of a VM left paused with MIGRATION_UNCERTAIN. */
  private recheck: LeaseRecheck | undefined;
  /** What happened to the VM after the failure (appended to the error description). */
  private aftermath: string | undefined;

  constructor(private readonly o: OutgoingOptions) {
    this.pages = new PageSender((f) => this.sendPages(f));
    this.stats = new MigrationStats(this.pages.counts);
  }

  /** Progress now (the final info once terminal). */
  info(): MigrationInfo {
    const desc = this.sm.errorDesc;
    const errorDesc =
      desc !== undefined && this.aftermath !== undefined ? `${desc}; ${this.aftermath}` : desc;
    return this.stats.info(this.sm.status, this.sm.isTerminal(), errorDesc);
  }

  /**
   * Stops what this migration left running in the background (the lease re-check of a VM it
   * left paused with MIGRATION_UNCERTAIN): a new migration of the VM, or the instance's stop.
   */
  stopBackground(): void {
    this.recheck?.stop();
  }

  get terminal(): boolean {
    return this.sm.isTerminal();
  }

  /** The job this migration belongs to (MigrateVm's job id). */
  get jobId(): string {
    return this.o.jobId;
  }

  /** Asks the migration to stop; honoured until the device phase ends (then it completes). */
  cancel(): void {
    if (this.sm.isTerminal() || this.cancelled) return;
    if (!this.sm.tryTransition('cancelling')) return;
    this.cancelled = true;
    this.stream?.close();
    this.stream?.interrupt();
  }

  /** Runs the migration. @throws MigrationError naming its phase (the VM's state is as the code says) */
  async run(): Promise<MigrationInfo> {
    const { vm } = this.o;
    const wasRunning = vm.currentState === 'running';
    if (!wasRunning && vm.currentState !== 'paused') {
      throw new MigrationError(
        'MIGRATION_FAILED',
        `cannot migrate VM ${vm.name}: it is ${vm.currentState}; only running or paused VMs migrate`,
      );
    }
    const arriving = stillArriving(vm.ramBlocks);
    if (arriving !== null) {
      throw new MigrationError(
        'MIGRATION_FAILED',
        `cannot migrate VM ${vm.name}: its memory is still arriving by post-copy (${arriving}); ` +
          'migrate it once that migration completed (`vmctl jobs list`)',
      );
    }
    this.sm.transition('setup');
    // A shared or clone block always maps a region here (ram/), so its spec decides.
    const modes = vm.ramBlocks.map((b) => modeFor(b.spec, this.o.capabilities));
    const progress: Progress = { wasRunning, paused: false, completeSent: false, modes };
    let route: Route | null = null;
    try {
      refusePostcopyOfCopiedRam(
        this.o.capabilities,
        vm.ramBlocks.map((b, k) => ({ id: b.spec.id, mode: modes[k]! })),
      );
      route = await this.phase('setup', () => this.setup(modes));
      const r = route;
      await this.phase('pre-copy', () => this.precopy(r));
      const stopped = await this.phase('stop-and-copy', () => this.stopAndCopy(r, progress));
      const done = await this.phase('await-resumed', () => this.awaitResumed(r, stopped));
      this.releaseThrottle();
      return r.postcopy ? await this.followPostcopy(r.stream!, stopped.pausedAtMs) : done;
    } catch (err) {
      this.releaseThrottle(); // before recover() resumes the VM
      this.stream?.close();
      const slot = route?.slot;
      if (slot != null) {
        // Once the stop was announced, the target may take the lease: recover() checks it.
        // Before it, the slot is given up, so the target frees the VM's name at once.
        if (slot.announced) progress.completeSent = true;
        else slot.abort();
        slot.close();
      }
      const failure = await this.recover(err, progress);
      this.stats.totalMs = now() - this.stats.started;
      const status =
        this.cancelled && failure.code === 'MIGRATION_CANCELLED' ? 'cancelled' : 'failed';
      if (!this.sm.tryTransition(status, { errorDesc: failure.message })) {
        this.sm.tryTransition('failed', { errorDesc: failure.message });
      }
      this.o.logger.warn(
        {
          code: failure.code,
          phase: failure.phase,
          error: failure.message,
          transport: this.stats.transport,
          timeline: this.stats.marks,
        },
        'migration failed',
      );
      throw failure;
    }
  }

  /** Runs phase `name`; its failure names it (a MigrationError keeps its code). */
  private async phase<T>(name: OutgoingPhase, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (err) {
      if (MigrationError.is(err) && err.phase !== undefined) throw err;
      const e = MigrationError.is(err)
        ? err
        : this.cancelled
          ? this.cancelledError()
          : new MigrationError(
              'MIGRATION_TARGET_FAILED',
              `migration of VM ${this.o.vm.name} to ${this.o.target.address} failed: ${(err as Error).message}`,
              { cause: err },
            );
      throw new MigrationError(e.code, `${name}: ${e.message}`, {
        cause: e.cause ?? err,
        phase: name,
      });
    }
  }

  // ---- setup --------------------------------------------------------------------------------

  /**
   * Chooses the route and reaches the target: the prepared slot alone when it was prepared for
   * this very VM, else a stream whose header the target accepts (and whose answer may offer a
   * slot for the device state).
   */
  private async setup(modes: readonly BlockMode[]): Promise<Route> {
    const { vm, logger: log } = this.o;
    const s = this.stats;
    for (const [k, b] of vm.ramBlocks.entries()) {
      s.total += b.spec.size;
      if (modes[k] === 'ref') s.bypassed += b.spec.size;
    }
    const byReference = modes.every((m) => m === 'ref');
    const transport: Transport = chooseTransport(this.o.target, byReference);
    if (transport.kind === 'switchover-slot') {
      const prepared = openPreparedSlot(transport.slot, this.ownVm(), log);
      if (prepared !== null) {
        const { slot, expectation } = prepared;
        s.setupMs = s.mark('slotChecked');
        s.transport = 'switchover-slot';
        s.leaseMove = expectation.lease === 'channel' ? 'lease-channel' : 'armed';
        s.targetPrebuilt = true; // a slot is only prepared with the machine
        this.sm.transition('active');
        return { modes, byReference, stream: null, slot, postcopy: false };
      }
    }
    this.stream = await StreamToTarget.open({
      target: this.o.target.address,
      dataChannel: this.o.target.dataChannel,
      grpcClient: this.o.grpcClient,
      dataTls: this.o.dataTls ?? null,
      first: { frame: { $case: 'header', value: this.header(modes) } },
      checkCancelled: () => this.checkCancelled(),
      logger: log,
    });
    s.transport = this.stream.kind;
    s.mark('headerSent');
    const ack = await this.stream.reply(HEADER_TIMEOUT_MS, 'the header');
    if (ack.$case !== 'headerAck') StreamToTarget.unexpected(ack, 'a header ack');
    const slot =
      ack.value.handoffSlot !== '' && byReference
        ? openOfferedSlot(ack.value.handoffSlot, log)
        : null;
    const offered: LeaseMove | null = leaseMoveFromWire(ack.value.leaseMove);
    const postcopy = offered === 'page-source';
    if (postcopy && !this.o.capabilities['postcopy-ram']) {
      throw new MigrationError(
        'MIGRATION_BAD_STREAM',
        'the target wants to fill the shared RAM by post-copy, which this migration did not allow',
      );
    }
    if (postcopy) s.bypassed = 0; // filled by the target host's memstore, not handed over
    s.leaseMove = !modes.includes('ref')
      ? 'none'
      : postcopy
        ? 'page-source'
        : slot !== null
          ? (offered ?? 'armed')
          : 'stream';
    s.targetPrebuilt = ack.value.prebuilt;
    s.setupMs = s.mark('headerAcked');
    this.sm.transition('active');
    if (!byReference) {
      log.info(
        { modes, job: this.o.jobId, transport: s.transport },
        'migration: header accepted, pre-copy starts',
      );
    }
    return { modes, byReference, stream: this.stream, slot: postcopy ? null : slot, postcopy };
  }

  // ---- pre-copy -----------------------------------------------------------------------------

  /** Bulk pass, then dirty passes until what is left fits downtime-limit (main RAM copied). */
  private async precopy(r: Route): Promise<void> {
    const { vm } = this.o;
    const s = this.stats;
    const main = vm.ramBlocks[0]!;
    if (r.modes[0] === 'ref') return;
    await vm.harvestDirty(); // from here on every write shows in the next harvest
    let pass = { start: now(), bytes: this.pages.bytes }; // the bulk pass, then each dirty pass
    await this.pages.bulk(
      0,
      main,
      r.modes[0]!,
      vm.touchedPages.clone(),
      vm.untouchedAreZero && this.o.capabilities['zero-blocks'],
    );
    let bw = INITIAL_BANDWIDTH;
    for (;;) {
      this.checkCancelled();
      const t0 = now();
      const dirty = await vm.harvestDirty();
      s.syncs++;
      const count = dirty.popcount();
      s.remaining = count * PAGE_SIZE;
      s.expectedDowntimeMs = s.remaining / bw;
      if (s.expectedDowntimeMs <= this.o.parameters['downtime-limit']) {
        this.lastPass = dirty.clone();
        return;
      }
      this.converge({
        sentBytes: this.pages.bytes - pass.bytes,
        dirtiedBytes: count * PAGE_SIZE,
        ms: t0 - pass.start,
        trackedBytes: vm.touchedPages.popcount() * PAGE_SIZE, // the RAM the guest uses
      });
      if (s.iteration >= this.o.parameters['max-iterations']) throw this.notConverged(count);
      s.iteration++;
      pass = { start: t0, bytes: this.pages.bytes };
      const before = this.pages.bytes;
      await this.pages.bitmap(0, main, dirty);
      await this.pages.flush();
      const ms = Math.max(0.1, now() - t0);
      s.dirtyRate = Math.round((count * 1000) / ms);
      if (this.pages.bytes - before > 256 * 1024) bw = (this.pages.bytes - before) / ms;
      await r.stream!.send({
        frame: {
          $case: 'iteration',
          value: {
            iteration: s.iteration,
            remainingDirtyBytes: BigInt(count * PAGE_SIZE),
            final: false,
          },
        },
      });
    }
  }

  /** With auto-converge on: the throttle for the next pass, after `pass` did not converge. */
  private converge(pass: PassMeasure): void {
    if (!this.o.capabilities['auto-converge']) return;
    const p = this.o.parameters;
    const s = this.stats;
    const units = nextThrottle(s.throttleUnits, pass, {
      initialPercent: p['cpu-throttle-initial'],
      incrementPercent: p['cpu-throttle-increment'],
    });
    if (units === s.throttleUnits) return;
    s.throttleUnits = units;
    this.o.vm.setCpuThrottle(units);
    this.o.logger.info(
      { job: this.o.jobId, pass: s.iteration, throttlePercent: throttlePercent(units) },
      'migration: auto-converge throttles the vCPU',
    );
  }

  /** The guest back to full speed: when the migration ends, on every path. */
  private releaseThrottle(): void {
    if (this.stats.throttleUnits > 0) this.o.vm.setCpuThrottle(0);
  }

  private notConverged(count: number): MigrationError {
    const s = this.stats;
    const limit = this.o.parameters['downtime-limit'];
    const what =
      `VM ${this.o.vm.name}: ${count} pages still dirty after ${s.iteration} passes ` +
      `(expected pause ${s.expectedDowntimeMs.toFixed(1)} ms > downtime-limit ${limit} ms)`;
    const todo = this.o.capabilities['auto-converge']
      ? `, even with the vCPU throttled to ${throttlePercent(s.throttleUnits)} %; raise ` +
        'downtime-limit or max-iterations, or hand the RAM off by reference (a shared region ' +
        'with bypass-shared-memory)'
      : '; auto-converge is off: turn it on (--capability auto-converge=on) to throttle the ' +
        'guest until it converges, hand the RAM off by reference (a shared region with ' +
        'bypass-shared-memory), or raise downtime-limit or max-iterations';
    return new MigrationError('MIGRATION_NOT_CONVERGED', what + todo);
  }

  // ---- stop-and-copy ------------------------------------------------------------------------

  /**
   * Stops the vCPU. Through a slot its thread publishes the state there at the stop; otherwise
   * the final marker goes out the moment it stopped (the target starts moving the lease), then
   * the last dirty pages, the device state and `complete`.
   */
  private async stopAndCopy(r: Route, p: Progress): Promise<Stopped> {
    const { vm } = this.o;
    const s = this.stats;
    if (!this.sm.transitionIf('active', r.postcopy ? 'postcopy-active' : 'device')) {
      this.checkCancelled();
    }
    failpoint('outgoing-before-stop');
    const tStop = now();
    s.mark('pauseAsked', tStop);
    p.paused = true;
    let finalMarker: Promise<void> | undefined;
    let markerAt = 0;
    const sendFinalMarker = (): void => {
      markerAt = performance.timeOrigin + performance.now();
      finalMarker = r.stream!.send({
        frame: {
          $case: 'iteration',
          value: { iteration: s.iteration + 1, remainingDirtyBytes: 0n, final: true },
        },
      });
      finalMarker.catch(() => undefined); // awaited below
    };
    const publish = r.slot?.publishing;
    const stopped = await vm.pauseAndSave(() => {
      if (r.slot === null) sendFinalMarker();
    }, publish);
    s.mark('stateHere');
    s.markWall('stopped', stopped.pausedAtMs);
    if (stopped.published) {
      // The target's thread took over (or failed): await-resumed reads the slot.
      s.deviceBytes = r.slot!.stateLength;
      s.stateEncoding = publish!.compact ? 'compact' : 'container';
      s.markWall('statePublished', r.slot!.publishedAtMs);
      return { published: true, pausedAtMs: stopped.pausedAtMs, tStop };
    }
    if (r.slot !== null) {
      // Not published (the slot was given up, or the state could not be written): the stream
      // carries it, as if no slot had been offered.
      if (r.slot.announced) p.completeSent = true; // the target's thread may have moved the lease
      r.slot.abort();
      r.slot.close();
      r.slot = null;
      if (r.stream === null) {
        throw new MigrationError(
          'MIGRATION_TARGET_FAILED',
          `the target's switchover slot for VM ${vm.name} was given up at the stop (the target ` +
            'gave up the migration, or the device state could not be written into it); retry ' +
            'the migration',
        );
      }
      s.leaseMove = 'stream';
      sendFinalMarker();
    }
    const stream = r.stream!;
    const tPaused = now();
    await finalMarker;
    const blocks = vm.ramBlocks;
    if (r.modes[0] !== 'ref') {
      const pending = this.lastPass ?? new PageBitmap(vm.touchedPages.size);
      pending.or(await vm.harvestDirty());
      s.syncs++;
      await this.pages.bitmap(0, blocks[0]!, pending);
    }
    for (let k = 1; k < blocks.length; k++) {
      if (r.modes[k] === 'ref') continue;
      await this.pages.all(k, blocks[k]!, r.modes[k]!); // not dirty-tracked: sent while paused
    }
    await this.pages.flush();
    const tPages = now();
    s.remaining = 0;
    const state = encodeDeviceState(stopped.state);
    s.deviceBytes = state.length;
    s.stateEncoding = 'container';
    await stream.send({ frame: { $case: 'device', value: { container: state } } });
    s.mark('statePublished');
    this.checkCancelled();
    p.completeSent = true;
    const c = this.pages.counts;
    await stream.send({
      frame: {
        $case: 'complete',
        value: {
          stopTimeUnixUs: BigInt(Math.round(stopped.pausedAtMs * 1000)),
          pagesSent: BigInt(c.normal + c.zeroPages + c.duplicate),
        },
      },
    });
    return {
      published: false,
      pausedAtMs: stopped.pausedAtMs,
      tStop,
      tPaused,
      tPages,
      tSent: now(),
      markerAt,
    };
  }

  // ---- await-resumed ------------------------------------------------------------------------

  /** Waits for the target to run the guest; then the VM is postmigrate here and retires. */
  private async awaitResumed(r: Route, st: Stopped): Promise<MigrationInfo> {
    const s = this.stats;
    let ack: vmmStream.ResumedAck;
    const tPaused = st.published ? now() : st.tPaused;
    if (st.published) {
      const slot = r.slot!;
      // The target's vCPU thread marks the slot RUNNING once the lease moved and the guest runs:
      // the same word as the resumed ack, which then need not be waited for.
      const settled =
        r.stream === null
          ? await awaitTakeOver(slot, {
              timeoutMs: RESUME_TIMEOUT_MS,
              targetAlive: () => dataChannelAlive(this.o.target.dataChannel!),
              target: this.o.target.address,
              vm: this.o.vm.name,
            })
          : slot.state();
      if (settled === SlotState.RUNNING || settled === SlotState.HELD) {
        ack = { resumeTimeUnixUs: BigInt(Math.round(slot.runAtMs * 1000)), epoch: 0n };
      } else {
        ack = await this.resumedAck(r.stream!);
      }
      s.pauseParts = {
        direct: 1,
        pauseMs: tPaused - st.tStop,
        stopToStateMs: performance.timeOrigin + tPaused - st.pausedAtMs,
        targetMs: now() - tPaused,
      };
      slot.close();
    } else {
      ack = await this.resumedAck(r.stream!);
      s.pauseParts = {
        pauseMs: st.tPaused - st.tStop,
        // from the vCPU's own stop stamp: when this thread heard it and sent the final marker
        stopToMarkerMs: st.markerAt - st.pausedAtMs,
        stopToStateMs: performance.timeOrigin + st.tPaused - st.pausedAtMs,
        finalPagesMs: st.tPages - st.tPaused,
        deviceMs: st.tSent - st.tPages,
        targetMs: now() - st.tSent,
      };
    }
    return this.completed(r, ack, st.pausedAtMs);
  }

  private async resumedAck(stream: StreamToTarget): Promise<vmmStream.ResumedAck> {
    const resumed = await stream.reply(RESUME_TIMEOUT_MS, 'the resume');
    if (resumed.$case !== 'resumed') StreamToTarget.unexpected(resumed, 'the resumed ack');
    return resumed.value;
  }

  /** The target runs the guest: the VM is postmigrate here from now on, and retires. */
  private completed(r: Route, ack: vmmStream.ResumedAck, pausedAtMs: number): MigrationInfo {
    const { vm, logger: log } = this.o;
    const s = this.stats;
    const stopUs = Math.round(pausedAtMs * 1000);
    const runAtMs = Number(ack.resumeTimeUnixUs) / 1000;
    s.downtimeUs = Math.max(0, Number(ack.resumeTimeUnixUs) - stopUs);
    // Never run it here again: postmigrate at once; its thread and mappings go in the background.
    const blocks = vm.ramBlocks;
    void this.o.host.retire(vm, (b) => r.modes[blocks.indexOf(b)] === 'ref');
    s.markWall('targetRuns', runAtMs);
    if (r.postcopy) {
      log.info(
        { downtimeUs: s.downtimeUs, timeline: s.marks },
        'migration: the VM runs on the target; its memory follows (post-copy)',
      );
      return this.info();
    }
    s.totalMs = now() - s.started;
    this.sm.transition('completed');
    log.info(
      {
        totalMs: s.totalMs,
        downtimeUs: s.downtimeUs,
        bytes: s.transferred,
        iterations: s.iteration,
        modes: r.modes,
        route: this.info().route,
        deviceBytes: s.deviceBytes,
        // ms after MigrateVm began; and where the pause went (source clock)
        timeline: s.marks,
        downtimeParts: s.pauseParts,
      },
      'migration completed; the VM is postmigrate here',
    );
    this.stream?.close();
    return this.info();
  }

  // ---- post-copy ----------------------------------------------------------------------------

  /**
   * After the target runs the guest: follows the fill of its memory (the target's progress on
   * the stream) until every page is there. The VM is already retired here, so nothing that
   * happens now touches it: a failure only says where things stand.
   *
   * @throws MigrationError `MIGRATION_POSTCOPY_FAILED` (phase `postcopy`): the fill failed or the
   *   target stopped reporting; the VM runs (or ran) on the target
   */
  private async followPostcopy(stream: StreamToTarget, pausedAtMs: number): Promise<MigrationInfo> {
    const s = this.stats;
    const log = this.o.logger;
    for (;;) {
      let reply: Awaited<ReturnType<StreamToTarget['reply']>>;
      try {
        reply = await stream.reply(POSTCOPY_REPORT_TIMEOUT_MS, 'post-copy progress');
      } catch (err) {
        throw this.postcopyFailed(
          `the target stopped reporting the fill of VM ${this.o.vm.name}'s memory ` +
            `(${(err as Error).message}); the VM runs there: see \`vmctl vm show ${this.o.vm.name}\``,
          err,
        );
      }
      if (reply.$case === 'error') {
        throw this.postcopyFailed(`the target failed the post-copy: ${reply.value.message}`);
      }
      if (reply.$case !== 'postcopy') StreamToTarget.unexpected(reply, 'post-copy progress');
      const p = reply.value;
      s.postcopy = {
        requests: Number(p.demandPages),
        backgroundPages: Number(p.backgroundPages),
        presentPages: Number(p.presentPages),
        faultP50Us: Number(p.faultP50Us),
        faultP99Us: Number(p.faultP99Us),
        fillMs: s.postcopy?.fillMs ?? 0,
      };
      s.remaining = Math.max(0, Number(p.totalPages - p.presentPages)) * PAGE_SIZE;
      // The pages moved memstore to memstore, not on this stream: they count as the migration's.
      s.transferred = Number(p.presentPages) * PAGE_SIZE;
      const status = statusFromWire(p.status);
      if (status === 'completed') {
        s.postcopy = { ...s.postcopy, fillMs: Math.max(0, Math.round(Date.now() - pausedAtMs)) };
        s.remaining = 0;
        s.totalMs = now() - s.started;
        this.sm.transition('completed');
        log.info(
          { totalMs: s.totalMs, downtimeUs: s.downtimeUs, postcopy: s.postcopy },
          'migration completed: every page of the VM arrived on the target (post-copy)',
        );
        stream.close();
        return this.info();
      }
      if (status === 'failed') {
        throw this.postcopyFailed(`the fill of VM ${this.o.vm.name}'s memory failed: ${p.error}`);
      }
      if (status !== this.sm.status && this.sm.tryTransition(status)) {
        log.warn({ status, error: p.error }, 'migration: post-copy status changed');
      }
    }
  }

  private postcopyFailed(message: string, cause?: unknown): MigrationError {
    this.stats.totalMs = now() - this.stats.started;
    return new MigrationError('MIGRATION_POSTCOPY_FAILED', message, { cause, phase: 'postcopy' });
  }

  // ---- failure ------------------------------------------------------------------------------

  /**
   * Puts the source VM in the safe state after a failure and returns the error to report:
   * resumed unchanged when the lease cannot have moved (or this VM re-took it by a
   * compare-and-set on its own lease), paused + fenced when it moved, paused when memstore
   * cannot tell.
   */
  private async recover(err: unknown, p: Progress): Promise<MigrationError> {
    const { vm } = this.o;
    let failure = MigrationError.is(err)
      ? err
      : new MigrationError(
          'MIGRATION_TARGET_FAILED',
          `migration of VM ${vm.name} to ${this.o.target.address} failed: ${(err as Error).message}`,
          { cause: err },
        );
    if (this.cancelled && failure.code !== 'MIGRATION_NOT_CONVERGED') {
      failure = this.cancelledError(failure.phase);
    }
    if (!p.paused) return this.suffix(failure, 'the VM kept running, unchanged');
    const ctx = this.o.host.ramContext(vm.name);
    const refs = vm.ramBlocks.filter((_, k) => p.modes[k] === 'ref');
    for (const b of refs) {
      // Fence any late transfer by the target: re-take our own lease (epoch + 1).
      const ref = b.regionRef!;
      const outcome: RetakeOutcome = failpointHit('source-retake-unknown')
        ? { kind: 'unknown' }
        : await retakeLease(ctx, ref);
      if (outcome.kind === 'ours') {
        b.setLeaseEpoch?.(outcome.epoch);
        continue;
      }
      if (outcome.kind === 'unknown') {
        this.recheckLater(refs.slice(refs.indexOf(b)), p.wasRunning, ctx);
        return this.then(
          failure,
          'MIGRATION_UNCERTAIN',
          `memstore did not answer, so whether the target took the lease of region ` +
            `${ref.regionName} is unknown: VM ${vm.name} stays paused here and asks memstore ` +
            'again in the background; it resumes by itself once memstore confirms the lease is ' +
            'still its own, and never if the lease moved (then it runs on the target). ' +
            '`vmctl region show` shows the holder',
        );
      }
      vm.fence(`the lease of region ${ref.regionName} moved during the migration`);
      return this.then(
        failure,
        'MIGRATION_UNCERTAIN',
        `the lease of region ${ref.regionName} already moved to another holder: VM ${vm.name} ` +
          'stays paused and fenced here and must run on the target; destroy it here',
      );
    }
    if (refs.length === 0 && p.completeSent) {
      return this.then(
        failure,
        'MIGRATION_UNCERTAIN',
        `the target got everything but did not confirm it resumed: VM ${vm.name} stays paused ` +
          'here so it never runs twice; check the target and destroy one of the two copies',
      );
    }
    if (p.wasRunning) {
      try {
        await vm.resume();
      } catch (e) {
        return this.then(
          failure,
          'MIGRATION_FAILED',
          `the VM could not resume: ${(e as Error).message}`,
        );
      }
      return this.suffix(failure, 'the VM resumed here, unchanged');
    }
    return this.suffix(failure, 'the VM stays paused here, unchanged');
  }

  /**
   * Re-asks memstore in the background about the leases of `blocks` (from the first one whose
   * re-take got no answer on), see uncertain.ts.
   */
  private recheckLater(blocks: readonly RamBacking[], wasRunning: boolean, ctx: LeaseContext) {
    const { vm, logger: log } = this.o;
    this.recheck = recheckLeases({
      vm,
      leases: blocks.map((b) => {
        const ref = b.regionRef!;
        return {
          regionId: ref.regionId,
          regionName: ref.regionName,
          epoch: ref.epoch,
          setEpoch: (e: number) => b.setLeaseEpoch?.(e),
        };
      }),
      retake: (lease) => retakeLease(ctx, lease),
      resume: wasRunning,
      log,
      onEnd: (sentence) => (this.aftermath = sentence),
    });
  }

  /** `failure`, with what happened to the VM appended. */
  private suffix(e: MigrationError, what: string): MigrationError {
    return new MigrationError(e.code, `${e.message}; ${what}`, { cause: e.cause, phase: e.phase });
  }

  /** A new error of `code` that says `what` after `failure`'s message. */
  private then(
    failure: MigrationError,
    code: MigrationError['code'],
    what: string,
  ): MigrationError {
    return new MigrationError(code, `${failure.message}; ${what}`, {
      cause: failure,
      phase: failure.phase,
    });
  }

  private cancelledError(phase?: OutgoingPhase): MigrationError {
    const what = `the migration of VM ${this.o.vm.name} was cancelled`;
    return new MigrationError(
      'MIGRATION_CANCELLED',
      phase !== undefined ? `${phase}: ${what}` : what,
      {
        phase,
      },
    );
  }

  private checkCancelled(): void {
    if (this.cancelled) throw this.cancelledError();
  }

  // ---- the stream's content -----------------------------------------------------------------

  /** This VM as a slot's expectation describes it. */
  private ownVm(): { holder: string; blocks: (SwitchoverBlock | null)[] } {
    const { vm } = this.o;
    return {
      holder: holderOf(this.o.host.ramContext(vm.name)),
      blocks: vm.ramBlocks.map((b) => {
        const ref = b.regionRef;
        return ref === null
          ? null
          : {
              id: b.spec.id,
              regionId: ref.regionId,
              regionName: ref.regionName,
              identity: ref.identity,
              epoch: ref.epoch,
              size: b.spec.size,
              guestBase: b.spec.guestBase,
            };
      }),
    };
  }

  private header(modes: readonly BlockMode[]): vmmStream.StreamHeader {
    const { vm } = this.o;
    const spec = specToPb(vm.spec);
    return {
      formatMajor: STREAM_FORMAT.major,
      formatMinor: HEADER_FORMAT_MINOR,
      token: this.o.token,
      jobId: this.o.jobId,
      capabilities: capabilitiesToWire(this.o.capabilities),
      spec,
      sourceVmmId: this.o.host.vmmId,
      maxPostcopyBandwidth: BigInt(this.o.parameters['max-postcopy-bandwidth']),
      blocks: vm.ramBlocks.map((b, k) => {
        const ref = b.regionRef;
        return {
          index: k,
          id: b.spec.id,
          guestBase: BigInt(b.spec.guestBase),
          size: BigInt(b.spec.size),
          backend: spec.ram[k]!.backend,
          regionRef:
            modes[k] === 'ref' && ref !== null
              ? {
                  regionId: ref.regionId,
                  epoch: BigInt(ref.epoch),
                  size: BigInt(ref.size),
                  identity: ref.identity,
                  memstore: ref.memstore,
                }
              : undefined,
          templateRef:
            modes[k] === 'template' && ref !== null
              ? {
                  templateId: ref.regionId,
                  size: BigInt(ref.size),
                  identity: ref.identity,
                  memstore: ref.memstore,
                }
              : undefined,
        };
      }),
    };
  }

  /** Sends a page frame, paced to max-bandwidth. */
  private async sendPages(frame: vmmStream.PageFrame): Promise<void> {
    this.checkCancelled();
    const size = frame.data.length + 16 * frame.runs.length;
    await this.stream!.send({ frame: { $case: 'pages', value: frame } });
    const { windowBytes, windowMs } = this.stats.sent(size);
    const cap = this.o.parameters['max-bandwidth'];
    if (cap > 0) {
      const due = (windowBytes / cap) * 1000;
      if (due > windowMs) await new Promise((r) => setTimeout(r, due - windowMs));
    }
  }
}
