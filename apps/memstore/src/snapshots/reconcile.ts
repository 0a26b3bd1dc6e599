import type { Logger } from '@handoff/service';
import { join, resolve } from 'node:path';
import type { Catalog } from '../catalog/catalog.js';
import { listDirectory } from '../regions/directories.js';
import { removeRegionFile, setFileMode, statRegionFile } from '../regions/files.js';
import type { SnapshotRow } from '../catalog/rows.js';
import { cloneChainOf } from './chain.js';
import { checkLayerBitmap } from './layer-pages.js';
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
  /**
   * Layers that cannot be cloned, restored or flattened: a region below them is lost, or their
   * chain in the catalog is damaged (a bitmap of the wrong length, a parent block missing).
   * Kept and reported; they can be deleted.
   */
  readonly layersBroken: number;
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
 * 4. layers whose chain is broken (a LOST region below them, or a damaged chain): kept and
 *    warned — attaching a clone to them fails (REGION_LOST, SNAPSHOT_CORRUPT);
 * 5. state files forced to mode 0600.
 */
export function reconcileSnapshots(
  catalog: Catalog,
  stateDir: string,
  logger: Logger,
): SnapshotReconcileReport {
  let orphansRemoved = 0;
  let stateMissing = 0;
  let regionsLost = 0;
  let layersBroken = 0;
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
  for (const row of rows) {
    const broken = brokenChainOf(catalog, row);
    if (broken === undefined) continue;
    layersBroken++;
    logger.warn(
      { snapshot: row.id, name: row.name, problem: broken },
      'a layer cannot be used: its chain is broken (it is kept; delete it, or bring back what is missing)',
    );
  }
  const report = {
    orphansRemoved,
    stateMissing,
    regionsLost,
    layersBroken,
    snapshots: rows.length,
  };
  logger.info(report, 'snapshot reconciliation done');
  return report;
}

/**
 * What is wrong with the chain of a layer (undefined when it is sound, or `row` is standalone
 * and carries no bitmap): each block's bitmap fits its block and the regions of every level
 * below are there.
 */
function brokenChainOf(catalog: Catalog, row: SnapshotRow): string | undefined {
  const blocks = catalog.snapshots.blocksOf(row.id);
  if (row.parentId === null) {
    return blocks.some((b) => b.layerPages !== null)
      ? 'a standalone snapshot has layer bitmaps'
      : undefined;
  }
  try {
    for (const b of blocks) {
      if (b.layerPages === null) return `block "${b.blockId}" of a layer has no layer bitmap`;
      checkLayerBitmap(b.layerPages, b.size, `block "${b.blockId}"`);
      const region = catalog.getById(b.regionId);
      if (region === undefined) return `the region of block "${b.blockId}" is missing`;
      cloneChainOf(catalog, region);
    }
  } catch (err) {
    return (err as Error).message;
  }
  return undefined;
}
