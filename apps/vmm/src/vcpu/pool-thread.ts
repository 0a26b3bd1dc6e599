/**
 * The host's side of one pool thread: the worker, its control words, and a handle per VM placed
 * on it that routes the thread's messages to that VM's host object (vm/vm.ts).
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import { futexWake } from '@handoff/shm';
import {
  THREAD_CONTROL_BYTES,
  ThreadCtl,
  type PoolThreadData,
  type ThreadCommand,
  type ThreadMessage,
  type VcpuCommand,
  type VcpuInit,
} from './protocol.js';

/**
 * The options threads start with: the host's, without custom export conditions. The thread
 * runs compiled code and must load the built packages, also when the host resolves sources (a
 * test runner passes `--conditions @handoff/source`).
 */
const WORKER_EXEC_ARGV = process.execArgv.filter(
  (arg, k, all) =>
    !/^(--conditions|-C)(=|$)/.test(arg) && !/^(--conditions|-C)$/.test(all[k - 1] ?? ''),
);

/** How long a thread that seems stuck is watched before it counts as stuck. */
const STUCK_CHECK_MS = 50;

/**
 * One VM's vCPU as its host sees it: commands and wake-ups go to the pool thread that runs it;
 * its messages arrive as `'message'` events (a VcpuMessage, in order), then `'exit'` once it
 * left the thread (code 0), or `'exit'` with the thread's code when the thread ended — after
 * `'error'` when it failed.
 */
export class VcpuHandle extends EventEmitter {
  private ended = false;

  constructor(
    readonly id: number,
    private readonly thread: PoolThread,
  ) {
    super();
  }

  /** The index of the pool thread that runs the VM. */
  get threadIndex(): number {
    return this.thread.index;
  }

  /** Queues a command for the VM; ring its doorbell afterwards ({@link VcpuHandle.wake}). */
  command(cmd: VcpuCommand): void {
    if (!this.ended) this.thread.post({ t: 'cmd', id: this.id, cmd });
  }

  /** Wakes the thread to look at the VM's doorbell (bump the doorbell first). */
  wake(): void {
    this.thread.wake();
  }

  /**
   * The VM did not stop in time: lets it go here at once (`'exit'`). A thread that is stuck
   * inside one VM is ended with every VM it runs (they crash); a live one frees the VM when it
   * gets to its stop.
   */
  terminate(): Promise<void> {
    return this.thread.abandon(this);
  }

  /** @internal The VM's end: `'exit'` (after `'error'` when the thread died). */
  end(code: number, error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    if (error !== undefined) this.emit('error', error);
    this.emit('exit', code);
  }
}

/** The host's side of one pool thread. */
export class PoolThread {
  readonly worker: Worker;
  private readonly ctl: Int32Array;
  private readonly handles = new Map<number, VcpuHandle>();
  /** performance.now() since when the thread holds no VM. */
  emptySince = performance.now();
  /** Set once the pool told it to end. */
  retiring = false;
  /** Set once its worker ended. */
  dead = false;

  /**
   * @param onChange called when its VMs change (one placed, one gone) and when it died
   */
  constructor(
    url: URL,
    readonly index: number,
    hush: SharedArrayBuffer,
    private readonly onChange: (t: PoolThread, died?: string) => void,
  ) {
    const control = new SharedArrayBuffer(THREAD_CONTROL_BYTES);
    this.ctl = new Int32Array(control);
    const data: PoolThreadData = { t: 'pool', index, control, hush };
    this.worker = new Worker(url, {
      workerData: data,
      execArgv: WORKER_EXEC_ARGV,
      stdout: false,
      stderr: false,
    });
    this.worker.unref(); // an empty thread never keeps the process alive
    this.worker.on('message', (msg: ThreadMessage) => this.route(msg));
    this.worker.on('error', (err) => this.gone(`vCPU thread failed: ${err.message}`, 1, err));
    this.worker.on('exit', (code) => this.gone(`vCPU thread exited (code ${code})`, code));
  }

