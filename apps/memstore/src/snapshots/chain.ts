import type { Catalog } from '../catalog/catalog.js';
import type { RegionRow, SnapshotBlockRow, SnapshotRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { layerBitmapBytes } from './layer-pages.js';

/**
 * Chains of snapshots: a layer names its parent, whose blocks hold every page the layer's
 * bitmaps do not. The catalog keeps the chain acyclic (a parent exists before its layer and
 * cannot be deleted while a layer names it); the walks below still stop on a cycle, reporting
 * SNAPSHOT_CORRUPT, so a damaged catalog cannot hang a call.
 */

/** One region of a clone's chain, bottom to top (AttachClone's `layers`). */
export interface ChainRegion {
  readonly regionId: string;
  readonly regionName: string;
  readonly path: string;
  readonly identity: string;
  /** The pages this region contributes over those below; undefined for the root (whole block). */
  readonly pages: Uint8Array | undefined;
}

function corrupt(message: string): MemstoreError {
  return new MemstoreError('SNAPSHOT_CORRUPT', message);
}

/** The snapshots below `row`, its parent first and the root last. */
export function ancestorsOf(catalog: Catalog, row: SnapshotRow): SnapshotRow[] {
  const out: SnapshotRow[] = [];
  const seen = new Set<string>([row.id]);
  let parentId = row.parentId;
  while (parentId !== null) {
    if (seen.has(parentId)) {
      throw corrupt(`the parents of snapshot "${row.name}" form a cycle; the catalog is damaged`);
    }
    seen.add(parentId);
    const parent = catalog.snapshots.getById(parentId);
    if (parent === undefined) {
      throw corrupt(`a parent of snapshot "${row.name}" (id ${parentId}) is missing`);
    }
    out.push(parent);
    parentId = parent.parentId;
  }
  return out;
}

/** Number of snapshots below `row` (0 for a standalone one). */
export function depthOf(catalog: Catalog, row: SnapshotRow): number {
  return ancestorsOf(catalog, row).length;
}

/** The layer block (a block with a bitmap) that names the region, if any. */
export function layerBlockOfRegion(
  catalog: Catalog,
  regionId: string,
): SnapshotBlockRow | undefined {
  return catalog.snapshots.blocksOfRegion(regionId).find((b) => b.layerPages !== null);
}

/**
 * What a clone of `region` maps, bottom to top: the root region (whole block), then each
 * layer's region with its bitmap, the last being `region` itself. A region that is no layer's
 * answers itself alone. REGION_LOST when a region of the chain lost its file, SNAPSHOT_CORRUPT
 * when the catalog's chain is broken.
 */
export function cloneChainOf(catalog: Catalog, region: RegionRow): ChainRegion[] {
  const chain: ChainRegion[] = [];
  let block = layerBlockOfRegion(catalog, region.id);
  let current = region;
  const seen = new Set<string>();
  for (;;) {
    if (current.lostAt !== null) {
      throw new MemstoreError(
        'REGION_LOST',
        `region "${current.name}"${chain.length > 0 ? ` (below "${region.name}" in its chain)` : ''} ` +
          `has lost its file ${current.path}; clones of "${region.name}" cannot be made — delete the snapshot`,
      );
    }
    chain.push({
      regionId: current.id,
      regionName: current.name,
      path: current.path,
      identity: current.identity,
      pages: block?.layerPages ?? undefined,
    });
    if (block === undefined || block.layerPages === null) break;
    if (block.layerPages.length !== layerBitmapBytes(block.size)) {
      throw corrupt(
        `the layer bitmap of region "${current.name}" is ${block.layerPages.length} bytes, not ` +
          `${layerBitmapBytes(block.size)}; the catalog is damaged — delete the layer`,
      );
    }
    if (seen.has(block.snapshotId)) throw corrupt(`the chain of region "${region.name}" loops`);
    seen.add(block.snapshotId);
    const below = parentBlockOf(catalog, block);
    const row = catalog.getById(below.regionId);
    if (row === undefined) {
      throw corrupt(`the region of block "${below.blockId}" below "${region.name}" is missing`);
    }
    block = below;
    current = row;
  }
  return chain.reverse();
}

/** The parent's block with the same id as the layer block `block`. SNAPSHOT_CORRUPT. */
export function parentBlockOf(catalog: Catalog, block: SnapshotBlockRow): SnapshotBlockRow {
  const layer = catalog.snapshots.getById(block.snapshotId);
  const parentId = layer?.parentId ?? null;
  if (layer === undefined || parentId === null) {
    throw corrupt(`block "${block.blockId}" has a layer bitmap but its snapshot has no parent`);
  }
  const below = catalog.snapshots.blocksOf(parentId).find((b) => b.blockId === block.blockId);
  if (below === undefined) {
    throw corrupt(
      `snapshot "${layer.name}": its parent has no block "${block.blockId}"; the catalog is damaged`,
    );
  }
  return below;
}
