import { HANDOFF_VERSION, type Logger } from '@handoff/service';
import { statfsSync } from 'node:fs';
import { join } from 'node:path';
import { Catalog, CATALOG_FILE_NAME } from './catalog/catalog.js';
import type { MemstoreSettings } from './config.js';
import { LeaseArmsFile, type LeftoverArm } from './leases/arms.js';
import { sweepStaleArmsFiles } from './leases/arms-sweep.js';
import { LeaseManager, type ForcedRelease } from './leases/lease-manager.js';
import { procTable, type ProcessTable } from './leases/processes.js';
import { HolderSessions } from './leases/sessions.js';
import type { RegionRef } from './regions/region.js';
import { ensureDirectory } from './regions/directories.js';
import { reconcile, type ReconcileReport } from './regions/reconcile.js';
import { RegionStore } from './regions/region-store.js';
import { Templates } from './templates/templates.js';
import { SNAPSHOT_DIR_NAME } from './snapshots/naming.js';
import { reconcileSnapshots, type SnapshotReconcileReport } from './snapshots/reconcile.js';
import { SnapshotStore } from './snapshots/snapshot-store.js';
import type { ExportPlan } from './snapshots/export-writer.js';
import { planExport } from './snapshots/exporter.js';
import { SnapshotImport, type ImportStart } from './snapshots/importer.js';
import type { Snapshot, SnapshotRef } from './snapshots/snapshot.js';
import { flattenSnapshot } from './snapshots/flatten.js';
import { LazyRegions } from './lazy/lazy-regions.js';
import { PageSources } from './lazy/page-sources.js';

/** Identity, totals and limits of a memstore (GetInfo). */
export interface MemstoreInfo {
  readonly version: string;
  readonly regionCount: number;
  readonly totalSize: number;
  readonly allocatedBytes: number;
  readonly volatileDir: string;
  readonly persistentDir: string;
  readonly maxRegionSize: number;
}

/** What tests may replace in a memstore. */
export interface MemstoreHooks {
  /** The process table holder processes are judged by (default: /proc). */
  readonly processes?: ProcessTable;
  /** The user lease-channel peers must run as, besides root (default: this process's). */
  readonly ownUid?: number;
}

/** Linux statfs magic of tmpfs. */
const TMPFS_MAGIC = 0x01021994;

/** True when `dir` is on a tmpfs (its files do not survive the OS). */
export function isTmpfs(dir: string): boolean {
  return statfsSync(dir).type === TMPFS_MAGIC;
}

/**
 * The memstore's domain, without any gRPC: the catalog, regions, leases and
 * templates over one set of directories. `openMemstore` prepares the
 * directories, opens the catalog (exclusively) and reconciles it with the
 * files before anything else may use it.
 */
export class Memstore {
  readonly regions: RegionStore;
  readonly leases: LeaseManager;
  readonly templates: Templates;
  /** Lease-holder sessions: who stands behind each vmm's holders, and fencing once gone. */
  readonly sessions: HolderSessions;
  /** Snapshots: device-state files and sealed regions, recorded in the catalog. */
  readonly snapshots: SnapshotStore;
  /** Target host: regions filled from another memstore (lazy/). */
  readonly lazy: LazyRegions;
  /** Source host: page sources other memstores read regions through (lazy/). */
  readonly pageSources: PageSources;
  /** The page channel's address once it listens ('' while not served). */
  pageAddress = '';

