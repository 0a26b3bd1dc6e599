/**
 * A pool thread's warm-up, its idle work (scheduler.ts runs a step whenever none of its VMs
 * wants the CPU and the pool's hush word is 0): it runs the machine's set-up once and its state
 * paths (save, clone, restore, both state encodings) many times on a throw-away machine, so that
 * a VM on the thread does not pay for compiling them (V8 compiles lazily, on the first call, and
 * optimizes hot code later) inside a migration's pause: the source saves at the stop, the target
 * restores before it runs. (A RAM block's code table is sparse, so nothing per page needs
 * building ahead for a big VM.)
 *
 * @packageDocumentation
 */
import { createMachine, type Machine } from '../machine/machine.js';
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

  /** Whether the state paths are warm. */
  get warm(): boolean {
    return this.rounds >= WARM_UP_ROUNDS;
  }

  /** Whether nothing is left to do (the same as {@link SpareWarmUp.warm}). */
  get done(): boolean {
    return this.warm;
  }

  /** One step of what is left: up to `rounds` save/restore rounds. True once {@link SpareWarmUp.done}. */
  step(rounds: number): boolean {
    if (this.rounds < WARM_UP_ROUNDS) this.stepRounds(rounds);
    return this.done;
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
}
