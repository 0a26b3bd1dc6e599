/**
 * One VM on a pool thread: its machine, its run state and the host's requests, stepped by the
 * thread's scheduler (scheduler.ts), never blocking. See protocol.ts for the contract with the
 * host.
 *
 * A VM is in one phase at a time:
 *
 * - **incoming** (a migration target): the machine is built and waits for its device state —
 *   posted by the host, or taken from a switchover slot (switchover/thread.ts), which the
 *   scheduler looks at whenever it wakes;
 * - **running**: the guest runs in slices of ~0.25–1 ms when the scheduler picks it; when it
 *   waits for an interrupt (WFI) it sleeps until its timer's deadline or a ring of its doorbell;
 * - **stopped** (created, paused, powered off, crashed): it costs nothing until its doorbell
 *   rings;
 * - **failed**: the vCPU threw (an interpreter bug): the VM is crashed and waits to be stopped;
 * - **exit**: the host stopped it; the scheduler frees it.
 *
 * A migration source at its stop publishes its state into the switchover slot and then *hands
 * over*: it reports the stop only once the target's thread ran the guest (or 100 ms passed), so
 * that the host's main thread is not woken inside the pause; the thread runs its other VMs
 * meanwhile.
 *
 * @packageDocumentation
 */
import { PresentMap, PresentState } from '@handoff/bitmap';
import type { ExitStatus } from '../devices/test-finisher.js';
import { parseElf } from '../loader/elf.js';
import { createMachine, type Machine } from '../machine/machine.js';
import type { MachineState } from '../machine/state.js';
import { PAGE_SHIFT, setPageBits } from '../memory/pages.js';
import type { RamBlock } from '../memory/ram-block.js';
import {
  finishTakeOver,
  IncomingSwitchover,
  publishAtStop,
  type HandOver,
  type SlotWord,
  type SwitchoverPublish,
  type TakenOver,
} from '../switchover/thread.js';
import { OutputBatch } from './output.js';
import {
  Ctl,
  Request,
  RunCode,
  type VcpuCommand,
  type VcpuInit,
  type VcpuMessage,
  type VcpuRunState,
} from './protocol.js';

/** Slice bounds in instructions; the budget adapts to last ~0.25–1 ms per slice. */
const MIN_SLICE = 10_000;
const MAX_SLICE = 4_000_000;
const SLICE_LOW_MS = 0.25;
const SLICE_HIGH_MS = 1;
/** Output is posted this long after the last post while the guest runs. */
const OUT_INTERVAL_MS = 2;

/** Where a VM is (module doc). */
export type VcpuPhase = 'incoming' | 'running' | 'stopped' | 'failed' | 'exit';

/** How a VM posts its messages to the host (the buffers in `transfer` move). */
export type VcpuPost = (m: VcpuMessage, transfer?: ArrayBuffer[]) => void;

/** What a VM needs from its thread. */
export interface VcpuDeps {
  readonly post: VcpuPost;
  /** Builds the machine (tests pass a stand-in). */
  readonly createMachine?: typeof createMachine;
}

/** One VM's vCPU on a pool thread. */
export class Vcpu {
  readonly name: string;
  phase: VcpuPhase = 'stopped';
  /** Scheduler bookkeeping: whether the VM is in the run queue. */
  queued = false;
  /** Scheduler bookkeeping: the WFI deadline filed for it (Infinity: none). */
  timer = Infinity;
  private readonly ctl: Int32Array;
  private readonly ctl64: BigInt64Array;
  private readonly ctlF64: Float64Array;
  private readonly output: OutputBatch;
  private machine: Machine | null = null;
  private runState: VcpuRunState = 'created';
  /** Running, in WFI: sleeps until {@link Vcpu.wakeAt} or a ring. */
  private asleep = false;
  private wakeAt = Infinity;
  private budget = MIN_SLICE;
  /** Epoch ms of the last state change (the stamp `state` messages carry). */
  private lastStateAt = 0;
  private exitStatus: ExitStatus | null = null;
  private readonly commands: VcpuCommand[] = [];
  private readonly pendingInput: Uint8Array[] = [];
  private pendingOffset = 0;
  /** The doorbell value last handled. */
  private seen = -1;
  /** The last save id answered ({@link Ctl.SAVE_REQ}; the host's ids start at 1). */
  private saveSeen = 0;
  /** The switchover slot the save of its id also publishes into (source). */
  private publishing: (SwitchoverPublish & { readonly saveId: number }) | null = null;
  /** A save the switchover could not publish: answered with its state, for the stream. */
  private unpublished: { readonly id: number; readonly state: MachineState } | null = null;
  /** A switchover this VM takes over (target), armed and not ended. */
  private incoming: IncomingSwitchover | null = null;
  /** A published state the target's thread has in hand (source), and what follows its end. */
  private handOver: { readonly h: HandOver; readonly then: () => void } | null = null;
  private rangWhileHandingOver = false;
  /** The page of lazy RAM the guest waits for (-1: none), its block, and since when. */
  private waitPage = -1;
  private waitBlock: RamBlock | undefined = undefined;
  private waitSince = 0;

