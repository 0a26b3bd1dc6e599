/**
 * The vCPU thread pool: a small set of worker threads that each run many VMs (scheduler.ts).
 * A thread costs a V8 isolate (megabytes), an OS thread and 50–100 ms to start, so VMs do not
 * get one each: the pool keeps `threads` standing (one per core by default), places every new
 * VM on one of them, and grows — up to `maxThreads` — only while every thread has a VM that is
 * busy (runnable, not waiting in WFI) for a while (a VM that boots is busy for a moment: that
 * alone does not grow it); a thread it added beyond the standing ones ends once it held no VM
 * for a while. A VM stays on the thread it was placed on: its machine is built there and
 * machines do not move.
 *
 * Placement: a thread with no busy VM, the fewest VMs first (started threads before starting
 * ones); when every thread has a busy VM, the least loaded one. Growing means starting `spare`
 * threads ahead, which later VMs are placed on, so that no VM waits for a thread to start; a
 * migration's VM is placed at PrepareIncoming, never inside its pause.
 *
 * @packageDocumentation
 */
import { availableParallelism } from 'node:os';
import type { Logger } from '@handoff/service';
import { VmmError } from '../model/vmm-error.js';
import { PoolThread, type VcpuHandle } from './pool-thread.js';
import type { VcpuInit } from './protocol.js';

export { VcpuHandle } from './pool-thread.js';

/** How often the pool looks whether to grow or shrink. */
const MAINTAIN_EVERY_MS = 250;
/** Looks in a row at which every thread had a busy VM before the pool grows (≈0.5 s). */
const GROW_AFTER_LOOKS = 2;
/** How long a thread beyond the standing ones stays without VMs before it ends. */
const RETIRE_AFTER_MS = 10_000;
/** How long {@link VcpuThreadPool.close} lets a thread end by itself before it terminates it. */
const CLOSE_GRACE_MS = 1000;
/** Threads that may end before they ran before the pool stops starting threads ahead. */
const MAX_START_FAILURES = 3;

/** How a pool is sized. */
export interface VcpuPoolOptions {
  /** Threads kept standing (default: one per core). */
  readonly threads?: number;
  /** Most threads the pool grows to (default: twice the cores, at least `threads`). */
  readonly maxThreads?: number;
  /**
   * Threads started at once when every thread has had a busy VM for a while (default 1; 0: the
   * pool never grows beyond `threads`).
   */
  readonly spare?: number;
  /** How long a thread beyond the standing ones stays without VMs before it ends (10 s). */
  readonly retireAfterMs?: number;
  readonly logger?: Logger;
}

/** What the pool runs now (GetInfo, logs). */
export interface VcpuPoolReport {
  /** Threads running (standing, grown, still starting). */
  readonly threads: number;
  /** VMs per thread, in thread order. */
  readonly vms: readonly number[];
  /** Busy VMs (runnable, not in WFI) per thread. */
  readonly busy: readonly number[];
}

/** The vCPU thread pool (module doc). */
export class VcpuThreadPool {
  private readonly threads: PoolThread[] = [];
  private readonly standing: number;
  private readonly max: number;
  private readonly spare: number;
  private readonly retireAfterMs: number;
  private readonly logger: Logger | undefined;
  private readonly timer: NodeJS.Timeout;
  private nextId = 0;
  private nextIndex = 0;
  /** Looks in a row at which every thread had a busy VM. */
  private busyLooks = 0;
  private closed = false;
  private startFailures = 0;
  /** Set after {@link MAX_START_FAILURES}: threads start only when a VM has no other place. */
  private startsStopped = false;
  /** Latency-critical work in flight (migrations): no thread starts or warms up meanwhile. */
  private holds = 0;
  /** Shared with the threads: the number of holds (protocol.ts PoolThreadData.hush). */
  private readonly hush = new Int32Array(new SharedArrayBuffer(4));

  /** @param url the compiled pool thread (thread.ts) */
  constructor(
    private readonly url: URL,
    opts: VcpuPoolOptions = {},
  ) {
    const cores = availableParallelism();
    this.standing = Math.max(1, opts.threads ?? cores);
    this.max = Math.max(this.standing, opts.maxThreads ?? 2 * cores);
    this.spare = Math.max(0, opts.spare ?? 1);
    this.retireAfterMs = opts.retireAfterMs ?? RETIRE_AFTER_MS;
    this.logger = opts.logger;
    for (let k = 0; k < this.standing; k++) this.start();
    this.timer = setInterval(() => this.maintain(), MAINTAIN_EVERY_MS);
    this.timer.unref();
  }

  /** Threads running now. */
  get size(): number {
    return this.live().length;
  }