  /** VMs placed on the thread and not gone. */
  get vms(): number {
    return this.handles.size;
  }

  /** VMs of the thread that want the CPU now (running, not in WFI). */
  get busy(): number {
    return Atomics.load(this.ctl, ThreadCtl.RUNNABLE);
  }

  /** Whether the thread runs its loop. */
  get started(): boolean {
    return Atomics.load(this.ctl, ThreadCtl.STARTED) === 1;
  }

  /** Whether its warm-up's state paths are compiled. */
  get warm(): boolean {
    return Atomics.load(this.ctl, ThreadCtl.WARM) === 1;
  }

  /** Places a VM on the thread. */
  add(id: number, init: VcpuInit): VcpuHandle {
    const h = new VcpuHandle(id, this);
    this.handles.set(id, h);
    if (this.handles.size === 1) this.worker.ref(); // a thread with VMs keeps the process alive
    this.post({ t: 'add', id, init });
    this.wake();
    this.onChange(this);
    return h;
  }

  /** Posts a message to the thread (wake it afterwards). */
  post(msg: ThreadCommand): void {
    if (!this.dead) this.worker.postMessage(msg);
  }

  /** Makes the thread look at its messages and doorbells (a futex wake only if it sleeps). */
  wake(): void {
    Atomics.add(this.ctl, ThreadCtl.WAKE, 1);
    if (Atomics.load(this.ctl, ThreadCtl.SLEEPING) !== 0) {
      futexWake(this.ctl.buffer as SharedArrayBuffer, ThreadCtl.WAKE * 4, 1);
    }
  }

  /** Tells an empty thread to end. */
  retire(): void {
    this.retiring = true;
    this.post({ t: 'exit' });
    this.wake();
  }

  /**
   * Ends the thread now; its VMs crash. A thread asleep in its futex wait does not see a
   * terminate until the wait ends: it is woken first.
   */
  async terminate(): Promise<void> {
    const ended = this.worker.terminate().catch(() => undefined);
    this.wake();
    await ended;
  }

  /** Tells the thread to end (its VMs leave it), and ends it after `graceMs` if it did not. */
  async close(graceMs: number): Promise<void> {
    if (this.dead) return;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.retire();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), graceMs);
    });
    const timedOut = await Promise.race([exited.then(() => false), late]);
    clearTimeout(timer);
    if (timedOut) await this.terminate();
  }

  /** See {@link VcpuHandle.terminate}. */
  async abandon(h: VcpuHandle): Promise<void> {
    if (this.handles.get(h.id) !== h) return;
    const turns = Atomics.load(this.ctl, ThreadCtl.TURNS);
    await new Promise((r) => setTimeout(r, STUCK_CHECK_MS));
    if (this.handles.get(h.id) !== h) return;
    const stuck =
      Atomics.load(this.ctl, ThreadCtl.TURNS) === turns &&
      Atomics.load(this.ctl, ThreadCtl.SLEEPING) === 0;
    if (stuck) {
      await this.terminate(); // its 'exit' ends every handle
      return;
    }
    this.drop(h, 0);
  }

  private route(msg: ThreadMessage): void {
    const h = this.handles.get(msg.id);
    if (h === undefined) return; // abandoned: the thread freed it at last
    h.emit('message', msg.m);
    if (msg.m.t === 'stopped') this.drop(h, 0);
  }

  private drop(h: VcpuHandle, code: number, error?: Error): void {
    if (this.handles.get(h.id) === h) {
      this.handles.delete(h.id);
      if (this.handles.size === 0) {
        this.emptySince = performance.now();
        this.worker.unref();
      }
      this.onChange(this);
    }
    h.end(code, error);
  }

  private gone(why: string, code: number, err?: Error): void {
    if (this.dead) return;
    this.dead = true;
    for (const h of [...this.handles.values()]) {
      this.handles.delete(h.id);
      h.end(code, err);
    }
    this.onChange(this, why);
  }
}