  constructor(
    readonly id: number,
    private readonly init: VcpuInit,
    private readonly deps: VcpuDeps,
  ) {
    this.name = init.name;
    this.ctl = new Int32Array(init.control);
    this.ctl64 = new BigInt64Array(init.control);
    this.ctlF64 = new Float64Array(init.control);
    this.output = new OutputBatch((bytes) => deps.post({ t: 'output', bytes }, [bytes.buffer]));
  }

  // ---- what the scheduler reads -----------------------------------------------------------

  /** Whether the VM wants the CPU now. */
  get runnable(): boolean {
    return this.phase === 'running' && !this.asleep && this.handOver === null && this.waitPage < 0;
  }

  /** performance.now() at which a VM waiting in WFI wakes by its timer; Infinity otherwise. */
  get sleepingUntil(): number {
    return this.phase === 'running' && this.asleep ? this.wakeAt : Infinity;
  }

  /** The switchover slot word the thread must also sleep on, or null. */
  get slotWord(): SlotWord | null {
    if (this.handOver !== null) return this.handOver.h.word;
    return this.phase === 'incoming' && this.incoming !== null ? this.incoming.word : null;
  }

  /** performance.now() by which {@link Vcpu.poll} must run again (a switchover's timeout). */
  get deadline(): number {
    if (this.handOver !== null) return this.handOver.h.deadline;
    return this.incoming?.deadline ?? Infinity;
  }

  // ---- boot -------------------------------------------------------------------------------

  /**
   * Builds the machine and, unless it waits for an incoming state, loads the guest image.
   * False when that failed (reported as `boot-failed`; the VM is then gone).
   */
  boot(): boolean {
    const { init } = this;
    try {
      const words = init.bitmapWords;
      const dirty = [
        new Uint32Array(init.bitmaps, init.dirty[0], words),
        new Uint32Array(init.bitmaps, init.dirty[1], words),
      ] as const;
      const active = Atomics.load(this.ctl, Ctl.DIRTY_ACTIVE) & 1;
      const touched = new Uint32Array(init.bitmaps, init.touched, words);
      // A hostile file's view: PresentMap.open checks magic, version, page count and length.
      const present =
        init.present !== undefined
          ? PresentMap.open(init.present, init.ramSize >>> PAGE_SHIFT)
          : undefined;
      const machine = (this.deps.createMachine ?? createMachine)({
        ramSize: init.ramSize,
        ram: {
          bytes: init.ram,
          dirty: dirty[active],
          touched,
          ...(present !== undefined ? { present } : {}),
        },
        uartSink: this.output.put,
        timeMode: 'realtime',
        identity: init.identity,
        hostArgs: init.hostArgs,
        onReady: (tag) => this.deps.post({ t: 'ready', tag }),
        onExit: (status) => {
          this.exitStatus = status;
        },
      });
      this.machine = machine;
      if (init.incoming) {
        // RAM already holds the guest; the devices wait for their state.
        this.phase = 'incoming';
        this.deps.post({ t: 'spawned' });
        return true;
      }
      if (init.ramNotZero) {
        // Old contents (a reused region): make the loader zero the image's bss like fresh RAM.
        const main = machine.memory.main;
        for (const seg of parseElf(init.elf).segments) {
          const off = seg.paddr - main.guestBase;
          if (off < 0 || off + seg.memsz > main.size) continue; // the loader reports it
          setPageBits(main.touched, off >>> PAGE_SHIFT, (off + seg.memsz - 1) >>> PAGE_SHIFT);
        }
      }
      const image = machine.boot(init.elf);
      machine.clock.hold();
      this.publishInstret(machine);
      Atomics.store(this.ctl, Ctl.RUN_CODE, RunCode.CREATED);
      this.deps.post({ t: 'booted', entry: image.entry });
      return true;
    } catch (err) {
      const e = err as Error & { code?: unknown };
      this.deps.post({
        t: 'boot-failed',
        message: e.message,
        code: typeof e.code === 'string' ? e.code : 'error',
      });
      this.phase = 'exit';
      return false;
    }
  }

