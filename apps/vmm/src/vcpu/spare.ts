/**
 * A pool thread's warm-up, its idle work (scheduler.ts runs a step whenever none of its VMs
 * wants the CPU and the pool's hush word is 0): it runs the machine's set-up once and its state
 * paths (save, clone, restore, both state encodings) many times on a throw-away machine, so that
 * a VM on the thread does not pay for compiling them (V8 compiles lazily, on the first call, and
 * optimizes hot code later) inside a migration's pause: the source saves at the stop, the target
 * restores before it runs. It also builds the per-page tables of the largest block ahead, for
 * the next big VM placed on the thread (built again, in idle time, after one took them).
 *
 * @packageDocumentation
 */
import { createMachine, type Machine } from '../machine/machine.js';
import { PAGE_SHIFT } from '../memory/pages.js';
import { makePageTables, type PageTables } from '../memory/ram-block.js';
import { MAX_BLOCK_SIZE } from '../model/limits.js';
import { decodeCompactState, encodeCompactState } from '../snapshot/compact-state.js';
import { decodeDeviceState, encodeDeviceState } from '../snapshot/device-state.js';

/** Save/restore rounds of a complete warm-up (≈30 ms while idle). */
const WARM_UP_ROUNDS = 500;
/** Rounds per step (≈1.5 ms), between looks at the thread's wake word and the hush word. */
export const WARM_UP_STEP = 25;

/** The warm-up of one pool thread. */
export class SpareWarmUp {
  private machine: Machine | undefined;
  private rounds = 0;
  private tables: PageTables | undefined;

  /** Whether the state paths are warm (the tables may still be missing). */
  get warm(): boolean {
    return this.rounds >= WARM_UP_ROUNDS;
  }

  /** Whether nothing is left to do: warm, and the tables built. */
  get done(): boolean {
    return this.warm && this.tables !== undefined;
  }

  /**
   * One step of what is left: up to `rounds` save/restore rounds, or, once warm, the tables
   * (≈26 ms at 2 GiB, 8 MiB, in one go). True once {@link SpareWarmUp.done}.
   */
  step(rounds: number): boolean {
    if (this.rounds < WARM_UP_ROUNDS) {
      this.stepRounds(rounds);
      return false;
    }
    this.tables ??= makePageTables(MAX_BLOCK_SIZE >>> PAGE_SHIFT);
    return true;
  }

  private stepRounds(rounds: number): void {
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
    if (this.rounds >= WARM_UP_ROUNDS) this.machine = undefined;
  }

  /**
   * The per-page tables built ahead, once: for a VM at least a quarter of the largest block; a
   * smaller one builds its own, cheaply, so the big tables do not stay alive for a small VM.
   */
  takeTables(ramSize: number): PageTables | undefined {
    const t = this.tables;
    if (t === undefined || ramSize >>> PAGE_SHIFT < t.codePages.length >>> 2) return undefined;
    this.tables = undefined;
    return t;
  }
}
