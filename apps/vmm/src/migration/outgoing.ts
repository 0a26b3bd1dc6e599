/**
 * The source side of a migration: opens MigrationService.Incoming on the target, sends the
 * header, pre-copies copied blocks, stops the vCPU, sends the final dirty pages and device
 * state, and waits for the target's `resumed`. Failure rules (DESIGN.md, "Leases"): before the
 * lease can have moved the VM resumes unchanged; once it moved the VM never resumes here; when
 * it cannot tell, it stays paused and says so.
 */
import { status as grpcStatus } from '@grpc/grpc-js';
import { PageBitmap } from '@handoff/bitmap';
import type { vmmStream } from '@handoff/proto';
import {
  MigrationStateMachine,
  emptyMigrationInfo,
  type MigrationCapabilities,
  type MigrationInfo,
  type MigrationParameters,
} from '@handoff/qapi';
import { capabilitiesToWire } from '@handoff/qapi/wire';
import { RemoteError, type Logger } from '@handoff/service';
import { specToPb } from '../api/convert.js';
import { byId, holderOf } from '../ram/backing.js';
import type { RamBacking } from '../ram/index.js';
import { encodeDeviceState } from '../snapshot/index.js';
import type { VmHost } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';
import { grpcOutgoing, type OutgoingChannel } from './transport/channel.js';
import { connectDataChannel, dataChannelAlive } from './transport/data-channel.js';
import { MigrationError } from '../model/migration-error.js';
import { HandoffSlot, SlotState, type SlotExpectation } from '../switchover/slot.js';
import { PageSender } from './pages/page-sender.js';
import { PAGE_SIZE, STREAM_FORMAT, type BlockMode } from './pages/frames.js';

/** How long the target may take to answer the header, and to resume after completion. */
const HEADER_TIMEOUT_MS = 15_000;
const RESUME_TIMEOUT_MS = 30_000;
/** How often a source waiting on a hand-off slot looks whether the target still lives. */
const SLOT_PROBE_MS = 100;
/** How long a failed source waits for a failing target to hand a taken lease back. */
const HANDBACK_WAIT_MS = 3000;
/** Bandwidth assumed before the first pass measured one (bytes/ms; 400 MB/s). */
const INITIAL_BANDWIDTH = 400_000;

export interface OutgoingOptions {
  readonly vm: Vm;
  /** A (possibly shared, already connected) client of the target's MigrationService. */
  readonly client: vmmStream.MigrationServiceClient;
  readonly host: VmHost;
  readonly jobId: string;
  readonly targetAddress: string;
  /** The target's data channel; '' (or unreachable) → the gRPC stream. */
  readonly targetDataAddress?: string;
  /** The target's hand-off slot from PrepareIncoming; '' → none (see {@link OutgoingMigration.run}). */
  readonly targetHandoffSlot?: string;
  readonly token: string;
  readonly capabilities: MigrationCapabilities;
  readonly parameters: MigrationParameters;
  readonly logger: Logger;
}

const now = (): number => performance.now();

/** One outgoing migration of one VM; {@link OutgoingMigration.run} resolves with the final info. */
export class OutgoingMigration {
  private readonly sm = new MigrationStateMachine();
  private readonly started = now();
  private setupMs = 0;
  private totalMs = 0;
  private downtimeUs = 0;
  private expectedDowntimeMs = 0;
  private iteration = 0;
  private deviceBytes = 0;
  /** How the device state travelled: the compact hand-off layout, or a snapshot container. */
  private stateEncoding: 'compact' | 'container' = 'container';
  private transferred = 0;
  private remaining = 0;
  private total = 0;
  private readonly pages = new PageSender((f) => this.sendPages(f));
  private bypassed = 0;
  private dirtyRate = 0;
  private mbps = 0;
  private syncs = 0;
  private cancelled = false;
  private call: OutgoingChannel | undefined;
  private readonly replies: vmmStream.IncomingResponse[] = [];
  private streamError: Error | null = null;
  private wake: (() => void) | undefined;
  private sentAt = 0;
  private sentBytes = 0;
  /** Milestones (ms after the start) and the parts of the pause, logged once at the end. */
  private readonly timeline: Record<string, number> = {};
  private parts: Record<string, number> = {};

