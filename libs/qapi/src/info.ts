/**
 * Progress and result of one migration (QAPI `MigrationInfo`), as a domain
 * type with camelCase fields, and its QAPI-style JSON form with kebab-case
 * names (what `vmctl ... --output json` prints).
 *
 * @packageDocumentation
 */
import type { MigrationStatus } from './status.js';

/**
 * RAM transfer statistics (QAPI `MigrationStats`). Counters only grow during
 * one migration. All values are non-negative integers except `mbps`.
 */
export interface RamStats {
  /** Bytes of RAM traffic sent so far (page data, zero markers, run headers). */
  readonly transferred: number;
  /** Bytes of RAM still to send: pages not sent yet plus pages dirtied since sent. */
  readonly remaining: number;
  /** Bytes of guest RAM the migration covers, bypassed shared blocks included. */
  readonly total: number;
  /** Pages found all-zero by scanning and sent as a zero marker (QEMU's `duplicate`). */
  readonly duplicate: number;
  /** Never-written pages sent as zero runs without being scanned (zero-blocks). */
  readonly zeroPages: number;
  /** Pages sent whole. */
  readonly normal: number;
  /** Bytes of the pages sent whole. */
  readonly normalBytes: number;
  /** Pages the guest dirtied per second, as of the last dirty sync. */
  readonly dirtyPagesRate: number;
  /** Recent RAM throughput in megabits per second (10^6 bit/s); may have a fraction. */
  readonly mbps: number;
  /** Dirty-bitmap syncs so far (one per pre-copy pass). */
  readonly dirtySyncCount: number;
  /** Bytes of shared RAM handed off by reference and never sent (bypass-shared-memory). */
  readonly bypassedBytes: number;
}

/** What carried a migration. */
export type MigrationTransport = 'switchover-slot' | 'data-channel' | 'grpc';

/**
 * How the leases of shared regions moved to the target: `armed` (memstore armed them; the
 * target's vCPU thread flipped them), `lease-channel` (that thread sent TransferLease over
 * memstore's lease channel), `stream` (the target's main thread sent TransferLease at the
 * stream's final marker), or `none` (no block travelled by reference).
 */
export type LeaseMove = 'armed' | 'lease-channel' | 'stream' | 'page-source' | 'none';

/** How the device state was encoded: the compact layout (switchover only) or the container. */
export type StateEncoding = 'compact' | 'container';

/** How a migration travelled (Handoff's own; QEMU reports nothing like it). */
export interface MigrationRoute {
  readonly transport: MigrationTransport;
  readonly leaseMove: LeaseMove;
  /** Absent until the device state moved. */
  readonly stateEncoding?: StateEncoding;
  /** The target built the machine at PrepareIncoming, before the migration began. */
  readonly targetPrebuilt: boolean;
}

/**
 * Milestones in milliseconds after the migration began, on the source's clock (the target's
 * stamps through the wall clock both hosts share); 0 = not reached.
 */
export interface MigrationTimeline {
  /** The source's vCPU stopped. */
  readonly stoppedMs: number;
  /** The device state left the source (published into the slot, or its frame was sent). */
  readonly statePublishedMs: number;
  /** The target's vCPU ran the guest. */
  readonly targetRunningMs: number;
}

/**
 * How a post-copy goes (Handoff's own members; QEMU reports only `postcopy-requests`): the
 * target runs the guest while its memory arrives through the target host's memory service.
 */
export interface PostcopyStats {
  /** Pages the target's guest asked for (QEMU's `postcopy-requests`). */
  readonly requests: number;
  /** Pages that arrived in the background. */
  readonly backgroundPages: number;
  /** Pages present on the target now. */
  readonly presentPages: number;
  /** Page requests' latency on the target (request to present), p50 and p99, microseconds. */
  readonly faultP50Us: number;
  readonly faultP99Us: number;
  /** Source vCPU stop until every page was on the target, ms (0 until then). */
  readonly fillMs: number;
}

