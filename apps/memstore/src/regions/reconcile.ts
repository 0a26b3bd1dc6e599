import type { Logger } from '@handoff/service';
import { join, resolve } from 'node:path';
import type { Catalog } from '../catalog/catalog.js';
import { listDirectory, type RegionDirectories } from './directories.js';
import {
  REGION_FILE_MODE,
  SEALED_FILE_MODE,
  removeRegionFile,
  setFileMode,
  statRegionFile,
} from './files.js';
import { parseRegionFileName } from './naming.js';

/** What start-up reconciliation found and repaired. */
export interface ReconcileReport {
  /** Creations interrupted by a crash: 'creating' rows (and their files) removed. */
  readonly rolledBack: number;
  /** Files of this catalog without a row (e.g. a crash mid-delete), removed. */
  readonly orphansRemoved: number;
  /** Regions whose file is missing, now reported LOST. */
  readonly lost: number;
  /** LOST regions whose file is back with the right size, active again. */
  readonly recovered: number;
  /** Files whose permission bits did not match the region state, fixed. */
  readonly modesFixed: number;
  /** Files whose size differs from the catalog (left alone, logged). */
  readonly sizeMismatches: number;
  /** Regions in the catalog after reconciliation. */
  readonly regions: number;
}

/**
 * Brings the catalog and the region directories into agreement at start-up,
 * before the server takes calls:
 * 1. 'creating' rows (a create interrupted by a crash): file and row removed;
 * 2. files named for this catalog that no row claims: removed (warned);
 *    files of other catalogs sharing the directory are never touched;
 * 3. rows whose file is missing: marked LOST (warned); a LOST row whose
 *    file is back with the right size is recovered;
 * 4. sealed files forced back to 0444, active ones to 0600.
 */
export function reconcile(
  catalog: Catalog,
  dirs: RegionDirectories,
  logger: Logger,
): ReconcileReport {
  let rolledBack = 0;
  let orphansRemoved = 0;
  let lost = 0;
  let recovered = 0;
  let modesFixed = 0;
  let sizeMismatches = 0;
  const now = Date.now();

  for (const row of catalog.listAllRows()) {
    if (row.state !== 'creating') continue;
    const removed = removeRegionFile(row.path);
    catalog.deleteRegion(row.id);
    rolledBack++;
    logger.warn(
      { region: row.id, name: row.name, path: row.path, fileRemoved: removed },
      'rolled back a region creation interrupted by a crash',
    );
  }

  const rows = catalog.listAllRows();
  const claimed = new Set(rows.map((r) => resolve(r.path)));
  for (const dir of new Set([resolve(dirs.volatileDir), resolve(dirs.persistentDir)])) {
    for (const entry of listDirectory(dir)) {
      const parsed = parseRegionFileName(entry);
      if (parsed === undefined || parsed.catalogId !== catalog.catalogId) continue;
      const path = join(dir, entry);
      if (claimed.has(path)) continue;
      removeRegionFile(path);
      orphansRemoved++;
      logger.warn(
        { path, region: parsed.regionId },
        'removed an orphan region file (no catalog row)',
      );
    }
  }

  for (const row of rows) {
    const stat = statRegionFile(row.path);
    if (stat === undefined || !stat.isFile) {
      if (row.lostAt === null) {
        catalog.markLost(row.id, now);
        lost++;
        logger.warn(
          { region: row.id, name: row.name, path: row.path },
          'region file is missing: region marked LOST (delete it, or restore the file and restart)',
        );
      }
      continue;
    }
    if (stat.size !== row.size) {
      sizeMismatches++;
      logger.warn(
        { region: row.id, name: row.name, path: row.path, expected: row.size, actual: stat.size },
        'region file size differs from the catalog; left as is',
      );
    }
    if (row.lostAt !== null) {
      if (stat.size !== row.size) continue;
      catalog.clearLost(row.id);
      recovered++;
      logger.info({ region: row.id, name: row.name }, 'region file is back: region no longer LOST');
    }
    const wanted = row.state === 'sealed' ? SEALED_FILE_MODE : REGION_FILE_MODE;
    if (stat.mode !== wanted) {
      setFileMode(row.path, wanted);
      modesFixed++;
    }
  }

  const report: ReconcileReport = {
    rolledBack,
    orphansRemoved,
    lost,
    recovered,
    modesFixed,
    sizeMismatches,
    regions: rows.length,
  };
  logger.info(report, 'reconciliation done');
  return report;
}
