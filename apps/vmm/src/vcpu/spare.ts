/**
 * A spare vCPU thread's wait for its VM (pool.ts starts spares): while it waits it runs the
 * machine's set-up once and its state paths (save, clone, restore, both state encodings) many
 * times on a throw-away machine, so that a VM that takes it does not pay for compiling them
 * (V8 compiles lazily, on the first call, and optimizes hot code later) inside a migration's
 * pause: the source saves at the stop, the target restores before it runs. It also builds the
 * per-page tables of the largest block ahead.
 *
 * @packageDocumentation
 */
import type { MessagePort } from 'node:worker_threads';
import { createMachine, type Machine } from '../machine/machine.js';
import { PAGE_SHIFT } from '../memory/pages.js';
import { makePageTables, type PageTables } from '../memory/ram-block.js';
import { MAX_BLOCK_SIZE } from '../model/limits.js';
import { decodeCompactState, encodeCompactState } from '../snapshot/compact-state.js';
import { decodeDeviceState, encodeDeviceState } from '../snapshot/device-state.js';
import type { SpareData, SpareInit } from './pool.js';
import type { VcpuInit } from './protocol.js';

/** Save/restore rounds of a complete warm-up (≈30 ms while idle). */
const WARM_UP_ROUNDS = 500;
/** Rounds per step, between looks at the port and the hush word. */
const WARM_UP_STEP = 25;
/** How often a hushed spare looks whether it may go on warming up. */
const HUSH_POLL_MS = 5;

/** The warm-up of one spare thread. */
export class SpareWarmUp {
  private machine: Machine | undefined;
  private rounds = 0;
  private tables: PageTables | undefined;

  /** True once complete. Runs up to `rounds` more rounds. */
  step(rounds: number): boolean {
    if (this.rounds >= WARM_UP_ROUNDS) return true;
    const m = (this.machine ??= createMachine({
      ramSize: 1 << 20,
      timeMode: 'realtime',
      uartSink: () => undefined,
    }));
    for (const end = Math.min(WARM_UP_ROUNDS, this.rounds + rounds); this.rounds < end;) {
      m.clock.hold();
      const k = this.rounds % 3;
      m.restore(
        k === 0
          ? structuredClone(m.save())
          : k === 1
            ? decodeCompactState(encodeCompactState(m.save()))
            : decodeDeviceState(encodeDeviceState(m.save())).state,
      );
      m.clock.release();
      this.rounds++;
    }
    if (this.rounds < WARM_UP_ROUNDS) return false;
    this.machine = undefined;
    this.tables = makePageTables(MAX_BLOCK_SIZE >>> PAGE_SHIFT);
    return true;
  }

  /**
   * The per-page tables built ahead (≈26 ms at 2 GiB, 8 MiB), once: for a VM at least a quarter
   * of the largest block; a smaller one builds its own, cheaply, so the big tables do not stay
   * alive for a small VM.
   */
  takeTables(ramSize: number): PageTables | undefined {
    const t = this.tables;
    this.tables = undefined;
    return t !== undefined && ramSize >>> PAGE_SHIFT >= t.codePages.length >>> 2 ? t : undefined;
  }
}

/**
 * A spare's wait for its init: warms up in steps meanwhile, pausing while the pool's hush word
 * says this process times a migration. The thread that takes it finishes its warm-up first
 * (outside any pause: the taker waits for the thread to start).
 */
export function awaitInit(
  port: MessagePort,
  spare: SpareData,
  warm: SpareWarmUp,
): Promise<VcpuInit> {
  const hush = new Int32Array(spare.hush);
  let taken = false;
  const next = (): void => {
    if (taken || warm.step(WARM_UP_STEP)) return;
    if (Atomics.load(hush, 0) !== 0) setTimeout(next, HUSH_POLL_MS);
    else setImmediate(next);
  };
  setImmediate(next);
  return new Promise<VcpuInit>((resolve) => {
    port.once('message', (m: SpareInit) => {
      taken = true;
      warm.step(WARM_UP_ROUNDS);
      resolve(m.init);
    });
  });
}