/** Progress and result of one migration (QAPI `MigrationInfo`). */
export interface MigrationInfo {
  /** Current status. */
  readonly status: MigrationStatus;
  /** RAM transfer statistics. */
  readonly ram: RamStats;
  /** Milliseconds since setup began; the whole duration once completed. */
  readonly totalTimeMs: number;
  /** Milliseconds spent in `setup`. */
  readonly setupTimeMs: number;
  /** Guest pause pre-copy currently expects if it switched over now, in milliseconds. */
  readonly expectedDowntimeMs: number;
  /** Real guest pause, source vCPU stop to target vCPU resume, in microseconds (known once completed). */
  readonly downtimeUs: number;
  /** Pre-copy passes so far. */
  readonly iteration: number;
  /** Bytes of device state sent (vmstate sections). */
  readonly deviceBytes: number;
  /**
   * Share of the guest's vCPU time auto-converge takes away, percent (0: not throttled; up to
   * 99.99). Once terminal: the highest it reached (the guest then runs at full speed again).
   */
  readonly cpuThrottlePercentage: number;
  /** What went wrong and what to do; set for `failed` (absent otherwise). */
  readonly errorDesc?: string;
  /** How it travelled; absent until setup decided it. */
  readonly route?: MigrationRoute;
  /** Its milestones; absent until the source's vCPU stopped. */
  readonly timeline?: MigrationTimeline;
  /** Post-copy progress; absent unless the migration went post-copy. */
  readonly postcopy?: PostcopyStats;
}

/** RAM statistics with every counter at zero. */
export function emptyRamStats(): RamStats {
  return {
    transferred: 0,
    remaining: 0,
    total: 0,
    duplicate: 0,
    zeroPages: 0,
    normal: 0,
    normalBytes: 0,
    dirtyPagesRate: 0,
    mbps: 0,
    dirtySyncCount: 0,
    bypassedBytes: 0,
  };
}

/** A MigrationInfo with the given status and every counter at zero. */
export function emptyMigrationInfo(status: MigrationStatus = 'none'): MigrationInfo {
  return {
    status,
    ram: emptyRamStats(),
    totalTimeMs: 0,
    setupTimeMs: 0,
    expectedDowntimeMs: 0,
    downtimeUs: 0,
    iteration: 0,
    deviceBytes: 0,
    cpuThrottlePercentage: 0,
  };
}

/** QAPI JSON form of {@link RamStats} (kebab-case names). */
export interface QapiRamStats {
  /** See {@link RamStats.transferred}. */
  readonly transferred: number;
  /** See {@link RamStats.remaining}. */
  readonly remaining: number;
  /** See {@link RamStats.total}. */
  readonly total: number;
  /** See {@link RamStats.duplicate}. */
  readonly duplicate: number;
  /** See {@link RamStats.zeroPages}. */
  readonly 'zero-pages': number;
  /** See {@link RamStats.normal}. */
  readonly normal: number;
  /** See {@link RamStats.normalBytes}. */
  readonly 'normal-bytes': number;
  /** See {@link RamStats.dirtyPagesRate}. */
  readonly 'dirty-pages-rate': number;
  /** See {@link RamStats.mbps}. */
  readonly mbps: number;
  /** See {@link RamStats.dirtySyncCount}. */
  readonly 'dirty-sync-count': number;
  /** See {@link RamStats.bypassedBytes}. */
  readonly 'bypassed-bytes': number;
}

/**
 * QAPI JSON form of {@link MigrationInfo} (kebab-case names). Which members
 * appear depends on the status, as in QEMU's `query-migrate`; see
 * {@link migrationInfoToQapi}.
 */
export interface QapiMigrationInfo {
  /** The status name. */
  readonly status: MigrationStatus;
  /** Milliseconds since setup began (whole duration once completed). */
  readonly 'total-time'?: number;
  /** Milliseconds spent in setup. */
  readonly 'setup-time'?: number;
  /** Expected guest pause in milliseconds (while in progress). */
  readonly 'expected-downtime'?: number;
  /** Real guest pause in milliseconds, with microsecond resolution (e.g. 3.412; once completed). */
  readonly downtime?: number;
  /** Pre-copy passes. */
  readonly iteration?: number;
  /** Bytes of device state sent. */
  readonly 'device-bytes'?: number;
  /** Percent of the vCPU's time auto-converge takes away (only when it throttled). */
  readonly 'cpu-throttle-percentage'?: number;
  /** RAM statistics. */
  readonly ram?: QapiRamStats;
  /** What went wrong and what to do. */
  readonly 'error-desc'?: string;
  /** How it travelled (see {@link MigrationRoute}). */
  readonly route?: {
    readonly transport: MigrationTransport;
    readonly 'lease-move': LeaseMove;
    readonly 'state-encoding'?: StateEncoding;
    readonly 'target-prebuilt': boolean;
  };
  /** Post-copy progress (see {@link PostcopyStats}). */
  readonly postcopy?: {
    readonly 'postcopy-requests': number;
    readonly 'background-pages': number;
    readonly 'present-pages': number;
    readonly 'fault-p50-us': number;
    readonly 'fault-p99-us': number;
    readonly 'fill-time': number;
  };
  /** Milestones in milliseconds after the start (see {@link MigrationTimeline}). */
  readonly timeline?: {
    readonly stopped: number;
    readonly 'state-published': number;
    readonly 'target-running': number;
  };
}

