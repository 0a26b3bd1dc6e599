/**
 * A pool thread's scheduler: it runs the VMs placed on the thread, round-robin, one slice
 * (~0.25–1 ms, adaptive per VM) at a time, and sleeps when none wants the CPU.
 *
 * One turn of its loop:
 *
 * 1. if the thread's wake word moved: read the host's messages (new VMs, commands), then every
 *    VM's doorbell — a VM whose doorbell moved handles its requests (run, pause, stop, harvest,
 *    save, input);
 * 2. look at the switchover slots of VMs in a migration (taken over here, or handed over);
 * 3. wake VMs whose WFI timer is due;
 * 4. run one slice of the next runnable VM that its CPU throttle does not hold back
 *    (throttle.ts) — or, with none, a step of the thread's warm-up, or sleep: on the wake word
 *    and the slot words at once (sleep.ts), until the earliest WFI deadline, switchover timeout
 *    or end of a throttle's hold.
 *
 * So a request reaches a VM within one slice of another VM (one `Atomics.load` of the wake word
 * per slice), a VM waiting in WFI, paused, created or powered off costs nothing until its timer
 * or doorbell, and an idle thread costs nothing at all. A VM whose vCPU throws crashes alone.
 *
 * @packageDocumentation
 */
import type { createMachine } from '../machine/machine.js';
import type { SlotWord } from '../switchover/thread.js';
import {
  ThreadCtl,
  type ThreadCommand,
  type ThreadMessage,
  type VcpuInit,
  type VcpuMessage,
} from './protocol.js';
import { futexSleep, type Sleep } from './sleep.js';
import { SpareWarmUp, WARM_UP_STEP } from './spare.js';
import { SliceThrottle } from './throttle.js';
import { Timers } from './timers.js';
import { Vcpu } from './vcpu.js';

/** How often a thread whose warm-up is hushed looks whether it may go on. */
const HUSH_POLL_MS = 5;

/** What a scheduler runs on. */
export interface SchedulerDeps {
  /** The thread's control words ({@link ThreadCtl}). */
  readonly control: SharedArrayBuffer;
  /** The pool's hush word (protocol.ts PoolThreadData.hush). */
  readonly hush: SharedArrayBuffer;
  /** Posts a VM's message to the host. */
  readonly post: (msg: ThreadMessage, transfer?: ArrayBuffer[]) => void;
  /** The host's next message, or undefined when none waits (never blocks). */
  readonly receive: () => ThreadCommand | undefined;
  /** How the thread sleeps (default: futexSleep). */
  readonly sleep?: Sleep;
  /** Builds machines (tests pass a stand-in). */
  readonly createMachine?: typeof createMachine;
  /** Whether the thread warms up in idle time (default true). */
  readonly warmUp?: boolean;
}

/** The VMs of one pool thread and its loop (module doc). */
export class Scheduler {
  private readonly ctl: Int32Array;
  private readonly hush: Int32Array;
  private readonly sleep: Sleep;
  private readonly warm: SpareWarmUp | undefined;
  private readonly vcpus = new Map<number, Vcpu>();
  /** Runnable VMs, in turn order. */
  private readonly queue: Vcpu[] = [];
  private next = 0;
  /** Deadlines of running VMs waiting in WFI with a timer. */
  private readonly timers = new Timers<Vcpu>();
  /** VMs with a switchover slot to look at. */
  private readonly watching = new Set<Vcpu>();
  /** Each VM's CPU throttle (auto-converge). */
  private readonly throttles = new Map<Vcpu, SliceThrottle>();
  /** The earliest end of a hold that kept every runnable VM from the last pick (or Infinity). */
  private heldUntil = Infinity;
  private wakeSeen = 0;
  private exited = false;

  constructor(private readonly deps: SchedulerDeps) {
    this.ctl = new Int32Array(deps.control);
    this.hush = new Int32Array(deps.hush);
    this.sleep = deps.sleep ?? futexSleep();
    this.warm = deps.warmUp === false ? undefined : new SpareWarmUp();
  }

  /** Runs until the host says `exit`. */
  run(): void {
    Atomics.store(this.ctl, ThreadCtl.STARTED, 1);
    while (this.turn());
  }

  /** One turn of the loop (module doc); false once the thread is to end. */
  turn(): boolean {
    Atomics.add(this.ctl, ThreadCtl.TURNS, 1);
    const wake = Atomics.load(this.ctl, ThreadCtl.WAKE);
    if (wake !== this.wakeSeen) {
      this.wakeSeen = wake;
      this.readMessages();
      if (this.exited) return false;
      for (const v of this.vcpus.values()) this.step(v, () => v.bell());
    }
    for (const v of this.watching) this.step(v, () => v.poll());
    const now = performance.now();
    if (now >= this.timers.next) this.wakeSleepers(now);
    const v = this.pick(now);
    if (v !== null) {
      const t0 = performance.now();
      this.step(v, () => v.slice());
      this.throttles.get(v)?.charge(t0, performance.now());
      return true;
    }
    if (this.warmUp()) return true;
    this.idle(now);
    return true;
  }

  /** VMs on the thread. */
  get size(): number {
    return this.vcpus.size;
  }

  // ---- messages ---------------------------------------------------------------------------