  constructor(private readonly o: OutgoingOptions) {}

  /** Progress now (the final info once terminal). */
  info(): MigrationInfo {
    const done = this.sm.isTerminal();
    return {
      ...emptyMigrationInfo(this.sm.status),
      status: this.sm.status,
      ram: {
        transferred: this.transferred,
        remaining: this.remaining,
        total: this.total,
        duplicate: this.pages.counts.duplicate,
        zeroPages: this.pages.counts.zeroPages,
        normal: this.pages.counts.normal,
        normalBytes: this.pages.counts.normal * PAGE_SIZE,
        dirtyPagesRate: Math.round(this.dirtyRate),
        mbps: this.mbps,
        dirtySyncCount: this.syncs,
        bypassedBytes: this.bypassed,
      },
      // The wire carries whole milliseconds; the logs carry the fractions.
      totalTimeMs: Math.round(done ? this.totalMs : now() - this.started),
      setupTimeMs: Math.round(this.setupMs),
      expectedDowntimeMs: Math.round(this.expectedDowntimeMs),
      downtimeUs: this.downtimeUs,
      iteration: this.iteration,
      deviceBytes: this.deviceBytes,
      ...(this.sm.errorDesc !== undefined ? { errorDesc: this.sm.errorDesc } : {}),
    };
  }

  get terminal(): boolean {
    return this.sm.isTerminal();
  }

  /** Asks the migration to stop; honoured until the device phase ends (then it completes). */
  cancel(): void {
    if (this.sm.isTerminal() || this.cancelled) return;
    if (!this.sm.tryTransition('cancelling')) return;
    this.cancelled = true;
    this.call?.close();
    this.wake?.();
  }

