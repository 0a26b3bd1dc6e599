/**
 * A vCPU thread (the worker pool.ts starts): boots one machine over the RAM it was handed and
 * runs it until told to stop. See protocol.ts for the contract with the host.
 *
 * The thread is a state machine with one method per run state, as {@link VcpuThread.run}
 * drives it:
 *
 * - **awaiting-incoming** (a migration target): the machine is built and waits for its device
 *   state — posted by the host, or taken from a switchover slot (switchover/thread.ts);
 * - **running**: the guest runs in slices of ~0.25–1 ms; between slices one shared word (the
 *   doorbell) says whether the host asked for something; when the guest waits for an interrupt
 *   (WFI) the thread sleeps in `Atomics.wait` until the timer's deadline or the doorbell;
 * - **stopped** (created, paused, powered off, crashed): the thread sleeps on the doorbell;
 * - **switching-over** (a migration source at its stop): the state goes into the switchover
 *   slot, and the thread waits for the target's to take over before it reports the stop.
 *
 * Output is batched: posted at most every couple of milliseconds, before every sleep, and
 * whenever 64 KiB piled up.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import type { ExitStatus } from '../devices/test-finisher.js';
import { parseElf } from '../loader/elf.js';
import { createMachine, type Machine } from '../machine/machine.js';
import type { MachineState } from '../machine/state.js';
import { PAGE_SHIFT, setPageBits } from '../memory/pages.js';
import {
  finishTakeOver,
  publishAtStop,
  takeOver,
  type SwitchoverArm,
  type SwitchoverPublish,
  type TakenOver,
} from '../switchover/thread.js';
import type { SpareData } from './pool.js';
import {
  Ctl,
  Request,
  RunCode,
  type VcpuCommand,
  type VcpuInit,
  type VcpuMessage,
  type VcpuRunState,
} from './protocol.js';
import { awaitInit, SpareWarmUp } from './spare.js';

/** Slice bounds in instructions; the budget adapts to last ~0.25–1 ms per slice. */
const MIN_SLICE = 10_000;
const MAX_SLICE = 4_000_000;
const SLICE_LOW_MS = 0.25;
const SLICE_HIGH_MS = 1;
/** Output is posted when this much piled up, or this long after the last post. */
const OUT_CAPACITY = 64 * 1024;
const OUT_INTERVAL_MS = 2;

/** The thread's run states, as {@link VcpuThread.run} steps through them. */
type Phase = 'awaiting-incoming' | 'running' | 'stopped' | 'exit';

type Post = (m: VcpuMessage, transfer?: ArrayBuffer[]) => void;

/** Console output on its way to the host, batched. */
class OutputBatch {
  private readonly buf = new Uint8Array(OUT_CAPACITY);
  private len = 0;
  /** performance.now() of the last post. */
  lastFlush = 0;

  constructor(private readonly post: Post) {}

  readonly put = (byte: number): void => {
    this.buf[this.len++] = byte;
    if (this.len === OUT_CAPACITY) this.flush();
  };

  flush(): void {
    if (this.len === 0) return;
    const bytes = this.buf.slice(0, this.len);
    this.post({ t: 'output', bytes }, [bytes.buffer]);
    this.len = 0;
    this.lastFlush = performance.now();
  }
}

/** One VM's vCPU: the machine, its run state, and the host's requests. */
class VcpuThread {
  private readonly ctl: Int32Array;
  private readonly ctl64: BigInt64Array;
  private readonly ctlF64: Float64Array;
  private readonly output: OutputBatch;
  private machine: Machine | null = null;
  private runState: VcpuRunState = 'created';
  /** Epoch ms of the last state change (the stamp `state` messages carry). */
  private lastStateAt = 0;
  private exitStatus: ExitStatus | null = null;
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

  constructor(
    private readonly init: VcpuInit,
    private readonly post: Post,
    private readonly warm: SpareWarmUp,
  ) {
    this.ctl = new Int32Array(init.control);
    this.ctl64 = new BigInt64Array(init.control);
    this.ctlF64 = new Float64Array(init.control);
    this.output = new OutputBatch(post);
  }