  // ---- the host's requests ----------------------------------------------------------------

  /** A command from the host; it rings the doorbell after it, which hands it to the VM. */
  command(cmd: VcpuCommand): void {
    this.commands.push(cmd);
  }

  /**
   * Handles the host's requests if the doorbell moved or commands wait; true when either. A
   * command can arrive on a later turn than the ring that follows it (the thread read its
   * messages just before the host posted it, then saw the doorbell): it is handled when it
   * arrives, else it would wait for a ring that never comes.
   */
  bell(): boolean {
    const arrived = this.waitPage >= 0 && this.pageArrived();
    const bell = Atomics.load(this.ctl, Ctl.DOORBELL);
    if (bell === this.seen && this.commands.length === 0) return arrived;
    this.seen = bell;
    this.onBell();
    return true;
  }

  private onBell(): void {
    if (this.handOver !== null) {
      this.rangWhileHandingOver = true; // answered once the target took over
      return;
    }
    switch (this.phase) {
      case 'incoming':
        this.incomingRequests(this.machine!);
        return;
      case 'running':
      case 'stopped':
        this.requests(this.machine!);
        return;
      case 'failed':
        if (Atomics.load(this.ctl, Ctl.REQUEST) === Request.STOP) this.phase = 'exit';
        return;
      case 'exit':
        return;
    }
  }

  /**
   * The commands, a dirty-log harvest, the requested run state and a save, in that order. Any
   * ring ends a WFI wait: the guest looks at its devices again.
   */
  private requests(m: Machine): void {
    // Read before the request: the host stores REQUEST, then SAVE_REQ, then rings, so a save
    // seen here is answered in the run state it was asked with.
    const saveReq = Atomics.load(this.ctl, Ctl.SAVE_REQ);
    this.takeCommands();
    this.swapDirty(m);
    const req = Atomics.load(this.ctl, Ctl.REQUEST);
    if (req === Request.STOP) {
      this.phase = 'exit';
      return;
    }
    this.asleep = false;
    if (req === Request.RUN && (this.runState === 'created' || this.runState === 'paused')) {
      m.clock.release();
      this.budget = MIN_SLICE; // small while the interpreter may be cold; grows within slices
      this.setState(m, 'running');
    } else if (req === Request.PAUSE && this.runState === 'running') {
      m.clock.hold();
      const stopAt = performance.timeOrigin + performance.now();
      // Stored by the host before it rang the doorbell, which this thread has loaded since.
      const asked = this.ctlF64[Ctl.PAUSE_REQUESTED_AT]!;
      const latencyMs = Math.max(0, asked > 0 ? stopAt - asked : 0);
      const paused = (): void => {
        // Reported before anything else (the host acts on it at once); a save rung with this
        // pause is answered right after, while the host handles the pause.
        this.setState(m, 'paused', { latencyMs }, stopAt);
        this.phase = 'stopped';
        this.answerSave(m, saveReq);
      };
      const out = this.publishing;
      if (out !== null && out.saveId === saveReq && this.switchingOver(m, out, stopAt, paused)) {
        return;
      }
      paused();
      return;
    }
    this.phase = this.runState === 'running' ? 'running' : 'stopped';
    this.answerSave(m, saveReq);
  }

  private takeCommands(): void {
    for (const cmd of this.commands.splice(0)) {
      if (cmd.t === 'input') this.pendingInput.push(cmd.bytes);
      else if (cmd.t === 'switchover-out') this.publishing = cmd;
    }
  }

