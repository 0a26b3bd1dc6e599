import type { Logger } from '@handoff/service';
import { join, resolve } from 'node:path';
import type { Catalog } from '../catalog/catalog.js';
import { listDirectory } from '../regions/directories.js';
import { removeRegionFile, setFileMode, statRegionFile } from '../regions/files.js';
import { parseStateFileName } from './naming.js';
import { STATE_FILE_MODE, STATE_HEADER_BYTES } from './state-file.js';

/** What start-up found about snapshots. */
export interface SnapshotReconcileReport {
  /** Device-state files of this catalog without a row (a crash mid-create or mid-delete), removed. */
  readonly orphansRemoved: number;
  /** Snapshots whose device-state file is missing or of the wrong size (kept, reported). */
  readonly stateMissing: number;
  /** Snapshots with a region whose file is lost (kept, reported). */
  readonly regionsLost: number;
  /** Snapshots in the catalog. */
  readonly snapshots: number;
}

/**
 * Brings the snapshots and their device-state files into agreement at start-up, after the
 * regions' reconciliation (which marks lost regions and restores file modes):
 * 1. files named for this catalog that no snapshot row claims: removed (warned);
 * 2. rows whose state file is missing or has the wrong size: kept and warned — GetSnapshot
 *    still answers them, reading their device state fails with SNAPSHOT_CORRUPT;
 * 3. rows with a LOST region: kept and warned — restoring them fails with REGION_LOST;
 * 4. state files forced to mode 0600.
 */
export function reconcileSnapshots(
  catalog: Catalog,
  stateDir: string,
  logger: Logger,
): SnapshotReconcileReport {
  let orphansRemoved = 0;
  let stateMissing = 0;
  let regionsLost = 0;
  const rows = catalog.snapshots.list();
  const claimed = new Set(rows.map((r) => resolve(r.statePath)));
  for (const entry of listDirectory(stateDir)) {
    const parsed = parseStateFileName(entry);
    if (parsed === undefined || parsed.catalogId !== catalog.catalogId) continue;
    const path = resolve(join(stateDir, entry));
    if (claimed.has(path)) continue;
    removeRegionFile(path);
    orphansRemoved++;
    logger.warn(
      { path, snapshot: parsed.snapshotId },
      'removed an orphan device-state file (no snapshot row)',
    );
  }
  for (const row of rows) {
    const stat = statRegionFile(row.statePath);
    if (stat === undefined || !stat.isFile || stat.size < STATE_HEADER_BYTES + row.stateBytes) {
      stateMissing++;
      logger.warn(
        { snapshot: row.id, name: row.name, path: row.statePath, size: stat?.size },
        'the device-state file of a snapshot is missing or short: the snapshot is kept but cannot ' +
          'be restored (restore the file, or delete the snapshot)',
      );
    } else if (stat.mode !== STATE_FILE_MODE) {
      setFileMode(row.statePath, STATE_FILE_MODE);
    }
    const lost = catalog.snapshots
      .blocksOf(row.id)
      .map((b) => catalog.getById(b.regionId))
      .filter((r) => r !== undefined && r.lostAt !== null);
    if (lost.length > 0) {
      regionsLost++;
      logger.warn(
        { snapshot: row.id, name: row.name, regions: lost.map((r) => r!.name) },
        'a region of a snapshot is LOST: the snapshot is kept but cannot be restored (delete it)',
      );
    }
  }
  const report = { orphansRemoved, stateMissing, regionsLost, snapshots: rows.length };
  logger.info(report, 'snapshot reconciliation done');
  return report;
}
