/**
 * How a switchover ended in the target's vCPU thread: what its main thread learns, once.
 *
 * @packageDocumentation
 */

/** Where a switchover ended in the target's vCPU thread. */
export type SwitchoverStage =
  /** The leases moved here and the guest runs (or is held paused, as it was on the source). */
  | 'run'
  /** The slot was given up before the source's stop: nothing moved; the state takes the stream. */
  | 'aborted'
  /** The lease step could not be prepared (no lease channel, no arms file): the slot was aborted. */
  | 'connect'
  /** The state did not arrive, or does not load. */
  | 'state'
  /** A lease transfer failed, or its answer is unknown. */
  | 'lease';

/** The target vCPU thread's report of one switchover. */
export interface SwitchoverOutcome {
  /** True: the leases moved here and the guest runs (or is held, when REQUEST was not RUN). */
  readonly ok: boolean;
  readonly stage: SwitchoverStage;
  /** Per lease transfer: the epoch now held here, or null where it did not move. */
  readonly epochs: readonly (number | null)[];
  /** Epoch ms: the guest's start here (ok), and the source vCPU's stop. */
  readonly runAtMs: number;
  readonly stopAtMs: number;
  /**
   * Epoch ms (diagnostics): this thread saw the stop, the source published the state, this
   * thread had it restored, and had the leases.
   */
  readonly stopSeenAtMs?: number;
  readonly publishedAtMs?: number;
  readonly restoredAtMs?: number;
  readonly leasedAtMs?: number;
  readonly code?: string;
  readonly message?: string;
  /** A transfer may have been applied without its answer (the lease may be here). */
  readonly uncertain?: boolean;
}

/** Where the pause of a switchover went: milliseconds after the source's stop, wall clocks. */
export function downtimeParts(o: SwitchoverOutcome): Record<string, number> {
  return {
    stopToRunMs: o.runAtMs - o.stopAtMs,
    stopSeenMs: (o.stopSeenAtMs ?? 0) - o.stopAtMs,
    publishedMs: (o.publishedAtMs ?? 0) - o.stopAtMs,
    restoredMs: (o.restoredAtMs ?? 0) - o.stopAtMs,
    leasedMs: (o.leasedAtMs ?? 0) - o.stopAtMs,
  };
}