  private readMessages(): void {
    for (let msg = this.deps.receive(); msg !== undefined; msg = this.deps.receive()) {
      switch (msg.t) {
        case 'add':
          this.add(msg.id, msg.init);
          break;
        case 'cmd':
          this.vcpus.get(msg.id)?.command(msg.cmd);
          break;
        case 'exit':
          for (const v of [...this.vcpus.values()]) this.remove(v);
          this.exited = true;
          return;
      }
    }
  }

  private add(id: number, init: VcpuInit): void {
    const post = (m: VcpuMessage, transfer?: ArrayBuffer[]): void =>
      this.deps.post({ id, m }, transfer);
    const v = new Vcpu(id, init, {
      post,
      ...(this.deps.createMachine !== undefined ? { createMachine: this.deps.createMachine } : {}),
    });
    if (!v.boot()) {
      post({ t: 'stopped' });
      return;
    }
    this.vcpus.set(id, v);
    this.throttles.set(v, new SliceThrottle(init.control));
    Atomics.store(this.ctl, ThreadCtl.VMS, this.vcpus.size);
    this.update(v);
  }

  // ---- bookkeeping ------------------------------------------------------------------------

  /** Runs `fn` on `v`; a throw crashes that VM alone. Then files `v` where it now belongs. */
  private step(v: Vcpu, fn: () => unknown): void {
    try {
      if (fn() === false) return; // nothing happened (a doorbell that did not move)
    } catch (err) {
      v.fail(err);
    }
    this.update(v);
  }

  private update(v: Vcpu): void {
    if (v.phase === 'exit') {
      this.remove(v);
      return;
    }
    if (v.runnable !== v.queued) {
      if (v.runnable) this.queue.push(v);
      else this.unqueue(v);
      v.queued = v.runnable;
      Atomics.store(this.ctl, ThreadCtl.RUNNABLE, this.queue.length);
    }
    const until = v.sleepingUntil;
    if (until !== v.timer) {
      v.timer = until;
      if (until !== Infinity) this.timers.push(until, v);
    }
    if (v.slotWord !== null) this.watching.add(v);
    else this.watching.delete(v);
  }

  private remove(v: Vcpu): void {
    if (v.queued) {
      this.unqueue(v);
      v.queued = false;
      Atomics.store(this.ctl, ThreadCtl.RUNNABLE, this.queue.length);
    }
    this.watching.delete(v);
    this.throttles.delete(v);
    if (!this.vcpus.delete(v.id)) return;
    if (v.timer !== Infinity) this.timers.drop(v);
    Atomics.store(this.ctl, ThreadCtl.VMS, this.vcpus.size);
    v.end();
  }

  private unqueue(v: Vcpu): void {
    const k = this.queue.indexOf(v);
    if (k < 0) return;
    this.queue.splice(k, 1);
    if (k < this.next) this.next--;
  }

  /**
   * The next runnable VM, round-robin, that no throttle holds at `now`; or null (then
   * {@link heldUntil} says when a held one may run).
   */
  private pick(now: number): Vcpu | null {
    this.heldUntil = Infinity;
    const n = this.queue.length;
    for (let k = 0; k < n; k++) {
      if (this.next >= n) this.next = 0;
      const v = this.queue[this.next++]!;
      const until = this.throttles.get(v)?.heldUntil(now) ?? now;
      if (until <= now) return v;
      this.heldUntil = Math.min(this.heldUntil, until);
    }
    return null;
  }

  /** Wakes the VMs whose timer is due (entries of VMs woken since, or gone, are skipped). */
  private wakeSleepers(now: number): void {
    while (this.timers.next <= now) {
      const { at, owner: v } = this.timers.pop()!;
      if (v.timer !== at) continue;
      v.timer = Infinity;
      v.wakeIfDue(now);
      this.update(v);
    }
  }

  // ---- idle -------------------------------------------------------------------------------

  /** A step of the warm-up when it is not done and not hushed; true when one ran. */
  private warmUp(): boolean {
    const w = this.warm;
    if (w === undefined || w.done || Atomics.load(this.hush, 0) !== 0) return false;
    if (w.step(WARM_UP_STEP) && w.warm) Atomics.store(this.ctl, ThreadCtl.WARM, 1);
    return true;
  }

  /** Sleeps until the wake word, a slot word, the earliest deadline, or the hush's next look. */
  private idle(now: number): void {
    let until = Math.min(this.timers.next, this.heldUntil);
    const words: SlotWord[] = [
      { buffer: this.deps.control, byteOffset: ThreadCtl.WAKE * 4, expected: this.wakeSeen },
    ];
    for (const v of this.watching) {
      words.push(v.slotWord!);
      until = Math.min(until, v.deadline);
    }
    if (this.warm !== undefined && !this.warm.done) until = Math.min(until, now + HUSH_POLL_MS);
    const timeout = until === Infinity ? Infinity : until - now;
    if (timeout <= 0) return;
    // The host bumps WAKE, then looks at SLEEPING: it wakes the thread, or the wait sees WAKE
    // moved and does not sleep.
    Atomics.store(this.ctl, ThreadCtl.SLEEPING, 1);
    try {
      this.sleep(words, timeout);
    } finally {
      Atomics.store(this.ctl, ThreadCtl.SLEEPING, 0);
    }
  }
}