  /** Runs the migration. @throws MigrationError (the VM's state is as the code says) */
  async run(): Promise<MigrationInfo> {
    const { vm, logger: log } = this.o;
    const wasRunning = vm.currentState === 'running';
    if (!wasRunning && vm.currentState !== 'paused') {
      throw new MigrationError(
        'MIGRATION_FAILED',
        `cannot migrate VM ${vm.name}: it is ${vm.currentState}; only running or paused VMs migrate`,
      );
    }
    this.sm.transition('setup');
    let paused = false;
    let completeSent = false;
    let slot: HandoffSlot | null = null;
    const blocks = vm.ramBlocks;
    const modes = blocks.map((b) => this.modeOf(b));
    for (const [k, b] of blocks.entries()) {
      this.total += b.spec.size;
      if (modes[k] === 'ref') this.bypassed += b.spec.size;
    }
    const byReference = modes.every((m) => m === 'ref');
    try {
      // With the slot PrepareIncoming prepared for this very VM, the vCPU threads hand it over
      // through the slot alone: no stream, no header, no round trip to the target's main thread.
      // Only with the target's data channel to look at: no stream tells when the target dies.
      const prepared = this.o.targetHandoffSlot ?? '';
      const probe = this.o.targetDataAddress ?? '';
      if (byReference && prepared !== '' && probe !== '') slot = this.preparedSlot(prepared);
      if (slot !== null) {
        this.setupMs = this.mark('slotChecked');
      } else {
        await this.open({ frame: { $case: 'header', value: this.header(modes) } });
        this.mark('headerSent');
        const ack = await this.reply(HEADER_TIMEOUT_MS, 'the header');
        if (ack.$case !== 'headerAck') this.unexpected(ack, 'a header ack');
        if (ack.value.handoffSlot !== '' && byReference) {
          slot = this.openSlot(ack.value.handoffSlot);
        }
        this.setupMs = this.mark('headerAcked');
      }
      this.sm.transition('active');
      // Nothing to pre-copy: this line would only delay the stop (the end logs the same).
      if (!byReference) {
        log.info(
          { modes, job: this.o.jobId, stream: this.call!.kind },
          'migration: header accepted, pre-copy starts',
        );
      }

      // Pre-copy: bulk pass, then dirty passes until the rest fits downtime-limit.
      const pending = new PageBitmap(vm.touchedPages.size);
      const framer = this.pages; // one buffer for every pass
      if (modes[0] !== 'ref') {
        await vm.harvestDirty(); // from here on every write shows in the next harvest
        await framer.bulk(
          0,
          blocks[0]!,
          modes[0]!,
          vm.touchedPages.clone(),
          vm.untouchedAreZero && this.o.capabilities['zero-blocks'],
        );
        let bw = INITIAL_BANDWIDTH;
        for (;;) {
          this.checkCancelled();
          const t0 = now();
          const dirty = await vm.harvestDirty();
          this.syncs++;
          const count = dirty.popcount();
          this.remaining = count * PAGE_SIZE;
          this.expectedDowntimeMs = this.remaining / bw;
          if (this.expectedDowntimeMs <= this.o.parameters['downtime-limit']) {
            pending.or(dirty);
            break;
          }
          if (this.iteration >= this.o.parameters['max-iterations']) {
            throw new MigrationError(
              'MIGRATION_NOT_CONVERGED',
              `VM ${vm.name}: ${count} pages still dirty after ${this.iteration} passes ` +
                `(expected pause ${this.expectedDowntimeMs.toFixed(1)} ms > downtime-limit ` +
                `${this.o.parameters['downtime-limit']} ms); raise downtime-limit or max-iterations`,
            );
          }
          this.iteration++;
          const before = framer.bytes;
          await framer.bitmap(0, blocks[0]!, dirty);
          await framer.flush();
          const ms = Math.max(0.1, now() - t0);
          this.dirtyRate = Math.round((count * 1000) / ms);
          if (framer.bytes - before > 256 * 1024) bw = (framer.bytes - before) / ms;
          await this.send({
            frame: {
              $case: 'iteration',
              value: {
                iteration: this.iteration,
                remainingDirtyBytes: BigInt(count * PAGE_SIZE),
                final: false,
              },
            },
          });
        }
      }
      this.checkCancelled();

      // Stop and copy.
      if (!this.sm.transitionIf('active', 'device')) this.checkCancelled();
      const tStop = now();
      this.mark('pauseAsked', tStop);
      paused = true; // from here a failure checks where the lease is before resuming
      let finalMarker: Promise<void> | undefined;
      let markerAt = 0; // epoch ms
      const sendFinalMarker = (): void => {
        markerAt = performance.timeOrigin + performance.now();
        finalMarker = this.send({
          frame: {
            $case: 'iteration',
            value: { iteration: this.iteration + 1, remainingDirtyBytes: 0n, final: true },
          },
        });
        finalMarker.catch(() => undefined); // awaited below
      };
      // Sent the moment the vCPU stopped: the target starts the lease hand-off now. With a
      // hand-off slot the target's vCPU thread heard the stop first, and already took over.
      const handoff = slot?.handoff;
      const stopped = await vm.pauseAndSave(() => {
        if (slot === null) sendFinalMarker();
      }, handoff);
      this.mark('stateHere');
      if (stopped.handedOff) {
        // Published into the slot (only ever offered one): the target's thread took over.
        this.deviceBytes = slot!.stateLength;
        this.stateEncoding = handoff!.compact ? 'compact' : 'container';
        return await this.finishDirect(slot!, stopped.pausedAtMs, modes, tStop);
      }
      if (slot !== null) {
        // Not published (the slot was given up, or the state could not be written): the
        // stream carries it, as if no slot had been offered.
        if (slot.announced) completeSent = true; // the target's thread may have moved the lease
        slot.abort();
        slot.close();
        slot = null;
        if (this.call === undefined) {
          throw new MigrationError(
            'MIGRATION_TARGET_FAILED',
            `the target's hand-off slot for VM ${vm.name} was given up at the stop (the target ` +
              'gave up the migration, or the device state could not be written into it); retry ' +
              'the migration',
          );
        }
        sendFinalMarker();
      }
      const stopUs = Math.round(stopped.pausedAtMs * 1000);
      const tPaused = now();
      await finalMarker;
      if (modes[0] !== 'ref') {
        pending.or(await vm.harvestDirty());
        this.syncs++;
        await framer.bitmap(0, blocks[0]!, pending);
      }
      for (let k = 1; k < blocks.length; k++) {
        if (modes[k] === 'ref') continue;
        await framer.all(k, blocks[k]!, modes[k]!); // not dirty-tracked: sent while paused
      }
      await framer.flush();
      const tPages = now();
      this.remaining = 0;
      const state = encodeDeviceState(stopped.state);
      this.deviceBytes = state.length;
      await this.send({ frame: { $case: 'device', value: { container: state } } });
      this.checkCancelled();
      completeSent = true;
      await this.send({
        frame: {
          $case: 'complete',
          value: {
            stopTimeUnixUs: BigInt(stopUs),
            pagesSent: BigInt(
              this.pages.counts.normal + this.pages.counts.zeroPages + this.pages.counts.duplicate,
            ),
          },
        },
      });
      const tSent = now();
      const resumed = await this.reply(RESUME_TIMEOUT_MS, 'the resume');
      this.parts = {
        pauseMs: tPaused - tStop,
        // from the vCPU's own stop stamp: when this thread heard it and sent the final marker
        stopToMarkerMs: markerAt - stopped.pausedAtMs,
        stopToStateMs: performance.timeOrigin + tPaused - stopped.pausedAtMs,
        finalPagesMs: tPages - tPaused,
        deviceMs: tSent - tPages,
        targetMs: now() - tSent,
      };
      if (resumed.$case !== 'resumed') this.unexpected(resumed, 'the resumed ack');
      return this.completed(resumed.value, stopUs, modes);
    } catch (err) {
      this.close();
      // Once the stop was announced, the target may take the lease: recover() checks it.
      if (slot?.announced === true) completeSent = true;
      slot?.close();
      const failure = await this.recover(err, { paused, completeSent, wasRunning, modes });
      this.totalMs = now() - this.started;
      const status =
        this.cancelled && failure.code === 'MIGRATION_CANCELLED' ? 'cancelled' : 'failed';
      if (!this.sm.tryTransition(status, { errorDesc: failure.message })) {
        this.sm.tryTransition('failed', { errorDesc: failure.message });
      }
      this.failureDesc = failure.message;
      log.warn(
        {
          code: failure.code,
          error: failure.message,
          stream: this.transport,
          timeline: this.timeline,
        },
        'migration failed',
      );
      throw failure;
    }
  }

