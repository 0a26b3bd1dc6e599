/**
 * The statistics of one outgoing migration in one object: RAM counters, the rate meter, how it
 * travelled (route) and when it reached its milestones (timeline), and the parts of the pause
 * for the log. {@link MigrationStats.info} turns them into the QAPI-shaped MigrationInfo.
 *
 * @packageDocumentation
 */
import {
  emptyMigrationInfo,
  type LeaseMove,
  type MigrationInfo,
  type MigrationStatus,
  type MigrationTransport,
  type PostcopyStats,
  type StateEncoding,
} from '@handoff/qapi';
import type { PageCounts } from './pages/page-sender.js';
import { PAGE_SIZE } from './pages/frames.js';
import { throttlePercent } from './converge.js';

/** The window the rate (`ram.mbps`) is measured over. */
const RATE_WINDOW_MS = 1000;

const now = (): number => performance.now();

/** Statistics of one outgoing migration; the sender updates the fields as it goes. */
export class MigrationStats {
  /** performance.now() when the migration began. */
  readonly started = now();
  /** Bytes of guest RAM the migration covers, and those handed off by reference. */
  total = 0;
  bypassed = 0;
  /** RAM bytes sent (page data and run headers), and those still to send. */
  transferred = 0;
  remaining = 0;
  /** Pre-copy passes, dirty syncs, and pages dirtied per second at the last sync. */
  iteration = 0;
  syncs = 0;
  dirtyRate = 0;
  expectedDowntimeMs = 0;
  /** The vCPU throttle auto-converge applies (1/10000; the highest reached, once terminal). */
  throttleUnits = 0;
  deviceBytes = 0;
  setupMs = 0;
  /** Set once terminal. */
  totalMs = 0;
  downtimeUs = 0;
  /** How it travels (null until setup decided). */
  transport: MigrationTransport | null = null;
  leaseMove: LeaseMove = 'none';
  stateEncoding: StateEncoding | null = null;
  targetPrebuilt = false;
  /** Post-copy progress as the target last reported it (undefined without post-copy). */
  postcopy: PostcopyStats | undefined;
  /** Milestones, ms after {@link started}; the pause's parts (ms), for the log only. */
  readonly marks: Record<string, number> = {};
  pauseParts: Record<string, number> = {};
  private rateFrom = 0;
  private rateBytes = 0;
  private mbps = 0;

  constructor(private readonly pages: Readonly<PageCounts>) {}

  /** Records milestone `what` at `at` (performance.now(), default now); returns ms after the start. */
  mark(what: string, at = now()): number {
    const ms = at - this.started;
    this.marks[what] = ms;
    return ms;
  }

  /** Records milestone `what` at wall-clock `epochMs` (a vCPU's stamp, of either process). */
  markWall(what: string, epochMs: number): void {
    if (epochMs > 0) this.marks[what] = epochMs - performance.timeOrigin - this.started;
  }

  /** Counts `bytes` of RAM sent now; returns the bytes sent in the current rate window. */
  sent(bytes: number): { windowBytes: number; windowMs: number } {
    this.transferred += bytes;
    const t = now();
    if (this.rateFrom === 0 || t - this.rateFrom > RATE_WINDOW_MS) {
      this.rateFrom = t;
      this.rateBytes = 0;
    }
    this.rateBytes += bytes;
    const windowMs = t - this.rateFrom;
    if (windowMs > 0) this.mbps = (this.rateBytes * 8) / (windowMs * 1000);
    return { windowBytes: this.rateBytes, windowMs };
  }

  /** Progress now (the final info once terminal: `done`). */
  info(status: MigrationStatus, done: boolean, errorDesc: string | undefined): MigrationInfo {
    const m = this.marks;
    const stopped = m['stopped'] ?? 0;
    return {
      ...emptyMigrationInfo(status),
      ram: {
        transferred: this.transferred,
        remaining: this.remaining,
        total: this.total,
        duplicate: this.pages.duplicate,
        zeroPages: this.pages.zeroPages,
        normal: this.pages.normal,
        normalBytes: this.pages.normal * PAGE_SIZE,
        dirtyPagesRate: Math.round(this.dirtyRate),
        mbps: this.mbps,
        dirtySyncCount: this.syncs,
        bypassedBytes: this.bypassed,
      },
      // The wire carries whole milliseconds; the logs and the timeline carry the fractions.
      totalTimeMs: Math.round(done ? this.totalMs : now() - this.started),
      setupTimeMs: Math.round(this.setupMs),
      expectedDowntimeMs: Math.round(this.expectedDowntimeMs),
      downtimeUs: this.downtimeUs,
      iteration: this.iteration,
      deviceBytes: this.deviceBytes,
      cpuThrottlePercentage: throttlePercent(this.throttleUnits),
      ...(errorDesc !== undefined ? { errorDesc } : {}),
      ...(this.transport !== null
        ? {
            route: {
              transport: this.transport,
              leaseMove: this.leaseMove,
              ...(this.stateEncoding !== null ? { stateEncoding: this.stateEncoding } : {}),
              targetPrebuilt: this.targetPrebuilt,
            },
          }
        : {}),
      ...(this.postcopy !== undefined ? { postcopy: this.postcopy } : {}),
      ...(stopped > 0
        ? {
            timeline: {
              stoppedMs: stopped,
              statePublishedMs: Math.max(0, m['statePublished'] ?? 0),
              targetRunningMs: Math.max(0, m['targetRuns'] ?? 0),
            },
          }
        : {}),
    };
  }
}