  /** A save rung together with a pause sees the paused machine (one round trip for both). */
  private answerSave(m: Machine, req: number): void {
    if (req === this.saveSeen) return;
    this.saveSeen = req;
    const id = req;
    if (this.runState === 'running') {
      this.deps.post({ t: 'saved', id, state: null, error: 'the VM is running; pause it first' });
      return;
    }
    // The switchover of a VM that was already paused (a running one published at its stop).
    const out = this.publishing;
    if (out !== null && out.saveId === id && this.switchingOver(m, out, this.lastStateAt, noop)) {
      return;
    }
    if (this.unpublished !== null && this.unpublished.id === id) {
      this.deps.post({ t: 'saved', id, state: this.unpublished.state });
      this.unpublished = null;
      return;
    }
    this.deps.post({ t: 'saved', id, state: m.save() });
  }

  private swapDirty(m: Machine): void {
    const { ctl, init } = this;
    const req = Atomics.load(ctl, Ctl.HARVEST_REQ);
    if (req === Atomics.load(ctl, Ctl.HARVEST_ACK)) return;
    const next = (Atomics.load(ctl, Ctl.DIRTY_ACTIVE) & 1) ^ 1;
    const words = new Uint32Array(init.bitmaps, init.dirty[next], init.bitmapWords);
    // The host cleared `next` before asking. Everything this thread stored before the ACK
    // store (guest pages and marks) happens-before the host's read after it loads the ACK.
    m.memory.main.swapDirty(words);
    Atomics.store(ctl, Ctl.DIRTY_ACTIVE, next);
    Atomics.store(ctl, Ctl.HARVEST_ACK, req);
    Atomics.notify(ctl, Ctl.HARVEST_ACK);
  }

  // ---- incoming ---------------------------------------------------------------------------

  /**
   * A migration target's machine waits for its device state: posted by the host (`restore`),
   * or taken from a switchover slot with the leases moved here by this thread
   * (`switchover-in`). A switchover that ends otherwise is reported and the VM waits again (the
   * host then posts the state, or stops it).
   */
  private incomingRequests(m: Machine): void {
    if (Atomics.load(this.ctl, Ctl.REQUEST) === Request.STOP && this.incoming === null) {
      this.phase = 'exit';
      return;
    }
    for (const cmd of this.commands.splice(0)) {
      if (cmd.t === 'restore') {
        this.incoming?.close();
        this.incoming = null;
        try {
          m.restore(cmd.state);
        } catch (err) {
          this.deps.post({
            t: 'boot-failed',
            message: (err as Error).message,
            code: 'bad-state',
          });
          this.phase = 'exit';
          return;
        }
        this.arrived(m, null);
        return;
      }
      if (cmd.t === 'switchover-in') this.incoming ??= new IncomingSwitchover(m, cmd);
      else if (cmd.t === 'input') this.pendingInput.push(cmd.bytes);
    }
    if (this.incoming !== null) this.poll();
  }

  /**
   * Looks at a switchover in progress: the slot of one this VM takes over, or of a hand-over it
   * published (whose end it then reports). The scheduler calls it whenever the thread looks.
   */
  poll(): void {
    if (this.handOver !== null) {
      if (!this.handOver.h.ended()) return;
      const { then } = this.handOver;
      this.handOver = null;
      then();
      if (this.rangWhileHandingOver) {
        this.rangWhileHandingOver = false;
        this.onBell();
      }
      return;
    }
    if (this.phase !== 'incoming' || this.incoming === null) return;
    const stop = Atomics.load(this.ctl, Ctl.REQUEST) === Request.STOP;
    const r = this.incoming.poll(stop);
    if (r === 'waiting') return;
    this.incoming = null;
    if (!r.ok) {
      this.deps.post({ t: 'switchover', ...r });
      if (stop) this.phase = 'exit';
      return;
    }
    this.arrived(this.machine!, r);
  }

  /**
   * The incoming state is in `m` (and, after a switchover, the leases are here). The host set
   * RUN before it posted the state or armed the switchover: the guest starts first (its run
   * stamp is the real resume), then the switchover's source is woken, then the host is told.
   */
  private arrived(m: Machine, took: TakenOver | null): void {
    m.clock.hold();
    const runNow = Atomics.load(this.ctl, Ctl.REQUEST) === Request.RUN;
    const takenAtMs = performance.timeOrigin + performance.now();
    const runAtMs = runNow ? takenAtMs : 0;
    if (runNow) m.clock.release();
    // The source's thread waits on the slot: wake it before anything is posted here.
    const outcome = took !== null ? finishTakeOver(took, runAtMs, takenAtMs) : null;
    if (runNow) {
      this.budget = MIN_SLICE;
      this.setState(m, 'running', {}, runAtMs);
    } else {
      this.publishInstret(m);
      Atomics.store(this.ctl, Ctl.RUN_CODE, RunCode.CREATED);
    }
    this.phase = runNow ? 'running' : 'stopped';
    if (outcome !== null) this.deps.post({ t: 'switchover', ...outcome });
    took?.link.close();
    this.deps.post({ t: 'booted', entry: -1 });
    this.onBell(); // what rang meanwhile (a stop, input)
  }