  /**
   * Direct hand-off: the source's vCPU thread published the state and the target's took over
   * (or failed); the target's answer decides. No frame is sent after the header.
   */
  private async finishDirect(
    slot: HandoffSlot,
    pausedAtMs: number,
    modes: BlockMode[],
    tStop: number,
  ): Promise<MigrationInfo> {
    const tPaused = now();
    // The target's vCPU thread marks the slot RUNNING once the lease moved and the guest runs:
    // the same word as the resumed ack, which then need not be waited for.
    let ack: vmmStream.ResumedAck;
    const settled = this.call === undefined ? await this.slotOutcome(slot) : slot.state();
    if (settled === SlotState.RUNNING || settled === SlotState.HELD) {
      ack = { resumeTimeUnixUs: BigInt(Math.round(slot.runAtMs * 1000)), epoch: 0n };
    } else {
      const resumed = await this.reply(RESUME_TIMEOUT_MS, 'the resume');
      if (resumed.$case !== 'resumed') this.unexpected(resumed, 'the resumed ack');
      ack = resumed.value;
    }
    this.parts = {
      direct: 1,
      pauseMs: tPaused - tStop,
      stopToStateMs: performance.timeOrigin + tPaused - pausedAtMs,
      targetMs: now() - tPaused,
    };
    slot.close();
    return this.completed(ack, Math.round(pausedAtMs * 1000), modes);
  }

