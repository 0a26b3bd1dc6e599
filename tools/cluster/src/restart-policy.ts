/**
 * When the local cluster restarts a service that died: after a delay that doubles with every
 * crash in a row, back to the first delay once the service stayed up a while, and not at all
 * once it crashed too often in a short window (a service that cannot stay up is reported, not
 * restarted forever). Pure: the caller passes the clock.
 */

/** How a crashed service is restarted. */
export interface RestartPolicy {
  /** Delay before the first restart after a healthy run, in ms. */
  readonly initialDelayMs: number;
  /** Longest delay; each crash in a row doubles the delay up to it. */
  readonly maxDelayMs: number;
  /** A service that ran at least this long before it crashed starts over at the first delay. */
  readonly stableAfterMs: number;
  /** Crashes within {@link RestartPolicy.windowMs} after which it is not restarted any more. */
  readonly maxCrashes: number;
  readonly windowMs: number;
}

/** 0.5 s doubling to 10 s; reset after 30 s up; giving up after 6 crashes within a minute. */
export const DEFAULT_RESTART_POLICY: RestartPolicy = {
  initialDelayMs: 500,
  maxDelayMs: 10_000,
  stableAfterMs: 30_000,
  maxCrashes: 6,
  windowMs: 60_000,
};

/** What to do after a crash. */
export type RestartDecision =
  | { readonly restart: true; readonly delayMs: number }
  | { readonly restart: false; readonly crashes: number };

/** The restart state of one service. */
export class RestartBackoff {
  private nextDelayMs: number;
  private crashes: number[] = [];

  constructor(private readonly policy: RestartPolicy = DEFAULT_RESTART_POLICY) {
    this.nextDelayMs = policy.initialDelayMs;
  }

  /**
   * The service crashed at `now` after it had been up since `upSince` (ms, same clock): restart
   * it after `delayMs`, or give up (`crashes` within the window).
   */
  crashed(now: number, upSince: number): RestartDecision {
    if (now - upSince >= this.policy.stableAfterMs) this.nextDelayMs = this.policy.initialDelayMs;
    this.crashes = this.crashes.filter((t) => now - t < this.policy.windowMs);
    this.crashes.push(now);
    if (this.crashes.length >= this.policy.maxCrashes) {
      return { restart: false, crashes: this.crashes.length };
    }
    const delayMs = this.nextDelayMs;
    this.nextDelayMs = Math.min(this.nextDelayMs * 2, this.policy.maxDelayMs);
    return { restart: true, delayMs };
  }
}