  /**
   * Places a VM on a thread (module doc) and hands it its init: the thread boots it, or builds
   * it to wait for an incoming state.
   *
   * @throws VmmError `VMM_VCPU_FAILED` once the pool is closed
   */
  take(init: VcpuInit): VcpuHandle {
    if (this.closed) {
      throw new VmmError('VMM_VCPU_FAILED', 'the vCPU thread pool is closed (shutting down)');
    }
    return this.place().add(++this.nextId, init);
  }

  /**
   * Defers thread starts, and pauses the warm-up of the threads, until the returned release is
   * called (each hold once): a thread's start-up and warm-up cost a CPU for 0.1–0.4 s, which on
   * a small machine lands inside whatever the holder is timing (a migration's hand-off, in or
   * out). A VM that finds no place still gets a thread.
   */
  hold(): () => void {
    this.holds++;
    Atomics.store(this.hush, 0, this.holds);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holds--;
      Atomics.store(this.hush, 0, this.holds);
    };
  }

  /** Threads and what they hold. */
  report(): VcpuPoolReport {
    const live = this.live();
    return { threads: live.length, vms: live.map((t) => t.vms), busy: live.map((t) => t.busy) };
  }

  /** Ends every thread (destroy the VMs first: a VM still on a thread then is gone). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    Atomics.store(this.hush, 0, 0);
    await Promise.all(this.threads.splice(0).map((t) => t.close(CLOSE_GRACE_MS)));
  }

  // ---- placement and size -----------------------------------------------------------------

  private live(): PoolThread[] {
    return this.threads.filter((t) => !t.dead && !t.retiring);
  }

  private place(): PoolThread {
    const live = this.live();
    const idle = live.filter((t) => t.busy === 0);
    if (idle.length > 0) return idle.reduce((a, b) => (rank(b) < rank(a) ? b : a));
    if (live.length === 0) return this.start('no vCPU thread runs');
    return live.reduce((a, b) => (b.busy < a.busy || (b.busy === a.busy && b.vms < a.vms) ? b : a));
  }

  /** Grows while every thread is busy, replaces standing threads, retires idle extras. */
  private maintain(): void {
    if (this.closed || this.holds > 0) return;
    let live = this.live();
    while (!this.startsStopped && live.length < this.standing) {
      this.start('a standing vCPU thread ended');
      live = this.live();
    }
    const idle = live.filter((t) => t.busy === 0);
    this.busyLooks = idle.length === 0 ? this.busyLooks + 1 : 0;
    if (this.busyLooks >= GROW_AFTER_LOOKS && this.spare > 0 && live.length < this.max) {
      this.busyLooks = 0;
      const n = Math.min(this.spare, this.max - live.length);
      for (let k = 0; k < n && !this.startsStopped; k++) {
        this.start('every vCPU thread has had a busy VM for a while');
      }
      return;
    }
    if (live.length <= this.standing || idle.length < 2) return;
    const now = performance.now();
    const extra = live
      .slice(this.standing)
      .find((t) => t.vms === 0 && t.busy === 0 && now - t.emptySince >= this.retireAfterMs);
    if (extra === undefined) return;
    extra.retire();
    this.logger?.info(
      { thread: extra.index, ...this.report() },
      'vCPU pool shrank: a thread beyond the standing ones held no VM',
    );
  }

  private start(why?: string): PoolThread {
    const t = new PoolThread(
      this.url,
      this.nextIndex++,
      this.hush.buffer as SharedArrayBuffer,
      (th, died) => this.changed(th, died),
    );
    this.threads.push(t);
    if (why !== undefined && this.threads.length > this.standing) {
      this.logger?.info({ thread: t.index, ...this.report() }, `vCPU pool grew: ${why}`);
    }
    return t;
  }

  private changed(t: PoolThread, died?: string): void {
    if (died === undefined) return;
    const k = this.threads.indexOf(t);
    if (k >= 0) this.threads.splice(k, 1);
    if (this.closed || t.retiring) return;
    if (!t.started && ++this.startFailures >= MAX_START_FAILURES && !this.startsStopped) {
      this.startsStopped = true;
      this.logger?.error(
        { why: died },
        'vCPU threads keep ending as they start; threads start only for VMs from now on',
      );
      return;
    }
    this.logger?.warn({ thread: t.index, why: died }, 'a vCPU thread ended; its VMs crashed');
  }
}

/** Placement order among threads without a busy VM: started first, then fewest VMs. */
function rank(t: PoolThread): number {
  return (t.started ? 0 : 1e9) + t.vms * 1e3 + t.index / 1e6;
}
