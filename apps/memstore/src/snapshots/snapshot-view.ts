import type { Catalog } from '../catalog/catalog.js';
import type { SnapshotBlockRow, SnapshotRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { statRegionFile } from '../regions/files.js';
import { depthOf } from './chain.js';
import { countLayerPages } from './layer-pages.js';
import { describeSnapshotRef, type Snapshot, type SnapshotRef } from './snapshot.js';

/**
 * Reading snapshots out of the catalog: finding a row, and the reported view of it (region
 * names, stored bytes, layer bitmaps, depth, the clones that run from it).
 */

/** The snapshot row a reference names. SNAPSHOT_NOT_FOUND. */
export function findSnapshot(catalog: Catalog, ref: SnapshotRef): SnapshotRow {
  const row =
    'id' in ref ? catalog.snapshots.getById(ref.id) : catalog.snapshots.getByName(ref.name);
  if (row === undefined) {
    throw new MemstoreError(
      'SNAPSHOT_NOT_FOUND',
      `snapshot ${describeSnapshotRef(ref)} does not exist; list the snapshots with ListSnapshots (vmctl snapshot list)`,
    );
  }
  return row;
}

/** Clone holders attached to any of `blocks`' regions, without duplicates, oldest first. */
export function clonesOfBlocks(catalog: Catalog, blocks: readonly SnapshotBlockRow[]): string[] {
  const holders = new Set<string>();
  for (const regionId of new Set(blocks.map((b) => b.regionId))) {
    for (const c of catalog.clonesOf(regionId)) holders.add(c.holder);
  }
  return [...holders];
}

/** The reported view of a snapshot row and its blocks (stats each region file). */
export function snapshotView(
  catalog: Catalog,
  row: SnapshotRow,
  blocks: readonly SnapshotBlockRow[],
): Snapshot {
  let storedBytes = row.stateBytes;
  const views = blocks.map((b) => {
    const region = catalog.getById(b.regionId);
    const stat =
      region === undefined || region.lostAt !== null ? undefined : statRegionFile(region.path);
    const stored = stat?.allocatedBytes ?? 0;
    if (b.owned) storedBytes += stored;
    return {
      id: b.blockId,
      guestBase: b.guestBase,
      size: b.size,
      regionId: b.regionId,
      regionName: region?.name ?? '',
      identity: b.identity,
      owned: b.owned,
      storedBytes: stored,
      layerPages: b.layerPages ?? undefined,
      layerPageCount: b.layerPages === null ? 0 : countLayerPages(b.layerPages),
    };
  });
  return {
    id: row.id,
    name: row.name,
    kind: row.kind,
    template: row.template,
    createdAt: new Date(row.createdAt),
    vmName: row.vmName,
    vmmId: row.vmmId,
    vmSpec: row.vmSpec,
    blocks: views,
    deviceStateBytes: row.stateBytes,
    deviceStateCrc32c: row.stateCrc32c,
    clones: clonesOfBlocks(catalog, blocks),
    parent: row.parentId === null ? undefined : catalog.snapshots.getById(row.parentId)?.name,
    storedBytes,
    depth: depthOf(catalog, row),
  };
}