  constructor(
    readonly settings: MemstoreSettings,
    readonly catalog: Catalog,
    readonly report: ReconcileReport,
    private readonly logger: Logger,
    /** True when the volatile directory is a tmpfs (decides how lease changes commit). */
    readonly volatileOnTmpfs = isTmpfs(settings.volatileDir),
    /** The lease arms file (opened and reconciled by openMemstore); null: no arms. */
    arms: LeaseArmsFile | null = null,
    /** How long an arm may wait for its flip (tests shorten it). */
    armTtlMs?: number,
    now: () => number = Date.now,
    /** Test hooks: the process table and the uid hellos must come from. */
    hooks: MemstoreHooks = {},
    /** What start-up found about snapshots (openMemstore reconciles them). */
    readonly snapshotReport?: SnapshotReconcileReport,
  ) {
    this.leases = new LeaseManager(catalog, logger, { volatileOnTmpfs, arms, armTtlMs }, now);
    this.sessions = new HolderSessions(
      catalog,
      this.leases,
      logger.child({ component: 'holder-sessions' }),
      {
        graceMs: settings.holderGraceMs,
        sweepMs: settings.holderSweepMs,
        processes: hooks.processes ?? procTable,
        ownUid: hooks.ownUid ?? process.getuid?.() ?? 0,
      },
      now,
    );
    this.regions = new RegionStore(
      catalog,
      settings,
      { maxRegionSize: settings.maxRegionSize, maxTotalSize: settings.maxTotalSize },
      logger,
      now,
      this.leases,
      this.sessions,
    );
    this.templates = new Templates(catalog, this.regions, logger, now, this.leases);
    this.snapshots = new SnapshotStore(
      catalog,
      this.templates,
      snapshotDirOf(settings),
      { maxRegionSize: settings.maxRegionSize },
      logger,
      now,
      this.leases,
    );
    this.lazy = new LazyRegions(catalog, this.regions, logger.child({ component: 'lazy' }), now);
    this.pageSources = new PageSources(
      catalog,
      this.regions,
      this.leases,
      logger.child({ component: 'page-sources' }),
      () => this.pageAddress,
      now,
    );
  }

  /**
   * ForceReleaseLease: fences the region's lease unless its holder's process is alive (judged
   * now). LEASE_HOLDER_ALIVE, REGION_NOT_FOUND.
   */
  forceRelease(ref: RegionRef): ForcedRelease {
    return this.leases.forceRelease(ref, (holder, grantedAt) =>
      this.sessions.refresh(holder, grantedAt),
    );
  }

  /** What ExportSnapshot of `ref` writes (see snapshots/exporter.ts). */
  planExport(ref: SnapshotRef): ExportPlan {
    return planExport(this.catalog, this.snapshots, ref);
  }

  /** FlattenSnapshot: the layer `ref` written into a standalone snapshot `name` (snapshots/flatten.ts). */
  flattenSnapshot(ref: SnapshotRef, name: string): Promise<Snapshot> {
    return flattenSnapshot(
      {
        catalog: this.catalog,
        regions: this.regions,
        templates: this.templates,
        snapshots: this.snapshots,
        logger: this.logger,
      },
      ref,
      name,
    );
  }

  /** Starts an ImportSnapshot (see snapshots/importer.ts); SNAPSHOT_INVALID for a bad name. */
  beginImport(start: ImportStart): SnapshotImport {
    return new SnapshotImport(
      {
        catalog: this.catalog,
        regions: this.regions,
        templates: this.templates,
        snapshots: this.snapshots,
        maxRegionSize: this.settings.maxRegionSize,
        logger: this.logger,
      },
      start,
    );
  }

  /** GetInfo's answer. */
  info(): MemstoreInfo {
    const usage = this.regions.usage();
    return {
      version: HANDOFF_VERSION,
      ...usage,
      volatileDir: this.settings.volatileDir,
      persistentDir: this.settings.persistentDir,
      maxRegionSize: this.settings.maxRegionSize,
    };
  }

  /** False once close() ran. */
  get isOpen(): boolean {
    return this.catalog.isOpen;
  }

  /**
   * Settles the outstanding lease arms and removes the arms file (one whose arms cannot all be
   * settled is kept for the next start), then closes the catalog (releasing its lock).
   * `leave-arms` (tests of recovery) leaves the arms file as a killed process would.
   * Idempotent.
   */
  close(how: 'clean' | 'leave-arms' = 'clean'): void {
    this.lazy.close();
    this.pageSources.closeAll();
    this.sessions.close();
    this.leases.close(how === 'clean');
    this.catalog.close();
  }
}

