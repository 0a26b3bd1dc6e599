import { emptyRamStats, type MigrationInfo, type RamStats } from '@handoff/qapi';
import { isFinished, type Job } from './job.js';

/** What one child last contributed to the totals. */
interface Contribution {
  ram: RamStats;
  deviceBytes: number;
  finished: boolean;
}

/** The parts of a live update's info its children sum up (see {@link LiveUpdateTotals}). */
export type LiveUpdateSums = Pick<
  MigrationInfo,
  'ram' | 'downtimeUs' | 'deviceBytes' | 'setupTimeMs' | 'iteration'
>;

const RAM_KEYS = Object.keys(emptyRamStats()) as (keyof RamStats)[];

/**
 * A live update's totals over its children, kept up to date in O(1) per child change (a live
 * update of N VMs sees O(N) child changes; summing all children on each would be O(N²)): RAM
 * counters and device bytes summed (each child's latest report replaces its previous one), the
 * longest guest pause and setup, and how many children ended (`iteration`).
 *
 * Contract: a child's downtime and setup time only grow (a vmm reports them once, at the end), so
 * the maxima are kept as running maxima.
 */
export class LiveUpdateTotals {
  private readonly seen = new Map<string, Contribution>();
  private readonly ram: Record<keyof RamStats, number> = { ...emptyRamStats() };
  private downtimeUs = 0;
  private setupTimeMs = 0;
  private deviceBytes = 0;
  private finished = 0;

  /** Takes a child's latest snapshot into the totals. */
  observe(child: Job): void {
    const before = this.seen.get(child.id);
    const i = child.info;
    for (const k of RAM_KEYS) this.ram[k] += i.ram[k] - (before?.ram[k] ?? 0);
    this.deviceBytes += i.deviceBytes - (before?.deviceBytes ?? 0);
    this.downtimeUs = Math.max(this.downtimeUs, i.downtimeUs);
    this.setupTimeMs = Math.max(this.setupTimeMs, i.setupTimeMs);
    const finished = isFinished(child);
    if (finished && before?.finished !== true) this.finished++;
    else if (!finished && before?.finished === true) this.finished--;
    this.seen.set(child.id, { ram: i.ram, deviceBytes: i.deviceBytes, finished });
  }

  /** The totals now (a fresh object: the caller may keep it). */
  sums(): LiveUpdateSums {
    return {
      ram: { ...this.ram },
      downtimeUs: this.downtimeUs,
      deviceBytes: this.deviceBytes,
      setupTimeMs: this.setupTimeMs,
      iteration: this.finished,
    };
  }
}
