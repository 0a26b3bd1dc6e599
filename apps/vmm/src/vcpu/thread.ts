/**
 * A vCPU thread: boots one machine over the RAM it was handed and runs it in short slices until
 * told to stop. See `protocol.ts` for the contract with the host.
 *
 * The loop, in words: between slices it checks one shared word (the doorbell); when the host
 * rang it, it reads the requested run state, drains the command port and answers a dirty-log
 * harvest. A slice is sized so it lasts ~0.25–1 ms, so a pause stops the guest at an
 * instruction boundary within about a millisecond. When the guest waits for an interrupt (WFI)
 * the thread sleeps in `Atomics.wait` until the timer's deadline or the doorbell; while paused
 * or powered off it sleeps on the doorbell alone. Output is batched: posted at most every
 * couple of milliseconds, before every sleep, and whenever 64 KiB piled up.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { createMachine, type Machine } from '../machine/machine.js';
import type { ExitStatus } from '../devices/test-finisher.js';
import type { MachineState } from '../machine/state.js';
import { parseElf } from '../loader/elf.js';
import { PAGE_SHIFT, setPageBits } from '../memory/pages.js';
import { makePageTables, type PageTables } from '../memory/ram-block.js';
import { MAX_BLOCK_SIZE } from '../vm/spec.js';
import { failpoint } from '../failpoints.js';
import { openLeaseStep, type LeaseStep } from '../leases/thread-step.js';
import {
  abortSlot,
  announceStop,
  awaitStop,
  awaitTakeover,
  finishSlot,
  publishState,
  SlotState,
  takeState,
} from '../switchover/slot.js';
import {
  decodeCompactState,
  encodeCompactState,
  isCompactState,
} from '../snapshot/compact-state.js';
import { decodeDeviceState, encodeDeviceState } from '../snapshot/device-state.js';
import {
  Ctl,
  Request,
  RunCode,
  type HandoffOutcome,
  type VcpuCommand,
  type VcpuInit,
  type VcpuMessage,
  type VcpuRunState,
} from './protocol.js';
import type { SpareData, SpareInit } from './pool.js';

/** Slice bounds in instructions; the budget adapts to last ~0.25–1 ms per slice. */
const MIN_SLICE = 10_000;
const MAX_SLICE = 4_000_000;
const SLICE_LOW_MS = 0.25;
const SLICE_HIGH_MS = 1;
/** Output is posted when this much piled up, or this long after the last post. */
const OUT_CAPACITY = 64 * 1024;
const OUT_INTERVAL_MS = 2;
/** Save/restore rounds a spare runs on a throw-away machine (see warmUp). */
const WARM_UP_ROUNDS = 500;
/** While a direct hand-off waits, how often the thread looks for a stop request. */
const HANDOFF_POLL_MS = 20;

const port = parentPort!;
/** Warm-up rounds a spare runs per step, between looks at its messages and the hush word. */
const WARM_UP_STEP = 25;
/** How often a hushed spare looks whether it may go on warming up. */
const HUSH_POLL_MS = 5;

/** The throw-away machine of a warm-up in progress, and the rounds it ran. */
let warming: { readonly m: Machine; rounds: number } | undefined;
let warmedUp = false;

/**
 * A spare runs the machine's set-up once and its state paths (save, clone, restore) many times
 * on a throw-away machine while it waits, so a VM that takes it does not pay for compiling them
 * (V8 compiles lazily, on the first call, and optimizes hot code later) inside a migration's
 * downtime: the source saves at the pause, the target restores before it runs. Runs up to
 * `rounds` more rounds; true once the warm-up is complete.
 */
function warmUp(rounds: number): boolean {
  if (warmedUp) return true;
  const w = (warming ??= {
    m: createMachine({ ramSize: 1 << 20, timeMode: 'realtime', uartSink: () => undefined }),
    rounds: 0,
  });
  // Often enough for V8 to compile these past its interpreter; ≈30 ms while idle.
  for (const end = Math.min(WARM_UP_ROUNDS, w.rounds + rounds); w.rounds < end; w.rounds++) {
    w.m.clock.hold();
    // The direct hand-off encodes (source) and decodes (target) the state in this thread, in
    // the compact layout or, with a target of another build, as a container.
    const k = w.rounds % 3;
    w.m.restore(
      k === 0
        ? structuredClone(w.m.save())
        : k === 1
          ? decodeCompactState(encodeCompactState(w.m.save()))
          : decodeDeviceState(encodeDeviceState(w.m.save())).state,
    );
    w.m.clock.release();
  }
  if (w.rounds < WARM_UP_ROUNDS) return false;
  warming = undefined;
  warmedUp = true;
  spareTables = makePageTables(MAX_BLOCK_SIZE >>> PAGE_SHIFT);
  return true;
}