  /** Boots, then steps through the run states until the host stops the thread. */
  run(): void {
    const m = this.boot();
    if (m === null) return;
    this.machine = m;
    let phase: Phase = this.init.incoming ? 'awaiting-incoming' : 'stopped';
    try {
      while (phase !== 'exit') {
        switch (phase) {
          case 'awaiting-incoming':
            phase = this.awaitingIncoming(m);
            break;
          case 'running':
            phase = this.running(m);
            break;
          case 'stopped':
            phase = this.stopped(m);
            break;
        }
      }
    } catch (err) {
      // An interpreter bug, not a guest error: report it as a crash with the message.
      this.setState(m, 'crashed', { error: `vCPU failure: ${(err as Error).message}` });
      while (Atomics.load(this.ctl, Ctl.REQUEST) !== Request.STOP) {
        Atomics.wait(this.ctl, Ctl.DOORBELL, Atomics.load(this.ctl, Ctl.DOORBELL));
      }
    }
    this.output.flush();
    Atomics.store(this.ctl, Ctl.RUN_CODE, RunCode.STOPPED);
  }

  // ---- boot -------------------------------------------------------------------------------

  /** Builds the machine and, unless it waits for an incoming state, loads the guest image. */
  private boot(): Machine | null {
    const { init } = this;
    try {
      const words = init.bitmapWords;
      const dirty = [
        new Uint32Array(init.bitmaps, init.dirty[0], words),
        new Uint32Array(init.bitmaps, init.dirty[1], words),
      ] as const;
      const active = Atomics.load(this.ctl, Ctl.DIRTY_ACTIVE) & 1;
      const touched = new Uint32Array(init.bitmaps, init.touched, words);
      const machine = createMachine({
        ramSize: init.ramSize,
        ram: {
          bytes: init.ram,
          dirty: dirty[active],
          touched,
          tables: this.warm.takeTables(init.ramSize),
        },
        uartSink: this.output.put,
        timeMode: 'realtime',
        identity: init.identity,
        hostArgs: init.hostArgs,
        onReady: (tag) => this.post({ t: 'ready', tag }),
        onExit: (status) => {
          this.exitStatus = status;
        },
      });
      if (init.incoming) {
        // RAM already holds the guest; the devices wait for their state.
        this.post({ t: 'spawned' });
        return machine;
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
      this.post({ t: 'booted', entry: image.entry });
      return machine;
    } catch (err) {
      const e = err as Error & { code?: unknown };
      this.post({
        t: 'boot-failed',
        message: e.message,
        code: typeof e.code === 'string' ? e.code : 'error',
      });
      return null;
    }
  }

  // ---- awaiting-incoming ------------------------------------------------------------------

  /**
   * A migration target's machine sleeps until its device state is loaded: posted by the host
   * (`restore`), or taken from a switchover slot with the leases moved here by this thread
   * (`switchover-in`). A switchover that ends otherwise is reported and the thread waits again
   * (the host then posts the state, or stops the thread).
   */
  private awaitingIncoming(m: Machine): Phase {
    for (;;) {
      const bell = Atomics.load(this.ctl, Ctl.DOORBELL);
      if (Atomics.load(this.ctl, Ctl.REQUEST) === Request.STOP) return 'exit';
      let arm: SwitchoverArm | null = null;
      for (;;) {
        const msg = receiveMessageOnPort(this.init.commands);
        if (msg === undefined) break;
        const cmd = msg.message as VcpuCommand;
        if (cmd.t === 'restore') {
          try {
            m.restore(cmd.state);
          } catch (err) {
            this.post({ t: 'boot-failed', message: (err as Error).message, code: 'bad-state' });
            return 'exit';
          }
          return this.arrived(m, null);
        }
        if (cmd.t === 'switchover-in') arm = cmd;
        else if (cmd.t === 'input') this.pendingInput.push(cmd.bytes);
      }
      if (arm !== null) {
        const took = takeOver(m, arm, () => Atomics.load(this.ctl, Ctl.REQUEST) === Request.STOP);
        if (took.ok === false) {
          this.post({ t: 'switchover', ...took });
          continue;
        }
        return this.arrived(m, took);
      }
      Atomics.wait(this.ctl, Ctl.DOORBELL, bell);
    }
  }

  /**
   * The incoming state is in `m` (and, after a switchover, the leases are here). The host set
   * RUN before it posted the state or armed the switchover: the guest starts first (its run
   * stamp is the real resume), then the switchover's source is woken, then the host is told.
   */
  private arrived(m: Machine, took: TakenOver | null): Phase {
    m.clock.hold();
    const runNow = Atomics.load(this.ctl, Ctl.REQUEST) === Request.RUN;
    const takenAtMs = performance.timeOrigin + performance.now();
    const runAtMs = runNow ? takenAtMs : 0;
    if (runNow) m.clock.release();
    // The source's thread sleeps on the slot: wake it before anything is posted here.
    const outcome = took !== null ? finishTakeOver(took, runAtMs, takenAtMs) : null;
    if (runNow) {
      this.setState(m, 'running', {}, runAtMs);
    } else {
      this.publishInstret(m);
      Atomics.store(this.ctl, Ctl.RUN_CODE, RunCode.CREATED);
    }
    if (outcome !== null) this.post({ t: 'switchover', ...outcome });
    took?.link.close();
    this.post({ t: 'booted', entry: -1 });
    return runNow ? 'running' : 'stopped';
  }

  // ---- running ----------------------------------------------------------------------------

  /** Runs the guest in slices until a request or the guest changes the run state. */
  private running(m: Machine): Phase {
    let budget = MIN_SLICE; // small while the interpreter is still cold; grows within a few slices
    for (;;) {
      const next = this.doorbell(m);
      if (next !== null && next !== 'running') return next;
      if (this.pendingInput.length > 0) this.feedInput(m);
      const t0 = performance.now();
      const reason = m.run(budget);
      const t1 = performance.now();
      const took = t1 - t0;
      if (reason === 'budget') {
        if (took < SLICE_LOW_MS && budget < MAX_SLICE) budget *= 2;
        else if (took > SLICE_HIGH_MS && budget > MIN_SLICE) budget = budget >>> 1;
      }
      this.publishInstret(m);
      if (t1 - this.output.lastFlush >= OUT_INTERVAL_MS) this.output.flush();
      switch (reason) {
        case 'budget':
        case 'yield':
          continue;
        case 'halted': {
          const exit = this.exitStatus ?? m.exit;
          m.clock.hold();
          this.setState(m, 'powered-off', {
            exitCode: exit?.code ?? 0,
            exitKind: exit?.kind ?? 'pass',
          });
          return 'stopped';
        }
        case 'fatal':
          m.clock.hold();
          this.setState(m, 'crashed', { error: m.cpu.fatalMessage || 'the vCPU stopped' });
          return 'stopped';
        case 'wfi': {
          if (this.pendingInput.length > 0 && this.feedInput(m)) continue;
          const ms = m.wakeDelayMs();
          if (ms <= 0) continue;
          this.output.flush();
          if (ms === Infinity) Atomics.wait(this.ctl, Ctl.DOORBELL, this.seen);
          else Atomics.wait(this.ctl, Ctl.DOORBELL, this.seen, ms);
          continue;
        }
      }
    }
  }

  // ---- stopped ----------------------------------------------------------------------------

  /** Created, paused, powered off or crashed: sleeps on the doorbell, answering requests. */
  private stopped(m: Machine): Phase {
    for (;;) {
      const next = this.doorbell(m);
      if (next !== null && next !== 'stopped') return next;
      this.output.flush();
      Atomics.wait(this.ctl, Ctl.DOORBELL, this.seen);
    }
  }

  // ---- switching-over ---------------------------------------------------------------------

  /**
   * A migration source at its stop (`stopAtMs`, epoch ms), before anything is posted: the save
   * of `out.saveId` goes into the switchover slot. A published save is answered here, before
   * the stop is reported, so that the host has both in one wake-up; it carries no state (the
   * slot has it). One that could not be published is answered with the state, for the stream.
   */
  private switchingOver(
    m: Machine,
    out: SwitchoverPublish & { readonly saveId: number },
    stopAtMs: number,
  ): boolean {
    this.publishing = null;
    const state = publishAtStop(m, out, stopAtMs);
    if (state !== null) {
      this.unpublished = { id: out.saveId, state };
      return false;
    }
    this.saveSeen = out.saveId; // answered: the save that follows the pause has nothing to do
    this.post({ t: 'saved', id: out.saveId, state: null, published: true });
    return true;
  }

  // ---- the host's requests ----------------------------------------------------------------

  /**
   * When the doorbell moved: the commands, a dirty-log harvest, the requested run state and a
   * save, in that order. Returns the phase the request leads to, or null when nothing rang.
   */
  private doorbell(m: Machine): Phase | null {
    const bell = Atomics.load(this.ctl, Ctl.DOORBELL);
    if (bell === this.seen) return null;
    this.seen = bell;
    // Read before the request: the host stores REQUEST, then SAVE_REQ, then rings, so a save
    // seen here is answered in the run state it was asked with.
    const saveReq = Atomics.load(this.ctl, Ctl.SAVE_REQ);
    this.drainCommands();
    this.swapDirty(m);
    const req = Atomics.load(this.ctl, Ctl.REQUEST);
    if (req === Request.STOP) return 'exit';
    if (req === Request.RUN && (this.runState === 'created' || this.runState === 'paused')) {
      m.clock.release();
      this.setState(m, 'running');
    } else if (req === Request.PAUSE && this.runState === 'running') {
      m.clock.hold();
      const stopAt = performance.timeOrigin + performance.now();
      // Stored by the host before it rang the doorbell, which this thread has loaded since.
      const asked = this.ctlF64[Ctl.PAUSE_REQUESTED_AT]!;
      const latencyMs = asked > 0 ? stopAt - asked : 0;
      const out = this.publishing;
      if (out !== null && out.saveId === saveReq) this.switchingOver(m, out, stopAt);
      // Reported before anything else (the host acts on it at once); a save rung with this
      // pause is answered right after, while the host handles the pause.
      this.setState(m, 'paused', { latencyMs: Math.max(0, latencyMs) }, stopAt);
    }
    this.answerSave(m, saveReq);
    return this.runState === 'running' ? 'running' : 'stopped';
  }

  private drainCommands(): void {
    for (;;) {
      const msg = receiveMessageOnPort(this.init.commands);
      if (msg === undefined) return;
      const cmd = msg.message as VcpuCommand;
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
      this.post({ t: 'saved', id, state: null, error: 'the VM is running; pause it first' });
      return;
    }
    // The switchover of a VM that was already paused (a running one published at its stop).
    const out = this.publishing;
    if (out !== null && out.saveId === id && this.switchingOver(m, out, this.lastStateAt)) return;
    if (this.unpublished !== null && this.unpublished.id === id) {
      this.post({ t: 'saved', id, state: this.unpublished.state });
      this.unpublished = null;
      return;
    }
    this.post({ t: 'saved', id, state: m.save() });
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

  // ---- reporting --------------------------------------------------------------------------

  private publishInstret(m: Machine): void {
    Atomics.store(this.ctl64, Ctl.INSTRET64, BigInt(m.cpu.retired));
  }

  private setState(
    m: Machine,
    state: VcpuRunState,
    extra: Partial<VcpuMessage & { t: 'state' }> = {},
    at = performance.timeOrigin + performance.now(),
  ): void {
    this.runState = state;
    this.lastStateAt = at;
    Atomics.store(this.ctl, Ctl.RUN_CODE, RUN_CODES[state]);
    this.publishInstret(m);
    this.output.flush();
    this.post({ ...extra, t: 'state', state, instret: m.cpu.retired, at });
  }
}

const RUN_CODES: Readonly<Record<VcpuRunState, number>> = {
  created: RunCode.CREATED,
  running: RunCode.RUNNING,
  paused: RunCode.PAUSED,
  'powered-off': RunCode.POWERED_OFF,
  crashed: RunCode.CRASHED,
};

// ---- the thread's entry ---------------------------------------------------------------------

const port = parentPort!;
const post: Post = (m, transfer) => port.postMessage(m, transfer ?? []);
/** Started with its init, or a spare of the pool that waits for it. */
const started = workerData as VcpuInit | SpareData;
const warm = new SpareWarmUp();
const init: VcpuInit =
  (started as Partial<SpareData>).t === 'spare'
    ? await awaitInit(port, started as SpareData, warm)
    : (started as VcpuInit);
new VcpuThread(init, post, warm).run();
post({ t: 'stopped' });
init.commands.close();
