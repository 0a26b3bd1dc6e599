import { HANDOFF_VERSION, type Logger } from '@handoff/service';
import { statfsSync } from 'node:fs';
import { join } from 'node:path';
import { Catalog, CATALOG_FILE_NAME } from './catalog/catalog.js';
import type { MemstoreSettings } from './config.js';
import { LeaseManager } from './leases/lease-manager.js';
import { ensureDirectory } from './regions/directories.js';
import { reconcile, type ReconcileReport } from './regions/reconcile.js';
import { RegionStore } from './regions/region-store.js';
import { Templates } from './templates/templates.js';

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

  constructor(
    readonly settings: MemstoreSettings,
    readonly catalog: Catalog,
    readonly report: ReconcileReport,
    logger: Logger,
    /** True when the volatile directory is a tmpfs (decides how lease changes commit). */
    readonly volatileOnTmpfs = isTmpfs(settings.volatileDir),
  ) {
    this.regions = new RegionStore(
      catalog,
      settings,
      { maxRegionSize: settings.maxRegionSize, maxTotalSize: settings.maxTotalSize },
      logger,
    );
    this.leases = new LeaseManager(catalog, logger, { volatileOnTmpfs });
    this.templates = new Templates(catalog, this.regions, logger);
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

  /** Closes the catalog (releasing its lock). Idempotent. */
  close(): void {
    this.catalog.close();
  }
}

/**
 * Prepares the directories, opens the catalog and reconciles it.
 * Throws REGION_UNSAFE_DIRECTORY, CATALOG_LOCKED, CATALOG_INCOMPATIBLE, CATALOG_CORRUPT.
 */
export function openMemstore(settings: MemstoreSettings, logger: Logger): Memstore {
  ensureDirectory(settings.stateDir, 'state directory (--state-dir)', { shared: false });
  ensureDirectory(settings.volatileDir, 'volatile directory (--volatile-dir)', { shared: true });
  ensureDirectory(settings.persistentDir, 'persistent directory (--persistent-dir)', {
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
    return new Memstore(settings, catalog, report, logger, volatileOnTmpfs);
  } catch (err) {
    catalog.close();
    throw err;
  }
}