/** The QAPI JSON form of RAM statistics. */
export function ramStatsToQapi(ram: RamStats): QapiRamStats {
  return {
    transferred: ram.transferred,
    remaining: ram.remaining,
    total: ram.total,
    duplicate: ram.duplicate,
    'zero-pages': ram.zeroPages,
    normal: ram.normal,
    'normal-bytes': ram.normalBytes,
    'dirty-pages-rate': ram.dirtyPagesRate,
    mbps: ram.mbps,
    'dirty-sync-count': ram.dirtySyncCount,
    'bypassed-bytes': ram.bypassedBytes,
  };
}

/** Statuses during which progress counters and `expected-downtime` are shown. */
const IN_PROGRESS: ReadonlySet<MigrationStatus> = new Set<MigrationStatus>([
  'active',
  'postcopy-active',
  'postcopy-paused',
  'postcopy-recover',
  'pre-switchover',
  'device',
  'cancelling',
]);

/**
 * The QAPI-style JSON object for a MigrationInfo, with kebab-case names and
 * QEMU's status-dependent members (stable, so scripts can rely on it):
 *
 * | status | members besides `status` |
 * |---|---|
 * | none, setup, failed, cancelled | none |
 * | active, postcopy-active, postcopy-paused, postcopy-recover, pre-switchover, device, cancelling | `total-time`, `setup-time`, `expected-downtime`, `iteration`, `device-bytes`, `ram` |
 * | completed | `total-time`, `setup-time`, `downtime`, `iteration`, `device-bytes`, `ram` |
 *
 * `cpu-throttle-percentage` appears with those members once auto-converge throttled the guest.
 * `error-desc` appears whenever the info has a non-empty `errorDesc`
 * (normally with `failed`), `route`, `timeline` and `postcopy` whenever they are known
 * (Handoff's own members: how the migration travelled and when it reached its
 * milestones). `downtime` is in milliseconds with microsecond resolution: it is
 * the guest's real pause, from the source vCPU's stop to the target vCPU's
 * start, not the source's share of it that QEMU reports.
 */
export function migrationInfoToQapi(info: MigrationInfo): QapiMigrationInfo {
  const progress = IN_PROGRESS.has(info.status);
  const completed = info.status === 'completed';
  const out: { -readonly [K in keyof QapiMigrationInfo]: QapiMigrationInfo[K] } = {
    status: info.status,
  };
  if (progress || completed) {
    out['total-time'] = info.totalTimeMs;
    out['setup-time'] = info.setupTimeMs;
    if (progress) out['expected-downtime'] = info.expectedDowntimeMs;
    if (completed) out.downtime = info.downtimeUs / 1000;
    out.iteration = info.iteration;
    out['device-bytes'] = info.deviceBytes;
    if (info.cpuThrottlePercentage > 0) out['cpu-throttle-percentage'] = info.cpuThrottlePercentage;
    out.ram = ramStatsToQapi(info.ram);
  }
  if (info.errorDesc !== undefined && info.errorDesc !== '') out['error-desc'] = info.errorDesc;
  if (info.route !== undefined) {
    const r = info.route;
    out.route = {
      transport: r.transport,
      'lease-move': r.leaseMove,
      ...(r.stateEncoding !== undefined ? { 'state-encoding': r.stateEncoding } : {}),
      'target-prebuilt': r.targetPrebuilt,
    };
  }
  if (info.postcopy !== undefined) {
    const p = info.postcopy;
    out.postcopy = {
      'postcopy-requests': p.requests,
      'background-pages': p.backgroundPages,
      'present-pages': p.presentPages,
      'fault-p50-us': p.faultP50Us,
      'fault-p99-us': p.faultP99Us,
      'fill-time': p.fillMs,
    };
  }
  if (info.timeline !== undefined) {
    const t = info.timeline;
    out.timeline = {
      stopped: t.stoppedMs,
      'state-published': t.statePublishedMs,
      'target-running': t.targetRunningMs,
    };
  }
  return out;
}
