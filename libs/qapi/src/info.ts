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
  /** What went wrong and what to do; set for `failed` (absent otherwise). */
  readonly errorDesc?: string;
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
  /** RAM statistics. */
  readonly ram?: QapiRamStats;
  /** What went wrong and what to do. */
  readonly 'error-desc'?: string;
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
 * | active, postcopy-active, pre-switchover, device, cancelling | `total-time`, `setup-time`, `expected-downtime`, `iteration`, `device-bytes`, `ram` |
 * | completed | `total-time`, `setup-time`, `downtime`, `iteration`, `device-bytes`, `ram` |
 *
 * `error-desc` appears whenever the info has a non-empty `errorDesc`
 * (normally with `failed`). `downtime` is in milliseconds with microsecond
 * resolution, and means the guest's real pause: from the source's vCPU stop
 * to the target's vCPU resume (QEMU reports only the source's side).
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
    out.ram = ramStatsToQapi(info.ram);
  }
  if (info.errorDesc !== undefined && info.errorDesc !== '') out['error-desc'] = info.errorDesc;
  return out;
}
