/**
 * A VM's CPU throttle on its pool thread (auto-converge): after each slice the VM ran, it is held
 * back long enough that it ran only `1 - held` of the time. A held VM is simply not picked — the
 * other VMs of the thread run, or the thread sleeps until the hold ends — so a throttle never
 * blocks the thread.
 *
 * The host sets the held share in the VM's control word {@link Ctl.THROTTLE} (1/10000 units);
 * 0 releases the VM at once (the next pick no longer looks at the old hold).
 *
 * @packageDocumentation
 */
import { Ctl } from './protocol.js';

/** Units of {@link Ctl.THROTTLE}: the held share of each period, in 1/10000. */
export const THROTTLE_SCALE = 10_000;
/** The most a VM can be held back: it still runs 1/10000 of the time. */
export const MAX_THROTTLE = THROTTLE_SCALE - 1;

/**
 * How long a VM that just ran `ranMs` is held when `held`/10000 of its time is taken away: the
 * slice and the hold then split as `1 - held` : `held`. 0 when unthrottled.
 */
export function holdAfterSlice(ranMs: number, held: number): number {
  if (!(held > 0) || !(ranMs > 0)) return 0;
  const h = Math.min(held, MAX_THROTTLE);
  return (ranMs * h) / (THROTTLE_SCALE - h);
}

/** One VM's throttle as its thread sees it. */
export class SliceThrottle {
  private readonly word: Int32Array;
  /** performance.now() until which the VM is held (0: not held). */
  private until = 0;

  /** @param control - the VM's control buffer (protocol.ts {@link Ctl}) */
  constructor(control: SharedArrayBuffer) {
    this.word = new Int32Array(control);
  }

  /** The held share asked for now, 1/10000 (0 when unthrottled). */
  get held(): number {
    return Atomics.load(this.word, Ctl.THROTTLE);
  }

  /** Counts a slice that ran from `t0` to `t1` (performance.now()). */
  charge(t0: number, t1: number): void {
    const hold = holdAfterSlice(t1 - t0, this.held);
    this.until = hold > 0 ? t1 + hold : 0;
  }

  /** When the VM may run again: `now` or earlier when it is not held. */
  heldUntil(now: number): number {
    if (this.until <= now) return now;
    if (this.held === 0) {
      this.until = 0; // released: run at once
      return now;
    }
    return this.until;
  }
}
