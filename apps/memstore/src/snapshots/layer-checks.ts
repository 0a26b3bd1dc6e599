import type { Catalog } from '../catalog/catalog.js';
import type { RegionRow, SnapshotBlockRow, SnapshotRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { formatBytes } from '../regions/size.js';
import { checkLayerBitmap } from './layer-pages.js';
import type { NewSnapshot, SnapshotBlockSource } from './snapshot.js';

/**
 * The CreateSnapshot rules of layers (snapshots with a parent). All refusals are
 * SNAPSHOT_INVALID and come before anything is written.
 */

function invalid(message: string): MemstoreError {
  return new MemstoreError('SNAPSHOT_INVALID', message);
}

/** The parent a layer names: its row and its blocks in order. */
export interface LayerParent {
  readonly row: SnapshotRow;
  readonly blocks: readonly SnapshotBlockRow[];
}

/**
 * Checks the request's shape against its parent: without a parent no block may carry
 * `layerPages`; with one, the blocks are the parent's (same count, and per position the same
 * id, guest base and size), each carries a bitmap of exactly its pages, and each is owned (a
 * layer's region means nothing without its layer).
 */
export function checkLayerShape(req: NewSnapshot, parent: LayerParent | undefined): void {
  if (parent === undefined) {
    const given = req.blocks.find((b) => b.layerPages.length > 0);
    if (given !== undefined) {
      throw invalid(
        `RAM block "${given.id}" gives layer_pages but the snapshot names no parent; ` +
          'layer_pages is only for a layer: name its parent, or leave layer_pages empty',
      );
    }
    return;
  }
  const name = parent.row.name;
  if (req.blocks.length !== parent.blocks.length) {
    throw invalid(
      `a layer has its parent's blocks; parent "${name}" has ${parent.blocks.length} ` +
        `(${parent.blocks.map((b) => `"${b.blockId}"`).join(', ')}) but ${req.blocks.length} were given`,
    );
  }
  req.blocks.forEach((b, i) => {
    const p = parent.blocks[i]!;
    if (b.id !== p.blockId || b.guestBase !== p.guestBase || b.size !== p.size) {
      throw invalid(
        `RAM block ${i} of a layer must match block ${i} of parent "${name}" ` +
          `("${p.blockId}" at 0x${p.guestBase.toString(16)}, ${formatBytes(p.size)}), ` +
          `not "${b.id}" at 0x${b.guestBase.toString(16)}, ${formatBytes(b.size)}`,
      );
    }
    checkLayerBitmap(b.layerPages, b.size, `RAM block "${b.id}" (a layer on "${name}")`);
    if (!b.owned) {
      throw invalid(
        `RAM block "${b.id}": a layer must own its regions (owned = true); a layer's region ` +
          'holds only the pages that differ from its parent and is deleted with the layer',
      );
    }
  });
}

/**
 * Checks a block's region against the layers already recorded: a layer's region must be new
 * to the catalog's snapshots (it holds this layer's pages only), and no snapshot may name a
 * region that is another layer's (it does not hold a whole block).
 */
export function checkLayerRegion(
  catalog: Catalog,
  block: SnapshotBlockSource,
  region: RegionRow,
  layered: boolean,
  namesOf: (blocks: readonly SnapshotBlockRow[]) => string[],
): void {
  const users = catalog.snapshots.blocksOfRegion(region.id);
  if (users.length === 0) return;
  const what = `RAM block "${block.id}"`;
  const layers = users.filter((u) => u.layerPages !== null);
  if (layers.length > 0) {
    throw invalid(
      `${what}: region "${region.name}" is a layer of snapshot(s) ${namesOf(layers).join(', ')} ` +
        'and holds only that layer’s pages; layer on that snapshot (parent) instead of naming its region',
    );
  }
  if (layered) {
    throw invalid(
      `${what}: region "${region.name}" is already part of snapshot(s) ${namesOf(users).join(', ')}; ` +
        "a layer's block needs a region of its own holding only the layer's pages",
    );
  }
}