/**
 * A spare's wait for its init: it warms up in steps meanwhile, pausing while the pool's hush
 * word says this process times a migration. The thread that takes it finishes its warm-up
 * first (outside any downtime: the taker waits for the thread to start).
 */
function awaitInit(spare: SpareData): Promise<VcpuInit> {
  const hush = new Int32Array(spare.hush);
  let taken = false;
  const next = (): void => {
    if (taken || warmUp(WARM_UP_STEP)) return;
    if (Atomics.load(hush, 0) !== 0) setTimeout(next, HUSH_POLL_MS);
    else setImmediate(next);
  };
  setImmediate(next);
  return new Promise<VcpuInit>((resolve) => {
    port.once('message', (m: SpareInit) => {
      taken = true;
      warmUp(WARM_UP_ROUNDS);
      resolve(m.init);
    });
  });
}

/**
 * Per-page tables a spare built for the largest block while it waited (≈26 ms at 2 GiB, 8 MiB).
 * A VM at least a quarter that size takes them; a smaller one builds its own, cheaply, so the
 * big tables are not kept alive for a small VM.
 */
let spareTables: PageTables | undefined;
function tablesFor(ramSize: number): PageTables | undefined {
  const t = spareTables;
  spareTables = undefined;
  return t !== undefined && ramSize >>> PAGE_SHIFT >= t.codePages.length >>> 2 ? t : undefined;
}

/** Started with its init, or a spare of the thread pool that waits for it (pool.ts). */
const started = workerData as VcpuInit | SpareData;
const init: VcpuInit = isSpare(started) ? await awaitInit(started) : started;

function isSpare(d: VcpuInit | SpareData): d is SpareData {
  return (d as Partial<SpareData>).t === 'spare';
}
const ctl = new Int32Array(init.control);
const ctl64 = new BigInt64Array(init.control);
const ctlF64 = new Float64Array(init.control);
const post = (m: VcpuMessage, transfer?: ArrayBuffer[]): void =>
  port.postMessage(m, transfer ?? []);

// ---- output batching ---------------------------------------------------------------------
const out = new Uint8Array(OUT_CAPACITY);
let outLen = 0;
let lastFlush = 0;
function flushOutput(): void {
  if (outLen === 0) return;
  const bytes = out.slice(0, outLen);
  post({ t: 'output', bytes }, [bytes.buffer]);
  outLen = 0;
  lastFlush = performance.now();
}
function sink(byte: number): void {
  out[outLen++] = byte;
  if (outLen === OUT_CAPACITY) flushOutput();
}

// ---- state --------------------------------------------------------------------------------
let runState: VcpuRunState = 'created';
let exitStatus: ExitStatus | null = null;
let fatal = '';
const pendingInput: Uint8Array[] = [];
let pendingOffset = 0;

function publishInstret(m: Machine): void {
  Atomics.store(ctl64, Ctl.INSTRET64, BigInt(m.cpu.retired));
}

/** Epoch ms of the last state change (the stamp `state` messages carry). */
let lastStateAt = 0;

function setState(
  m: Machine,
  state: VcpuRunState,
  extra: Partial<VcpuMessage & { t: 'state' }> = {},
  at = performance.timeOrigin + performance.now(),
): void {
  runState = state;
  lastStateAt = at;
  const code =
    state === 'created'
      ? RunCode.CREATED
      : state === 'running'
        ? RunCode.RUNNING
        : state === 'paused'
          ? RunCode.PAUSED
          : state === 'powered-off'
            ? RunCode.POWERED_OFF
            : RunCode.CRASHED;
  Atomics.store(ctl, Ctl.RUN_CODE, code);
  publishInstret(m);
  flushOutput();
  post({
    ...extra,
    t: 'state',
    state,
    instret: m.cpu.retired,
    at: lastStateAt,
  });
}

