import { MemstoreError } from '../errors.js';

/**
 * Region names are chosen by users; file names never are. A region's file
 * name is derived from the catalog id and the region id only, so no name can
 * reach the file system (no traversal, no clashes, no odd characters).
 */

/** Allowed region names: lower-case letters, digits, '.', '_' and '-'; 1..63 characters; starts alphanumeric. */
export const REGION_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Throws REGION_INVALID_NAME unless `name` is a valid region name. */
export function validateRegionName(name: string): void {
  if (!REGION_NAME_PATTERN.test(name)) {
    const shown = JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name);
    throw new MemstoreError(
      'REGION_INVALID_NAME',
      `region name ${shown} is not valid; use 1 to 63 characters from a-z, 0-9, '.', '_' and '-', ` +
        `starting with a letter or digit (e.g. "vm1-ram")`,
    );
  }
}

/** Longest holder identity accepted (e.g. "vmm-a/vm1"). */
export const MAX_HOLDER_LENGTH = 256;

/**
 * Throws REGION_INVALID_ARGUMENT unless `holder` is a usable holder identity:
 * non-empty, at most 256 characters, no control characters.
 */
export function validateHolder(holder: string, what = 'holder'): void {
  // eslint-disable-next-line no-control-regex
  if (holder === '' || holder.length > MAX_HOLDER_LENGTH || /[\u0000-\u001f\u007f]/.test(holder)) {
    throw new MemstoreError(
      'REGION_INVALID_ARGUMENT',
      `${what} ${JSON.stringify(holder.slice(0, 80))} is not valid; pass a non-empty identity of at most ` +
        `${MAX_HOLDER_LENGTH} printable characters, e.g. "vmm-a/vm1"`,
    );
  }
}

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const FILE_NAME_PATTERN = new RegExp(`^region-([0-9a-f]{16})-(${UUID})\\.mem$`);

/** The file name of a region: `region-<catalog id>-<region id>.mem`. */
export function regionFileName(catalogId: string, regionId: string): string {
  const name = `region-${catalogId}-${regionId}.mem`;
  if (!FILE_NAME_PATTERN.test(name)) {
    throw new Error(`internal: bad catalog id ${catalogId} or region id ${regionId}`);
  }
  return name;
}

/** Parses a file name made by regionFileName; undefined for any other name. */
export function parseRegionFileName(
  fileName: string,
): { catalogId: string; regionId: string } | undefined {
  const m = FILE_NAME_PATTERN.exec(fileName);
  if (m === null) return undefined;
  return { catalogId: m[1]!, regionId: m[2]! };
}
