import type { Catalog } from '../catalog/catalog.js';
import type { RegionRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { describeRef, type RegionRef } from './region.js';

/**
 * Finds the catalog row a reference names; rows still being created are
 * invisible. Throws REGION_NOT_FOUND.
 */
export function findRegion(catalog: Catalog, ref: RegionRef): RegionRow {
  const row = 'id' in ref ? catalog.getById(ref.id) : catalog.getByName(ref.name);
  if (row === undefined || row.state === 'creating') {
    throw new MemstoreError(
      'REGION_NOT_FOUND',
      `region ${describeRef(ref)} does not exist; list the regions with ListRegions (vmctl region list)`,
    );
  }
  return row;
}
