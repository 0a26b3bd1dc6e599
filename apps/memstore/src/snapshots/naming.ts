import { MemstoreError } from '../errors.js';
import { REGION_NAME_PATTERN } from '../regions/naming.js';

/**
 * Snapshot names follow the region naming rules; file names come from ids only (the catalog id
 * and the snapshot id), so no name reaches the file system.
 */

/** Folder of the device-state files inside the persistent directory. */
export const SNAPSHOT_DIR_NAME = 'snapshots';

/** Throws SNAPSHOT_INVALID unless `name` is a valid snapshot name (the region name rules). */
export function validateSnapshotName(name: string, what = 'snapshot name'): void {
  if (!REGION_NAME_PATTERN.test(name)) {
    const shown = JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}…` : name);
    throw new MemstoreError(
      'SNAPSHOT_INVALID',
      `${what} ${shown} is not valid; use 1 to 63 characters from a-z, 0-9, '.', '_' and '-', ` +
        `starting with a letter or digit (e.g. "web-golden")`,
    );
  }
}

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const STATE_FILE_PATTERN = new RegExp(`^snapshot-([0-9a-f]{16})-(${UUID})\\.state$`);

/** The device-state file name of a snapshot: `snapshot-<catalog id>-<snapshot id>.state`. */
export function stateFileName(catalogId: string, snapshotId: string): string {
  const name = `snapshot-${catalogId}-${snapshotId}.state`;
  if (!STATE_FILE_PATTERN.test(name)) {
    throw new Error(`internal: bad catalog id ${catalogId} or snapshot id ${snapshotId}`);
  }
  return name;
}

/** Parses a name made by stateFileName; undefined for any other name. */
export function parseStateFileName(
  fileName: string,
): { catalogId: string; snapshotId: string } | undefined {
  const m = STATE_FILE_PATTERN.exec(fileName);
  if (m === null) return undefined;
  return { catalogId: m[1]!, snapshotId: m[2]! };
}