  // ---- switching over (source) ------------------------------------------------------------

  /**
   * A migration source at its stop (`stopAtMs`, epoch ms), before anything is posted: the save
   * of `out.saveId` goes into the switchover slot. A published save is answered, and `then`
   * run, once the target's thread took over (true: that is pending). One that could not be
   * published is answered with the state, for the stream (false: go on at once).
   */
  private switchingOver(
    m: Machine,
    out: SwitchoverPublish & { readonly saveId: number },
    stopAtMs: number,
    then: () => void,
  ): boolean {
    this.publishing = null;
    const r = publishAtStop(m, out, stopAtMs);
    if (!r.published) {
      this.unpublished = { id: out.saveId, state: r.state };
      return false;
    }
    this.saveSeen = out.saveId; // answered: the save that follows the pause has nothing to do
    this.handOver = {
      h: r,
      then: () => {
        this.deps.post({ t: 'saved', id: out.saveId, state: null, published: true });
        then();
      },
    };
    return true;
  }

  // ---- running ----------------------------------------------------------------------------

  /** A WFI wait whose timer is due ends (`now`: performance.now()). */
  wakeIfDue(now: number): void {
    if (this.asleep && now >= this.wakeAt) this.asleep = false;
  }

  /** Runs one slice of the guest (the scheduler picks a runnable VM). */
  slice(): void {
    const m = this.machine!;
    if (this.pendingInput.length > 0) this.feedInput(m);
    const t0 = performance.now();
    const reason = m.run(this.budget);
    const t1 = performance.now();
    if (reason === 'budget') {
      const took = t1 - t0;
      if (took < SLICE_LOW_MS && this.budget < MAX_SLICE) this.budget *= 2;
      else if (took > SLICE_HIGH_MS && this.budget > MIN_SLICE) this.budget >>>= 1;
    }
    this.publishInstret(m);
    if (t1 - this.output.lastFlush >= OUT_INTERVAL_MS) this.output.flush();
    switch (reason) {
      case 'budget':
      case 'yield':
        return;
      case 'halted': {
        const exit = this.exitStatus ?? m.exit;
        m.clock.hold();
        this.setState(m, 'powered-off', {
          exitCode: exit?.code ?? 0,
          exitKind: exit?.kind ?? 'pass',
        });
        this.phase = 'stopped';
        return;
      }
      case 'page':
        this.park(m);
        return;
      case 'fatal':
        m.clock.hold();
        this.setState(m, 'crashed', { error: m.cpu.fatalMessage || 'the vCPU stopped' });
        this.phase = 'stopped';
        return;
      case 'wfi': {
        if (this.pendingInput.length > 0 && this.feedInput(m)) return;
        const ms = m.wakeDelayMs();
        if (ms <= 0) return;
        this.output.flush();
        this.asleep = true;
        this.wakeAt = t1 + ms;
        return;
      }
    }
  }

  // ---- lazy RAM (post-copy) --------------------------------------------------------------

  /**
   * The guest stopped before an access to a page of lazy RAM that has not arrived: the VM parks
   * (not runnable, no CPU) and the host is asked for the page. A page that arrived meanwhile
   * needs no wait: the next slice retries.
   */
  private park(m: Machine): void {
    const block = m.cpu.missingBlock!;
    const page = m.cpu.missingPage;
    m.cpu.missingBlock = undefined;
    const map = block.present;
    if (map === undefined || map.isPresent(page)) return;
    this.waitPage = page;
    this.waitBlock = block;
    this.waitSince = performance.now();
    Atomics.add(this.ctl, Ctl.PAGE_WAITS, 1);
    Atomics.store(this.ctl, Ctl.PAGE_WAITING, page + 1);
    this.output.flush();
    this.deps.post({
      t: 'page-wait',
      block: block.id,
      page,
      sourcePaused: map.state === PresentState.SourcePaused,
    });
  }