  /**
   * The slot's outcome when no stream carries the target's answer: RUNNING or HELD (the lease
   * moved, the VM is the target's). Usually already there (the vCPU thread waited for it).
   *
   * @throws MigrationError `MIGRATION_TARGET_FAILED` when the target's thread failed, or did not
   *   end the hand-off within {@link RESUME_TIMEOUT_MS}
   */
  private async slotOutcome(slot: HandoffSlot): Promise<number> {
    const deadline = now() + RESUME_TIMEOUT_MS;
    const probe = this.o.targetDataAddress ?? ''; // set whenever a slot is used alone
    let probedAt = now();
    const failed = (why: string): never => {
      throw new MigrationError(
        'MIGRATION_TARGET_FAILED',
        `the target at ${this.o.targetAddress} ${why} VM ${this.o.vm.name} through the hand-off slot`,
      );
    };
    for (;;) {
      const s = slot.state();
      if (s === SlotState.RUNNING || s === SlotState.HELD) return s;
      if (s === SlotState.FAILED) failed('could not take over (its log says why)');
      if (now() >= deadline) failed(`did not end within ${RESUME_TIMEOUT_MS} ms its take-over of`);
      // No stream breaks when the target dies: look whether it still listens, now and then.
      if (now() - probedAt >= SLOT_PROBE_MS) {
        const alive = await dataChannelAlive(probe);
        probedAt = now();
        const after = slot.state();
        if (after === SlotState.RUNNING || after === SlotState.HELD) return after;
        if (!alive) failed('is gone (its data channel refuses connections) amid its take-over of');
      }
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** The target runs the guest: the VM is postmigrate here from now on. */
  private completed(ack: vmmStream.ResumedAck, stopUs: number, modes: BlockMode[]): MigrationInfo {
    const { vm, logger: log } = this.o;
    const blocks = vm.ramBlocks;
    this.downtimeUs = Math.max(0, Number(ack.resumeTimeUnixUs) - stopUs);
    // Never run it here again (the VM is postmigrate at once; its thread and mappings go in the
    // background, and a destroy waits for them).
    void this.o.host.retire(vm, (b) => modes[blocks.indexOf(b)] === 'ref');
    this.totalMs = now() - this.started;
    this.sm.transition('completed');
    // The stop and the target's start on the source's clock (wall stamps of both vCPUs).
    this.timeline.stopped = stopUs / 1000 - performance.timeOrigin - this.started;
    this.timeline.targetRuns = this.timeline.stopped + this.downtimeUs / 1000;
    log.info(
      {
        totalMs: this.totalMs,
        downtimeUs: this.downtimeUs,
        bytes: this.transferred,
        iterations: this.iteration,
        modes,
        stream: this.transport,
        stateEncoding: this.stateEncoding,
        deviceBytes: this.deviceBytes,
        // ms after MigrateVm began; and where the pause went (source clock)
        timeline: this.timeline,
        downtimeParts: this.parts,
      },
      'migration completed; the VM is postmigrate here',
    );
    this.close();
    return this.info();
  }

  private failureDesc: string | undefined;

  /** What carried the migration, for logs: `data-channel`, `grpc`, or `handoff-slot` alone. */
  private get transport(): string {
    return this.call?.kind ?? 'handoff-slot';
  }

  /** Records milestone `what` (at `at`, default now) in the timeline; returns its time after the start. */
  private mark(what: string, at = now()): number {
    const ms = at - this.started;
    this.timeline[what] = ms;
    return ms;
  }

  /** The error description of a failed migration (also in {@link info}). */
  get error(): string | undefined {
    return this.sm.errorDesc ?? this.failureDesc;
  }

  // ---- failure handling ---------------------------------------------------------------------

  /**
   * Puts the source VM in the safe state after a failure and returns the error to report:
   * resumed unchanged when the lease cannot have moved (or this VM re-took it by a
   * compare-and-set on its own lease), paused + fenced when it moved, paused when memstore
   * cannot tell.
   */
  private async recover(
    err: unknown,
    s: { paused: boolean; completeSent: boolean; wasRunning: boolean; modes: BlockMode[] },
  ): Promise<MigrationError> {
    const { vm } = this.o;
    let failure =
      err instanceof MigrationError
        ? err
        : this.cancelled
          ? new MigrationError(
              'MIGRATION_CANCELLED',
              `the migration of VM ${vm.name} was cancelled`,
            )
          : new MigrationError(
              'MIGRATION_TARGET_FAILED',
              `migration of VM ${vm.name} to ${this.o.targetAddress} failed: ${(err as Error).message}`,
              { cause: err },
            );
    if (this.cancelled && !MigrationError.is(failure, 'MIGRATION_NOT_CONVERGED')) {
      failure = new MigrationError(
        'MIGRATION_CANCELLED',
        `the migration of VM ${vm.name} was cancelled`,
      );
    }
    if (!s.paused) return this.suffix(failure, 'the VM kept running, unchanged');
    const refs = vm.ramBlocks.filter((_, k) => s.modes[k] === 'ref');
    if (refs.length > 0) {
      // Fence any late TransferLease by the target: re-take our own lease (epoch + 1).
      const ctx = this.o.host.ramContext(vm.name);
      const holder = holderOf(ctx);
      for (const b of refs) {
        const ref = b.regionRef!;
        const outcome = await this.retakeLease(b, holder);
        if (outcome === 'unknown') {
          return new MigrationError(
            'MIGRATION_UNCERTAIN',
            `${failure.message}; memstore did not answer, so whether the target took the lease ` +
              `of region ${ref.regionName} is unknown: VM ${vm.name} stays paused here; check the ` +
              'holder with ValidateLease (`vmctl region show`) and resume the VM where memstore ' +
              'says it belongs (ResumeVm checks the lease first)',
            { cause: failure },
          );
        }
        if (outcome === 'moved') {
          vm.fence(`the lease of region ${ref.regionName} moved during the migration`);
          return new MigrationError(
            'MIGRATION_UNCERTAIN',
            `${failure.message}; the lease of region ${ref.regionName} already moved to another ` +
              `holder: VM ${vm.name} stays paused and fenced here and must run on the target; ` +
              'destroy it here',
            { cause: failure },
          );
        }
      }
    } else if (s.completeSent) {
      return new MigrationError(
        'MIGRATION_UNCERTAIN',
        `${failure.message}; the target got everything but did not confirm it resumed: VM ` +
          `${vm.name} stays paused here so it never runs twice; check the target and destroy ` +
          'one of the two copies',
        { cause: failure },
      );
    }
    if (s.wasRunning) {
      try {
        await vm.resume();
      } catch (e) {
        return new MigrationError(
          'MIGRATION_FAILED',
          `${failure.message}; the VM could not resume: ${(e as Error).message}`,
          { cause: failure },
        );
      }
      return this.suffix(failure, 'the VM resumed here, unchanged');
    }
    return this.suffix(failure, 'the VM stays paused here, unchanged');
  }

  /**
   * Compare-and-set of our own lease to ourselves (epoch + 1): afterwards no transfer that
   * presents the old epoch can succeed. When the epoch moved but the lease is ours again (a
   * failing target handed it back), the CAS is retried at the current epoch; a lease held
   * elsewhere is watched for {@link HANDBACK_WAIT_MS} before it counts as moved.
   */
  private async retakeLease(b: RamBacking, holder: string): Promise<'ours' | 'moved' | 'unknown'> {
    const ctx = this.o.host.ramContext(this.o.vm.name);
    const ref = b.regionRef!;
    const opts = { deadlineMs: ctx.deadlineMs };
    const unreachable = (e: unknown): boolean =>
      !(e instanceof RemoteError) ||
      e.status === grpcStatus.UNAVAILABLE ||
      e.status === grpcStatus.DEADLINE_EXCEEDED;
    const cas = async (epoch: bigint): Promise<void> => {
      const res = await ctx.leases().transferLease(
        {
          region: byId(ref.regionId),
          fromHolder: holder,
          expectedEpoch: epoch,
          toHolder: holder,
        },
        opts,
      );
      b.setLeaseEpoch?.(Number(res.lease!.epoch));
    };
    try {
      await cas(BigInt(ref.epoch));
      return 'ours';
    } catch (e) {
      if (unreachable(e)) return 'unknown';
    }
    // The target takes the lease when the final marker arrives; a target that fails after that
    // hands it back. Wait a little for that before calling the lease moved for good.
    const deadline = now() + HANDBACK_WAIT_MS;
    for (;;) {
      try {
        const res = await ctx
          .leases()
          .validateLease({ region: byId(ref.regionId), holder, epoch: BigInt(ref.epoch) }, opts);
        if (res.current?.holder === holder) {
          await cas(res.current.epoch);
          return 'ours';
        }
      } catch (e) {
        if (unreachable(e)) return 'unknown';
      }
      if (now() >= deadline) return 'moved';
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private suffix(e: MigrationError, what: string): MigrationError {
    return new MigrationError(e.code, `${e.message}; ${what}`, { cause: e.cause });
  }

  // ---- sending ------------------------------------------------------------------------------

  private modeOf(b: RamBacking): BlockMode {
    const bypass = this.o.capabilities['bypass-shared-memory'];
    if (bypass && b.spec.backend === 'shared' && b.regionRef !== null) return 'ref';
    if (bypass && b.spec.backend === 'clone' && b.regionRef !== null) return 'template';
    return 'copy';
  }

  private header(modes: BlockMode[]): vmmStream.StreamHeader {
    const { vm } = this.o;
    const blocks = vm.ramBlocks;
    const spec = specToPb(vm.spec);
    return {
      formatMajor: STREAM_FORMAT.major,
      formatMinor: STREAM_FORMAT.minor,
      token: this.o.token,
      jobId: this.o.jobId,
      capabilities: capabilitiesToWire(this.o.capabilities),
      spec,
      sourceVmmId: this.o.host.vmmId,
      blocks: blocks.map((b, k) => {
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

  private async sendPages(frame: vmmStream.PageFrame): Promise<void> {
    this.checkCancelled();
    const size = frame.data.length + 16 * frame.runs.length;
    await this.send({ frame: { $case: 'pages', value: frame } });
    this.transferred += size;
    // max-bandwidth: sleep when ahead of the allowed rate.
    const cap = this.o.parameters['max-bandwidth'];
    const t = now();
    if (this.sentAt === 0 || t - this.sentAt > 1000) {
      this.sentAt = t;
      this.sentBytes = 0;
    }
    this.sentBytes += size;
    const elapsed = t - this.sentAt;
    if (elapsed > 0) this.mbps = (this.sentBytes * 8) / (elapsed * 1000);
    if (cap > 0) {
      const due = (this.sentBytes / cap) * 1000;
      if (due > elapsed) await new Promise((r) => setTimeout(r, due - elapsed));
    }
  }

  // ---- the stream ---------------------------------------------------------------------------

  /**
   * Opens the stream with its first request: on the target's data channel when it has one we
   * reach, else on gRPC.
   */
  private async open(first: vmmStream.IncomingRequest): Promise<void> {
    const events = {
      reply: (r: vmmStream.IncomingResponse): void => {
        this.replies.push(r);
        this.wake?.();
      },
      broken: (e: Error): void => {
        this.streamError ??= e;
        this.wake?.();
      },
    };
    const data = this.o.targetDataAddress ?? '';
    if (data !== '') {
      try {
        this.call = await connectDataChannel(data, events, first);
        return;
      } catch (err) {
        this.o.logger.warn(
          { error: (err as Error).message },
          'migration: the data channel is unreachable; using the gRPC stream',
        );
      }
    }
    this.checkCancelled();
    this.call = grpcOutgoing(this.o.client, events);
    await this.send(first);
  }

  /**
   * Maps the slot PrepareIncoming prepared, if it is armed and was prepared for this very VM:
   * the same lease holder and, block by block, the same region, identity, epoch and size. Null
   * (the migration uses the stream) otherwise, saying why.
   */
  private preparedSlot(path: string): HandoffSlot | null {
    const slot = this.openSlot(path);
    if (slot === null) return null;
    let why: string | null;
    try {
      why = slot.state() === SlotState.ARMED ? this.unlike(slot.expectation()) : 'not armed';
    } catch (err) {
      why = (err as Error).message;
    }
    if (why === null) return slot;
    slot.close();
    this.o.logger.warn(
      { why },
      "the target's hand-off slot does not fit this VM: the migration uses the stream",
    );
    return null;
  }

  /** How a slot's expectation differs from this VM, or null when it is this VM. */
  private unlike(e: SlotExpectation | null): string | null {
    const { vm } = this.o;
    if (e === null) return 'it names no VM';
    const holder = holderOf(this.o.host.ramContext(vm.name));
    if (e.from !== holder) return `it was prepared for ${e.from}, not ${holder}`;
    const blocks = vm.ramBlocks;
    if (e.blocks.length !== blocks.length) return `it lists ${e.blocks.length} blocks`;
    for (const [k, b] of blocks.entries()) {
      const x = e.blocks[k]!;
      const ref = b.regionRef;
      const same =
        ref !== null &&
        x.id === b.spec.id &&
        x.regionId === ref.regionId &&
        x.identity === ref.identity &&
        x.epoch === ref.epoch &&
        x.size === b.spec.size &&
        x.guestBase === b.spec.guestBase;
      if (!same) return `block ${b.spec.id}: another region, identity, epoch or size`;
    }
    return null;
  }

  /** Maps the hand-off slot the target offered; null (the stream carries the state) if unusable. */
  private openSlot(path: string): HandoffSlot | null {
    try {
      return HandoffSlot.open(path);
    } catch (err) {
      this.o.logger.warn(
        { error: (err as Error).message },
        "cannot use the target's hand-off slot: the device state goes on the stream",
      );
      return null;
    }
  }

  private close(): void {
    this.call?.close();
  }

  private async send(req: vmmStream.IncomingRequest): Promise<void> {
    const call = this.call!;
    this.failIfBroken();
    if (!call.write(req)) {
      await call.drained();
      this.failIfBroken();
    }
    // A StreamError may arrive at any time: stop sending at once.
    const first = this.replies[0];
    if (first?.reply?.$case === 'error') this.unexpected(first.reply, 'no error');
  }

  private failIfBroken(): void {
    this.checkCancelled();
    const first = this.replies[0];
    if (first?.reply?.$case === 'error') this.unexpected(first.reply, 'no error');
    if (this.streamError !== null) {
      throw new MigrationError(
        'MIGRATION_TARGET_FAILED',
        `the stream to ${this.o.targetAddress} broke: ${this.streamError.message}`,
      );
    }
  }

  private async reply(
    timeoutMs: number,
    what: string,
  ): Promise<NonNullable<vmmStream.IncomingResponse['reply']>> {
    const deadline = now() + timeoutMs;
    for (;;) {
      const r = this.replies.shift();
      if (r?.reply !== undefined) return r.reply;
      this.failIfBroken();
      const left = deadline - now();
      if (left <= 0) {
        throw new MigrationError(
          'MIGRATION_TARGET_FAILED',
          `the target at ${this.o.targetAddress} did not answer ${what} within ${timeoutMs} ms`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  private unexpected(
    reply: NonNullable<vmmStream.IncomingResponse['reply']>,
    wanted: string,
  ): never {
    if (reply.$case === 'error') {
      throw new MigrationError(
        'MIGRATION_TARGET_FAILED',
        `the target refused the migration: ${reply.value.code}: ${reply.value.message}`,
      );
    }
    throw new MigrationError(
      'MIGRATION_FAILED',
      `the target sent ${reply.$case} where ${wanted} was due`,
    );
  }

  private checkCancelled(): void {
    if (this.cancelled) {
      throw new MigrationError(
        'MIGRATION_CANCELLED',
        `the migration of VM ${this.o.vm.name} was cancelled`,
      );
    }
  }
}
