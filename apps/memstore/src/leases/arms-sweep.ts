import type { Logger } from '@handoff/service';
import { lstatSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import {
  ARM_FLIPPED,
  ARMS_FILE_BYTES,
  ARMS_LAYOUT_VERSION,
  ARMS_MAGIC,
  ARMS_SLOT_BYTES,
  ARMS_SLOT_COUNT,
  armState,
  slotOffset,
} from './arms.js';

/**
 * Removes the lease arms files (`lease-arms-<catalog id>`) that memstores killed without a clean
 * stop left in a volatile directory. Several memstores may share the directory, and a memstore
 * restarted on its catalog reconciles its own file, so a file is removed only when all of:
 *
 * - it is not this memstore's own (that one is reconciled by LeaseArmsFile.open);
 * - it is a regular file of the arms layout (magic, version, geometry) — anything else is not
 *   ours to delete;
 * - no process maps it (`/proc/<pid>/maps`: a running memstore maps its file for its lifetime,
 *   a vmm while it flips an arm);
 * - it holds no FLIPPED slot: such a flip moved a lease that its memstore has not written to
 *   its catalog yet; only a start of that memstore on its catalog may commit it, so the file is
 *   kept and a warning names it. ARMED and CANCELLED slots are void once nobody maps the file (a
 *   target that maps the path later finds no file, or a new one whose words never match).
 */

/** A lease arms file's name: `lease-arms-` and a catalog id (hex). */
const ARMS_NAME = /^lease-arms-[0-9a-f]{1,64}$/;

/** Whether some process maps the file with inode `ino` at `path` (injectable for tests). */
export type MappedCheck = (path: string, ino: number) => boolean;

/** What a sweep did. */
export interface ArmsSweepReport {
  /** Files deleted. */
  readonly removed: string[];
  /** Files kept because a process maps them (a live memstore, or a vmm flipping). */
  readonly inUse: string[];
  /** Files kept because they hold flips not committed to their catalog. */
  readonly unsettled: string[];
}

/**
 * Sweeps `volatileDir` for stale lease arms files other than `ownName` (see the module doc).
 * Never throws: a file that cannot be judged is left alone.
 */
export function sweepStaleArmsFiles(
  volatileDir: string,
  ownName: string,
  logger: Logger,
  mapped: MappedCheck = mappedByAnyProcess,
): ArmsSweepReport {
  const report: ArmsSweepReport = { removed: [], inUse: [], unsettled: [] };
  let names: string[];
  try {
    names = readdirSync(volatileDir);
  } catch {
    return report;
  }
  for (const name of names) {
    if (name === ownName || !ARMS_NAME.test(name)) continue;
    const path = join(volatileDir, name);
    try {
      const st = lstatSync(path);
      if (!st.isFile() || st.size !== ARMS_FILE_BYTES) continue;
      if (mapped(path, st.ino)) {
        report.inUse.push(path);
        continue;
      }
      const flips = flippedSlots(readFileSync(path));
      if (flips === undefined) continue; // not the arms layout: not ours
      if (flips > 0) {
        logger.warn(
          { path, flipped: flips },
          'lease arms file of another catalog holds flips not committed: kept; start the ' +
            'memstore of that catalog to commit them (or delete the file if that catalog is gone)',
        );
        report.unsettled.push(path);
        continue;
      }
      unlinkSync(path);
      logger.info({ path }, 'stale lease arms file removed (no memstore maps it)');
      report.removed.push(path);
    } catch (err) {
      logger.warn({ path, err }, 'lease arms file could not be judged; left alone');
    }
  }
  return report;
}

/** The number of FLIPPED slots, or undefined when `bytes` is not the arms layout. */
export function flippedSlots(bytes: Uint8Array): number | undefined {
  if (bytes.length !== ARMS_FILE_BYTES) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (
    view.getUint32(0, true) !== ARMS_MAGIC ||
    view.getUint32(4, true) !== ARMS_LAYOUT_VERSION ||
    view.getUint32(8, true) !== ARMS_SLOT_COUNT ||
    view.getUint32(12, true) !== ARMS_SLOT_BYTES
  ) {
    return undefined;
  }
  let flips = 0;
  for (let i = 0; i < ARMS_SLOT_COUNT; i++) {
    if (armState(view.getInt32(slotOffset(i), true)) === ARM_FLIPPED) flips++;
  }
  return flips;
}

/**
 * Whether any process whose maps this one may read maps inode `ino` at `path` (Linux
 * `/proc/<pid>/maps`: the inode field and the path, possibly marked deleted). Processes of other
 * users cannot open the file (0600 in a 0700 folder) and are skipped.
 */
export function mappedByAnyProcess(path: string, ino: number): boolean {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return true; // cannot tell: keep the file
  }
  const inode = ` ${ino} `;
  for (const pid of pids) {
    let maps: string;
    try {
      maps = readFileSync(`/proc/${pid}/maps`, 'latin1');
    } catch {
      continue; // gone, or not ours to read
    }
    if (!maps.includes(path)) continue;
    for (const line of maps.split('\n')) {
      if (line.includes(inode) && (line.endsWith(path) || line.endsWith(`${path} (deleted)`))) {
        return true;
      }
    }
  }
  return false;
}