  /**
   * A parked VM looks at its page (whenever the host rang): true when the wait is over — the
   * page arrived (the VM is runnable again), or the fill failed for good (the VM crashes: the
   * page never comes, and reading it as zero would corrupt the guest).
   */
  private pageArrived(): boolean {
    const block = this.waitBlock!;
    const page = this.waitPage;
    const map = block.present;
    if (map !== undefined && !map.isPresent(page)) {
      if (map.state !== PresentState.Failed) return false;
      this.endWait();
      const m = this.machine!;
      m.clock.hold();
      this.setState(m, 'crashed', {
        error:
          `post-copy failed: page ${page} of RAM block ${block.id} will never arrive (the ` +
          "region's lazy fill failed); the guest cannot go on",
      });
      this.phase = 'stopped';
      return true;
    }
    const waitedUs = Math.round((performance.now() - this.waitSince) * 1000);
    this.endWait();
    this.deps.post({ t: 'page-arrived', page, waitedUs });
    return true;
  }

  private endWait(): void {
    this.waitPage = -1;
    this.waitBlock = undefined;
    Atomics.store(this.ctl, Ctl.PAGE_WAITING, 0);
  }

  /** Hands queued console bytes to the UART as far as its FIFO takes them. */
  private feedInput(m: Machine): boolean {
    let fed = 0;
    while (this.pendingInput.length > 0) {
      const head = this.pendingInput[0]!;
      const chunk = this.pendingOffset === 0 ? head : head.subarray(this.pendingOffset);
      const took = m.uart.receive(chunk);
      fed += took;
      if (took < chunk.length) {
        this.pendingOffset += took;
        break;
      }
      this.pendingInput.shift();
      this.pendingOffset = 0;
    }
    if (fed > 0) {
      m.cpu.wake();
      Atomics.add(this.ctl, Ctl.INPUT_TAKEN, fed);
      Atomics.notify(this.ctl, Ctl.INPUT_TAKEN);
    }
    return fed > 0;
  }

  // ---- failure and end --------------------------------------------------------------------

  /**
   * The vCPU threw (an interpreter bug, not a guest error): the VM crashes with the message and
   * waits for its stop; the thread's other VMs go on.
   */
  fail(err: unknown): void {
    if (this.waitPage >= 0) this.endWait();
    this.handOver = null;
    this.incoming?.close();
    this.incoming = null;
    const error = `vCPU failure: ${err instanceof Error ? err.message : String(err)}`;
    const m = this.machine;
    try {
      if (m === null) throw new Error('no machine');
      this.setState(m, 'crashed', { error });
    } catch {
      this.runState = 'crashed';
      Atomics.store(this.ctl, Ctl.RUN_CODE, RunCode.CRASHED);
      this.deps.post({ t: 'state', state: 'crashed', instret: 0, at: epochNow(), error });
    }
    this.phase = Atomics.load(this.ctl, Ctl.REQUEST) === Request.STOP ? 'exit' : 'failed';
  }

  /** The VM leaves its thread: last output, `stopped`; everything it held is dropped. */
  end(): void {
    this.phase = 'exit';
    this.incoming?.close();
    this.incoming = null;
    this.handOver = null;
    try {
      this.output.flush();
    } finally {
      Atomics.store(this.ctl, Ctl.RUN_CODE, RunCode.STOPPED);
      this.machine = null;
      this.deps.post({ t: 'stopped' });
    }
  }

  // ---- reporting --------------------------------------------------------------------------

  private publishInstret(m: Machine): void {
    Atomics.store(this.ctl64, Ctl.INSTRET64, BigInt(m.cpu.retired));
  }

  private setState(
    m: Machine,
    state: VcpuRunState,
    extra: Partial<VcpuMessage & { t: 'state' }> = {},
    at = epochNow(),
  ): void {
    this.runState = state;
    this.lastStateAt = at;
    Atomics.store(this.ctl, Ctl.RUN_CODE, RUN_CODES[state]);
    this.publishInstret(m);
    this.output.flush();
    this.deps.post({ ...extra, t: 'state', state, instret: m.cpu.retired, at });
  }
}

const RUN_CODES: Readonly<Record<VcpuRunState, number>> = {
  created: RunCode.CREATED,
  running: RunCode.RUNNING,
  paused: RunCode.PAUSED,
  'powered-off': RunCode.POWERED_OFF,
  crashed: RunCode.CRASHED,
};

function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

function noop(): void {}
