/**
 * Spare vCPU threads started ahead of need. Starting a worker thread and loading the machine
 * code costs ≈50–100 ms here, far more than a bypass migration may take; a VM that is created or
 * arrives by migration takes a spare that already waits for its {@link VcpuInit}, and the pool
 * starts the next spare a little later, off the path that took one.
 *
 * Contract with `thread.ts`: a spare starts with a {@link SpareData} as `workerData` and
 * waits for exactly one `{ t: 'init', init }` message on its parent port (the command port
 * travels in the transfer list); a thread started with a `VcpuInit` runs at once. While it
 * waits, a spare warms up in short steps and pauses them while the pool's hush word is not 0.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from '@handoff/service';
import type { VcpuInit } from './protocol.js';

/** What a spare starts with (`workerData`). */
export interface SpareData {
  readonly t: 'spare';
  /**
   * Int32 word 0: not 0 while latency-critical work runs in this process (a migration in or
   * out). The spare's warm-up pauses then (it looks again every few milliseconds) so that it
   * does not take a CPU from that work; once taken, it finishes its warm-up anyway.
   */
  readonly hush: SharedArrayBuffer;
}

/** The one message a spare waits for. */
export interface SpareInit {
  readonly t: 'init';
  readonly init: VcpuInit;
}

/**
 * The options vCPU threads start with: the host's, without custom export conditions. The thread
 * runs compiled code and must load the built packages, also when the host resolves sources (a
 * test runner passes `--conditions @handoff/source`).
 */
const WORKER_EXEC_ARGV = process.execArgv.filter(
  (arg, k, all) =>
    !/^(--conditions|-C)(=|$)/.test(arg) && !/^(--conditions|-C)$/.test(all[k - 1] ?? ''),
);

/** How long after a spare was taken the next one starts (lets the taker finish first). */
const REFILL_DELAY_MS = 100;
/** Spares that may end on their own before the pool stops starting new ones. */
const MAX_SPARE_FAILURES = 3;

export class VcpuThreadPool {
  private readonly spares: Worker[] = [];
  private refill: NodeJS.Timeout | undefined;
  private closed = false;
  private failures = 0;
  /** Latency-critical work in flight (migrations): refills wait until it is done. */
  private holds = 0;
  /** Shared with the spares: the number of holds (see {@link SpareData.hush}). */
  private readonly hush = new Int32Array(new SharedArrayBuffer(4));

  /**
   * @param url the compiled vCPU worker
   * @param size spare threads to keep (0: every VM starts its own thread)
   */
  constructor(
    private readonly url: URL,
    private readonly size: number,
    private readonly logger?: Logger,
  ) {
    this.fill();
  }

  /** Spare threads waiting now. */
  get available(): number {
    return this.spares.length;
  }

  /** A thread running the vCPU worker for `init`: a spare when one waits, else a new one. */
  take(init: VcpuInit): Worker {
    const spare = this.spares.shift();
    this.scheduleRefill();
    if (spare !== undefined) {
      spare.removeAllListeners('exit');
      spare.removeAllListeners('error');
      spare.ref();
      const msg: SpareInit = { t: 'init', init };
      spare.postMessage(msg, [init.commands]);
      return spare;
    }
    return new Worker(this.url, {
      workerData: init,
      transferList: [init.commands],
      execArgv: WORKER_EXEC_ARGV,
      stdout: false,
      stderr: false,
    });
  }

  /**
   * Defers refills, and pauses the warm-up of spares that are starting, until the returned
   * release is called (each hold once): a spare's start-up and warm-up cost a CPU for 0.1–0.4 s,
   * which on a small machine lands inside whatever the holder is timing (a migration's
   * hand-off, in or out).
   */
  hold(): () => void {
    this.holds++;
    Atomics.store(this.hush, 0, this.holds);
    clearTimeout(this.refill);
    this.refill = undefined;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      Atomics.store(this.hush, 0, this.holds - 1);
      // The holder's timed work is over: start the next spare at once, so that it is warm
      // before the next one (migrations come in quick succession in a live update).
      if (--this.holds === 0 && this.spares.length < this.size) this.scheduleRefill(0);
    };
  }

  /** Ends the spares; later {@link take}s start threads of their own. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refill);
    Atomics.store(this.hush, 0, 0);
    const spares = this.spares.splice(0);
    await Promise.all(spares.map((w) => w.terminate().catch(() => undefined)));
  }

  private scheduleRefill(delayMs = REFILL_DELAY_MS): void {
    if (this.closed || this.size === 0 || this.refill !== undefined || this.holds > 0) return;
    this.refill = setTimeout(() => {
      this.refill = undefined;
      this.fill();
    }, delayMs);
    this.refill.unref();
  }

  private fill(): void {
    while (!this.closed && this.spares.length < this.size) {
      const spare: SpareData = { t: 'spare', hush: this.hush.buffer as SharedArrayBuffer };
      const w = new Worker(this.url, {
        workerData: spare,
        execArgv: WORKER_EXEC_ARGV,
        stdout: false,
        stderr: false,
      });
      w.unref(); // a waiting spare never keeps the process alive
      const drop = (why: string): void => {
        const k = this.spares.indexOf(w);
        if (k < 0) return; // taken by a VM (its listeners are the VM's now) or closed
        this.spares.splice(k, 1);
        if (this.closed) return;
        if (++this.failures >= MAX_SPARE_FAILURES) {
          this.closed = true;
          this.logger?.error(
            { why },
            'spare vCPU threads keep ending; VMs start their own threads from now on',
          );
          return;
        }
        this.logger?.warn({ why }, 'a spare vCPU thread ended; starting it anew later');
        this.scheduleRefill();
      };
      w.once('error', (err) => drop(err.message));
      w.once('exit', (code) => drop(`exit code ${code}`));
      this.spares.push(w);
    }
  }
}