/**
 * Prepares the directories, opens the catalog and reconciles it.
 * Throws REGION_UNSAFE_DIRECTORY, CATALOG_LOCKED, CATALOG_INCOMPATIBLE, CATALOG_CORRUPT.
 */
export function openMemstore(
  settings: MemstoreSettings,
  logger: Logger,
  /** Test hooks: the arms' TTL, the clock, the process table, the uid of lease-channel peers. */
  testing: { armTtlMs?: number; now?: () => number } & MemstoreHooks = {},
): Memstore {
  ensureDirectory(settings.stateDir, 'state directory (--state-dir)', { shared: false });
  ensureDirectory(settings.volatileDir, 'volatile directory (--volatile-dir)', { shared: true });
  ensureDirectory(settings.persistentDir, 'persistent directory (--persistent-dir)', {
    shared: false,
  });
  ensureDirectory(snapshotDirOf(settings), 'snapshot directory (<persistent-dir>/snapshots)', {
    shared: false,
  });
  const volatileOnTmpfs = isTmpfs(settings.volatileDir);
  if (!volatileOnTmpfs) {
    logger.warn(
      { volatileDir: settings.volatileDir },
      'the volatile directory is not on tmpfs: volatile regions will be written to disk ' +
        '(and their lease changes fsynced like persistent ones)',
    );
  }
  const catalog = Catalog.open(join(settings.stateDir, CATALOG_FILE_NAME), logger);
  try {
    const report = reconcile(catalog, settings, logger);
    const snapshotReport = reconcileSnapshots(catalog, snapshotDirOf(settings), logger);
    logger.info(
      {
        catalog: catalog.path,
        catalogId: catalog.catalogId,
        schemaVersion: catalog.openInfo.schemaVersion,
        volatileDir: settings.volatileDir,
        persistentDir: settings.persistentDir,
      },
      'catalog open',
    );
    const armsName = leaseArmsFileName(catalog.catalogId);
    sweepStaleArmsFiles(settings.volatileDir, armsName, logger);
    const { arms, leftovers } = openArms(join(settings.volatileDir, armsName), logger);
    const memstore = new Memstore(
      settings,
      catalog,
      report,
      logger,
      volatileOnTmpfs,
      arms,
      testing.armTtlMs,
      testing.now,
      testing,
      snapshotReport,
    );
    try {
      memstore.leases.recoverArms(leftovers);
      // After the arms: a flip already moved a lease its holder's death must not fence.
      memstore.sessions.recover();
    } catch (err) {
      memstore.close();
      throw err;
    }
    return memstore;
  } catch (err) {
    catalog.close();
    throw err;
  }
}

/** The folder of snapshot device-state files: `<persistent-dir>/snapshots`. */
export function snapshotDirOf(settings: { readonly persistentDir: string }): string {
  return join(settings.persistentDir, SNAPSHOT_DIR_NAME);
}

/** Name of the lease arms file in the volatile directory (one per catalog, like region files). */
export function leaseArmsFileName(catalogId: string): string {
  return `lease-arms-${catalogId}`;
}

/** Opens (or creates) the arms file; on failure warns and serves without arms. */
function openArms(
  path: string,
  logger: Logger,
): { arms: LeaseArmsFile | null; leftovers: LeftoverArm[] } {
  try {
    const { file, leftovers } = LeaseArmsFile.open(path, logger);
    return { arms: file, leftovers };
  } catch (err) {
    logger.warn(
      { path, err },
      'cannot create the lease arms file: ArmTransfer answers LEASE_ARM_UNSUPPORTED ' +
        '(migrations use TransferLease)',
    );
    return { arms: null, leftovers: [] };
  }
}
