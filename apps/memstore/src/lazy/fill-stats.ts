/** Latency samples kept per lazy region for its p50/p99 (the most recent ones). */
const SAMPLES = 4096;
/** How far back the fill rate looks. */
const RATE_WINDOW_MS = 1000;
/** At most one rate sample per this many ms. */
const RATE_STEP_MS = 50;

/**
 * A lazy fill's counters: pages by how they were asked for, page-request latencies (the last
 * {@link SAMPLES}, for p50/p99) and the byte rate over the last second. Plain numbers and typed
 * arrays: updated on the receive path, read by GetRegion.
 */
export class FillStats {
  demandPages = 0;
  backgroundPages = 0;
  faultRequests = 0;
  private readonly latencies = new Float64Array(SAMPLES);
  private latencyCount = 0;
  private bytes = 0;
  private readonly rateAt = new Float64Array(RATE_WINDOW_MS / RATE_STEP_MS + 2);
  private readonly rateBytes = new Float64Array(RATE_WINDOW_MS / RATE_STEP_MS + 2);
  private rateNext = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** A page request answered after `us` microseconds of waiting (0: the pages were there). */
  fault(us: number): void {
    this.faultRequests++;
    if (us > 0) this.latencies[this.latencyCount++ % SAMPLES] = us;
  }

  /** `n` bytes arrived. */
  arrived(n: number): void {
    this.bytes += n;
    const t = this.now();
    const last = (this.rateNext + this.rateAt.length - 1) % this.rateAt.length;
    if (t - this.rateAt[last]! >= RATE_STEP_MS || this.rateBytes[last] === 0) {
      this.rateAt[this.rateNext] = t;
      this.rateBytes[this.rateNext] = this.bytes;
      this.rateNext = (this.rateNext + 1) % this.rateAt.length;
    } else {
      this.rateBytes[last] = this.bytes;
      this.rateAt[last] = t;
    }
  }

  /** Bytes per second over the last second (0 when nothing arrived in it). */
  bytesPerSecond(): number {
    const t = this.now();
    let oldestAt = Infinity;
    let oldestBytes = 0;
    let newestAt = -Infinity;
    let newestBytes = 0;
    for (let i = 0; i < this.rateAt.length; i++) {
      const at = this.rateAt[i]!;
      if (this.rateBytes[i] === 0 || t - at > RATE_WINDOW_MS) continue;
      if (at < oldestAt) [oldestAt, oldestBytes] = [at, this.rateBytes[i]!];
      if (at > newestAt) [newestAt, newestBytes] = [at, this.rateBytes[i]!];
    }
    if (newestAt <= oldestAt) return 0;
    return Math.round(((newestBytes - oldestBytes) * 1000) / (newestAt - oldestAt));
  }

  /** The `q` quantile (0…1) of the recorded waits, microseconds; 0 without samples. */
  quantileUs(q: number): number {
    const n = Math.min(this.latencyCount, SAMPLES);
    if (n === 0) return 0;
    const sorted = this.latencies.slice(0, n).sort();
    return Math.round(sorted[Math.min(n - 1, Math.floor(q * n))]!);
  }
}
