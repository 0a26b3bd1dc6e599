import type { RegionRow, SnapshotBlockRow } from '../catalog/rows.js';

/**
 * The `snapshot_blocks` rows of a standalone snapshot whose every block has a fresh region of
 * its own (an import, a flatten): block `position` is held, whole, by `regions[position]`,
 * which the snapshot owns.
 */
export function ownedBlockRows(
  snapshotId: string,
  blocks: readonly { readonly id: string; readonly guestBase: number; readonly size: number }[],
  regions: readonly RegionRow[],
): SnapshotBlockRow[] {
  return blocks.map((b, position) => ({
    snapshotId,
    position,
    blockId: b.id,
    guestBase: b.guestBase,
    size: b.size,
    regionId: regions[position]!.id,
    identity: regions[position]!.identity,
    owned: true,
    layerPages: null,
  }));
}