// ---- boot ---------------------------------------------------------------------------------
function boot(): Machine | null {
  try {
    const bitmaps = init.bitmaps;
    const words = init.bitmapWords;
    const dirty = [
      new Uint32Array(bitmaps, init.dirty[0], words),
      new Uint32Array(bitmaps, init.dirty[1], words),
    ] as const;
    const active = Atomics.load(ctl, Ctl.DIRTY_ACTIVE) & 1;
    const touched = new Uint32Array(bitmaps, init.touched, words);
    const machine = createMachine({
      ramSize: init.ramSize,
      ram: { bytes: init.ram, dirty: dirty[active], touched, tables: tablesFor(init.ramSize) },
      uartSink: sink,
      timeMode: 'realtime',
      identity: init.identity,
      hostArgs: init.hostArgs,
      onReady: (tag) => post({ t: 'ready', tag }),
      onExit: (status) => {
        exitStatus = status;
      },
    });
    if (init.restore !== null) {
      // Incoming migration: RAM already holds the guest; only the devices are loaded.
      let handoff: Handoff | null = null;
      if (init.restore === 'pending') handoff = awaitIncoming(machine);
      else machine.restore(init.restore);
      machine.clock.hold();
      // The host sets RUN before it posts the state: start the guest first (the run stamp is
      // the real resume), then report the boot; the loop runs the guest right after.
      const runNow = Atomics.load(ctl, Ctl.REQUEST) === Request.RUN;
      const takenAtMs = performance.timeOrigin + performance.now();
      const runAtMs = runNow ? takenAtMs : 0;
      if (runNow) machine.clock.release();
      // The source's thread sleeps on this word: wake it before anything is posted here.
      if (handoff !== null) {
        finishSlot(handoff.slot, runNow ? SlotState.RUNNING : SlotState.HELD, takenAtMs);
      }
      if (runNow) {
        setState(machine, 'running', {}, runAtMs);
      } else {
        publishInstret(machine);
        Atomics.store(ctl, Ctl.RUN_CODE, RunCode.CREATED);
      }
      if (handoff !== null) {
        post({
          t: 'handoff',
          ok: true,
          stage: 'run',
          epochs: handoff.epochs,
          runAtMs,
          stopAtMs: handoff.stopAtMs,
          stopSeenAtMs: handoff.stopSeenAtMs,
          publishedAtMs: handoff.publishedAtMs,
          restoredAtMs: handoff.restoredAtMs,
          leasedAtMs: handoff.leasedAtMs,
        });
      }
      handoff?.link.close();
      post({ t: 'booted', entry: -1 });
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
    publishInstret(machine);
    Atomics.store(ctl, Ctl.RUN_CODE, RunCode.CREATED);
    post({ t: 'booted', entry: image.entry });
    return machine;
  } catch (err) {
    const e = err as Error & { code?: unknown };
    post({
      t: 'boot-failed',
      message: e.message,
      code: typeof e.code === 'string' ? e.code : 'error',
    });
    return null;
  }
}

/** A direct hand-off that moved the leases here; the machine holds its state. */
interface Handoff {
  readonly slot: SharedArrayBuffer;
  readonly epochs: readonly (number | null)[];
  readonly stopAtMs: number;
  readonly stopSeenAtMs: number;
  readonly publishedAtMs: number;
  readonly restoredAtMs: number;
  readonly leasedAtMs: number;
  /** Closed once the guest runs: unmapping the arms file costs cross-CPU work in the downtime. */
  readonly link: LeaseStep;
}

/**
 * Sleeps until the device state of an incoming migration is loaded into `m`: posted by the host
 * (`restore`; returns null), or taken from a hand-off slot with the leases moved here by this
 * thread (`handoff-in`; returns the hand-off). A hand-off that ends otherwise is reported and the
 * thread waits again (the host then posts the state, or stops the thread).
 *
 * @throws Error when the host stops the thread first
 */
function awaitIncoming(m: Machine): Handoff | null {
  post({ t: 'spawned' });
  for (;;) {
    const bell = Atomics.load(ctl, Ctl.DOORBELL);
    if (Atomics.load(ctl, Ctl.REQUEST) === Request.STOP) throw new Error('stopped before restore');
    let arm: (VcpuCommand & { t: 'handoff-in' }) | null = null;
    for (;;) {
      const msg = receiveMessageOnPort(init.commands);
      if (msg === undefined) break;
      const cmd = msg.message as VcpuCommand;
      if (cmd.t === 'restore') {
        m.restore(cmd.state);
        return null;
      }
      if (cmd.t === 'handoff-in') arm = cmd;
      else if (cmd.t === 'input') pendingInput.push(cmd.bytes);
    }
    if (arm !== null) {
      const done = handOffIn(m, arm);
      if (done !== null) return done;
      continue;
    }
    Atomics.wait(ctl, Ctl.DOORBELL, bell);
  }
}

/** One direct hand-off, target side (PROTOCOL.md, "Direct hand-off"). */
function handOffIn(m: Machine, arm: VcpuCommand & { t: 'handoff-in' }): Handoff | null {
  const { slot, lease } = arm;
  const none = lease.transfers.map(() => null);
  const fail = (
    o: Pick<HandoffOutcome, 'stage' | 'code' | 'message' | 'uncertain'> & {
      epochs?: readonly (number | null)[];
      stopAtMs?: number;
    },
  ): null => {
    post({ t: 'handoff', ok: false, runAtMs: 0, stopAtMs: 0, epochs: none, ...o });
    return null;
  };
  let link: LeaseStep;
  try {
    link = openLeaseStep(lease); // connected or mapped now, off the downtime path
  } catch (err) {
    abortSlot(slot);
    return fail({
      stage: 'connect',
      code: 'VMM_MEMSTORE_UNAVAILABLE',
      message: `memstore's lease step cannot be prepared: ${(err as Error).message}`,
    });
  }
  try {
    // An armed lease has nothing to do at the stop: sleep on until the state is there.
    const stopped = awaitStop(
      slot,
      HANDOFF_POLL_MS,
      () => Atomics.load(ctl, Ctl.REQUEST) === Request.STOP,
      !link.early,
    );
    if (stopped !== 'stopped') {
      link.close();
      return fail({ stage: 'aborted' });
    }
    const stopSeenAtMs = performance.timeOrigin + performance.now();
    // The source's vCPU stopped. Over the lease channel the requests go out now, while its
    // state is saved, encoded and published there, and decoded and restored here.
    if (link.early) link.send();
    const took = takeState(slot, lease.timeoutMs);
    let failure: Parameters<typeof fail>[0] | null = null;
    if (took.kind === 'state') {
      try {
        m.restore(decodeHandoffState(took.bytes));
      } catch (err) {
        failure = {
          stage: 'state',
          code: 'MIGRATION_BAD_STREAM',
          message: `the device state in the hand-off slot does not load: ${(err as Error).message}`,
        };
      }
    } else {
      failure = {
        stage: 'state',
        code: took.kind === 'invalid' ? 'MIGRATION_BAD_STREAM' : 'MIGRATION_FAILED',
        message:
          took.kind === 'invalid'
            ? took.reason
            : took.kind === 'aborted'
              ? "the source's vCPU thread could not publish the device state"
              : `the device state did not arrive within ${lease.timeoutMs} ms of the stop`,
      };
    }
    const restoredAtMs = performance.timeOrigin + performance.now();
    // Armed transfers flip only once the state is in: nothing moves for a state that fails.
    if (!link.early && failure === null) {
      try {
        failpoint('handoff-before-lease');
        link.send();
      } catch (err) {
        failure = { stage: 'state', code: 'VMM_VCPU_FAILED', message: (err as Error).message };
      }
    }
    // Always read the answers: which leases moved here decides what must be given back.
    const leased = link.receive();
    const leasedAtMs = performance.timeOrigin + performance.now();
    const stopAtMs = took.kind === 'state' ? took.stopAtMs : 0;
    if (failure === null && !leased.ok) {
      failure = {
        stage: 'lease',
        code: leased.code!,
        message: leased.message!,
        uncertain: leased.uncertain === true,
      };
    }
    if (failure === null) {
      try {
        failpoint('incoming-after-lease');
      } catch (err) {
        failure = { stage: 'state', code: 'VMM_VCPU_FAILED', message: (err as Error).message };
      }
    }
    if (failure !== null) {
      finishSlot(slot, SlotState.FAILED);
      link.close();
      return fail({ ...failure, epochs: leased.epochs, stopAtMs });
    }
    return {
      slot,
      epochs: leased.epochs,
      stopAtMs,
      stopSeenAtMs,
      publishedAtMs: took.kind === 'state' ? took.publishedAtMs : 0,
      restoredAtMs,
      leasedAtMs,
      link,
    };
  } catch (err) {
    link.close();
    throw err;
  }
}

/** The state a source published: compact (same layout as this build) or a container. */
function decodeHandoffState(bytes: Uint8Array): MachineState {
  return isCompactState(bytes) ? decodeCompactState(bytes) : decodeDeviceState(bytes).state;
}

// ---- host requests ------------------------------------------------------------------------
function swapDirty(m: Machine): void {
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

function drainCommands(): void {
  for (;;) {
    const msg = receiveMessageOnPort(init.commands);
    if (msg === undefined) return;
    const cmd = msg.message as VcpuCommand;
    if (cmd.t === 'input') pendingInput.push(cmd.bytes);
    else if (cmd.t === 'handoff-out') outgoing = cmd;
  }
}

/** The hand-off slot the next save (of its id) also publishes into. */
let outgoing: (VcpuCommand & { t: 'handoff-out' }) | null = null;

/** The last save id answered ({@link Ctl.SAVE_REQ}; the host's ids start at 1). */
let saveSeen = 0;

/** `id` (Ctl.SAVE_REQ as read at this doorbell) when it is a new request, taken; else null. */
function takeSave(id: number): number | null {
  if (id === saveSeen) return null;
  saveSeen = id;
  return id;
}

/** A save rung together with a pause sees the paused machine (one round trip for both). */
function answerSave(m: Machine, req: number): void {
  const id = takeSave(req);
  if (id === null) return;
  if (runState === 'running') {
    post({ t: 'saved', id, state: null, error: 'the VM is running; pause it first' });
    return;
  }
  // Direct hand-off of a VM that was already paused (a running one published at its stop).
  if (outgoing !== null && outgoing.saveId === id && handOffOut(m, lastStateAt)) return;
  if (unpublished !== null && unpublished.id === id) {
    post({ t: 'saved', id, state: unpublished.state });
    unpublished = null;
    return;
  }
  post({ t: 'saved', id, state: m.save() });
}

/** Hands queued console bytes to the UART as far as its FIFO takes them. */
function feedInput(m: Machine): boolean {
  let fed = 0;
  while (pendingInput.length > 0) {
    const head = pendingInput[0]!;
    const chunk = pendingOffset === 0 ? head : head.subarray(pendingOffset);
    const took = m.uart.receive(chunk);
    fed += took;
    if (took < chunk.length) {
      pendingOffset += took;
      break;
    }
    pendingInput.shift();
    pendingOffset = 0;
  }
  if (fed > 0) {
    m.cpu.wake();
    Atomics.add(ctl, Ctl.INPUT_TAKEN, fed);
    Atomics.notify(ctl, Ctl.INPUT_TAKEN);
  }
  return fed > 0;
}

/** Applies the requested run state; returns false when the thread must end. */
function applyRequest(m: Machine, saveReq: number): boolean {
  const req = Atomics.load(ctl, Ctl.REQUEST);
  if (req === Request.STOP) return false;
  if (req === Request.RUN && (runState === 'created' || runState === 'paused')) {
    m.clock.release();
    setState(m, 'running');
  } else if (req === Request.PAUSE && runState === 'running') {
    m.clock.hold();
    const stopAt = performance.timeOrigin + performance.now();
    // Stored by the host before it rang the doorbell, which this thread has loaded since.
    const asked = ctlF64[Ctl.PAUSE_REQUESTED_AT]!;
    const latencyMs = asked > 0 ? stopAt - asked : 0;
    if (outgoing !== null && outgoing.saveId === saveReq) handOffOut(m, stopAt);
    // Reported before anything else (the host acts on it at once); a save rung with this
    // pause is answered right after (answerSave), while the host handles the pause.
    setState(m, 'paused', { latencyMs: Math.max(0, latencyMs) }, stopAt);
  }
  return true;
}

/** How long the source's thread waits for the target's to take over before reporting the stop. */
const TAKEOVER_WAIT_MS = 100;

/** A save {@link handOffOut} could not publish: answered by {@link answerSave}, for the stream. */
let unpublished: { readonly id: number; readonly state: MachineState } | null = null;

/**
 * Direct hand-off, source side, at the stop and before anything is posted: saves, publishes the
 * state into the slot (waking the target's vCPU thread) and sleeps until that thread runs the
 * guest or fails (at most {@link TAKEOVER_WAIT_MS}), so that this process's main thread does
 * not compete for the CPU with the target and memstore inside the downtime.
 *
 * A published save is answered here, before the pause is reported, so that the host has both
 * in one wake-up; it carries no state (the slot has it). Returns whether it was published.
 */
function handOffOut(m: Machine, stopAt: number): boolean {
  const out = outgoing!;
  outgoing = null;
  const announced = announceStop(out.slot, stopAt); // the target asks for the lease now
  const state = m.save();
  let ok = false;
  if (announced) {
    let bytes: Uint8Array | null = null;
    try {
      bytes = out.compact ? encodeCompactState(state) : encodeDeviceState(state);
    } catch {
      bytes = null; // aborts the slot: the state goes on the stream, the lease comes back
    }
    ok = publishState(out.slot, bytes);
    if (ok) awaitTakeover(out.slot, TAKEOVER_WAIT_MS);
  }
  if (!ok) {
    unpublished = { id: out.saveId, state };
    return false;
  }
  saveSeen = out.saveId; // answered: the answerSave that follows the pause has nothing to do
  post({ t: 'saved', id: out.saveId, state: null, handedOff: true });
  return true;
}

// ---- the loop -----------------------------------------------------------------------------
function loop(m: Machine): void {
  let seen = -1; // forces a first look at the requests
  let budget = MIN_SLICE; // small while the interpreter is still cold; grows within a few slices
  for (;;) {
    const bell = Atomics.load(ctl, Ctl.DOORBELL);
    if (bell !== seen) {
      seen = bell;
      // Read before the request: the host stores REQUEST, then SAVE_REQ, then rings, so a save
      // seen here is answered in the run state it was asked with.
      const saveReq = Atomics.load(ctl, Ctl.SAVE_REQ);
      drainCommands();
      swapDirty(m);
      if (!applyRequest(m, saveReq)) return;
      answerSave(m, saveReq);
    }
    if (runState !== 'running') {
      flushOutput();
      Atomics.wait(ctl, Ctl.DOORBELL, seen);
      continue;
    }
    if (pendingInput.length > 0) feedInput(m);
    const t0 = performance.now();
    const reason = m.run(budget);
    const t1 = performance.now();
    const took = t1 - t0;
    if (reason === 'budget') {
      if (took < SLICE_LOW_MS && budget < MAX_SLICE) budget *= 2;
      else if (took > SLICE_HIGH_MS && budget > MIN_SLICE) budget = budget >>> 1;
    }
    publishInstret(m);
    if (t1 - lastFlush >= OUT_INTERVAL_MS) flushOutput();
    switch (reason) {
      case 'budget':
      case 'yield':
        continue;
      case 'halted': {
        const exit = exitStatus ?? m.exit;
        m.clock.hold();
        setState(m, 'powered-off', {
          exitCode: exit?.code ?? 0,
          exitKind: exit?.kind ?? 'pass',
        });
        continue;
      }
      case 'fatal':
        fatal = m.cpu.fatalMessage || 'the vCPU stopped';
        m.clock.hold();
        setState(m, 'crashed', { error: fatal });
        continue;
      case 'wfi': {
        if (pendingInput.length > 0 && feedInput(m)) continue;
        const ms = m.wakeDelayMs();
        if (ms <= 0) continue;
        flushOutput();
        if (ms === Infinity) Atomics.wait(ctl, Ctl.DOORBELL, seen);
        else Atomics.wait(ctl, Ctl.DOORBELL, seen, ms);
        continue;
      }
    }
  }
}

const machine = boot();
if (machine !== null) {
  try {
    loop(machine);
  } catch (err) {
    // An interpreter bug, not a guest error: report it as a crash with the message.
    setState(machine, 'crashed', { error: `vCPU failure: ${(err as Error).message}` });
    while (Atomics.load(ctl, Ctl.REQUEST) !== Request.STOP) {
      Atomics.wait(ctl, Ctl.DOORBELL, Atomics.load(ctl, Ctl.DOORBELL));
    }
  }
  flushOutput();
  Atomics.store(ctl, Ctl.RUN_CODE, RunCode.STOPPED);
}
post({ t: 'stopped' });
init.commands.close();
