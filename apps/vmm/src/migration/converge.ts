/**
 * Auto-converge: how hard the source throttles a guest whose pre-copy does not converge. A pure
 * policy — the sender measures each pass, this says the throttle for the next one.
 *
 * The rules, per pass that did not converge (QEMU's, then ours where we can do better):
 *
 * - a guest is throttled once it dirtied more than half of what the pass sent (QEMU's trigger);
 * - the first throttle is `cpu-throttle-initial`, each later pass adds `cpu-throttle-increment`
 *   (QEMU's steps);
 * - but never less than what the measured rates ask for: the guest's dirtying is brought to half
 *   the link's send rate (dirty rate ÷ the share it ran = its unthrottled rate);
 * - a pass whose dirty set covered (nearly) all of the RAM the guest uses measured a saturated
 *   rate — the guest could have dirtied more — so its run share is cut by another half;
 * - past 99 % the run share keeps halving, down to 1/10000 (QEMU stops at 99 %: we own the
 *   vCPU, and a guest that rewrites all its RAM in a few milliseconds needs more).
 *
 * The throttle never goes down during a migration; the sender releases it when the migration
 * ends, on every path.
 *
 * @packageDocumentation
 */

/** Units of a throttle: the held share of the guest's time, in 1/10000 (as vcpu/throttle.ts). */
export const THROTTLE_UNITS = 10_000;
/** The strongest throttle: the guest still runs 1/10000 of the time. */
export const MAX_THROTTLE_UNITS = THROTTLE_UNITS - 1;

/** What one pre-copy pass measured. */
export interface PassMeasure {
  /** Bytes the pass sent (its dirty pages; the bulk pass: all it sent). */
  readonly sentBytes: number;
  /** Bytes the guest dirtied while the pass ran (the next harvest). */
  readonly dirtiedBytes: number;
  /** How long the pass took, ms. */
  readonly ms: number;
  /** Bytes of RAM the guest uses (has written; dirtied ≥ ~90 % of it: saturated). */
  readonly trackedBytes: number;
}

/** The parameters the policy reads (percent, as the QAPI parameters). */
export interface ThrottleSettings {
  readonly initialPercent: number;
  readonly incrementPercent: number;
}

/** QEMU's ceiling (99 %), which its steps stop at. */
const QEMU_MAX = 9900;
/** Above this share of the tracked RAM, a pass's dirty count says "at least". */
const SATURATED = 0.9;
/** The guest's dirtying is brought down to this share of the link's send rate. */
const LINK_SHARE = 0.5;

/**
 * The throttle (1/10000) for the next pass after a pass that did not converge, given the
 * throttle it ran under (`current`, 1/10000). Monotonic: never below `current`.
 */
export function nextThrottle(current: number, pass: PassMeasure, s: ThrottleSettings): number {
  const cur = clampUnits(current);
  if (!(pass.ms > 0) || !(pass.sentBytes > 0)) return cur;
  if (pass.dirtiedBytes <= pass.sentBytes / 2) return cur; // converging on its own
  const qemu =
    cur === 0
      ? s.initialPercent * 100
      : cur < QEMU_MAX
        ? Math.min(QEMU_MAX, cur + s.incrementPercent * 100)
        : THROTTLE_UNITS - (THROTTLE_UNITS - cur) / 2; // past 99 %: halve the run share
  const ran = (THROTTLE_UNITS - cur) / THROTTLE_UNITS;
  // run share that brings dirtying to LINK_SHARE of the send rate (sent / ms vs dirtied / ms)
  let share = (ran * LINK_SHARE * pass.sentBytes) / pass.dirtiedBytes;
  if (pass.dirtiedBytes >= SATURATED * pass.trackedBytes) share /= 2;
  const byRate = THROTTLE_UNITS * (1 - share);
  return clampUnits(Math.max(cur, qemu, byRate));
}

/** `units` as a whole number in [0, MAX_THROTTLE_UNITS]. */
function clampUnits(units: number): number {
  if (!(units > 0)) return 0;
  return Math.min(MAX_THROTTLE_UNITS, Math.round(units));
}

/** A throttle in 1/10000 as the percentage MigrationInfo reports (two decimals). */
export function throttlePercent(units: number): number {
  return clampUnits(units) / 100;
}
