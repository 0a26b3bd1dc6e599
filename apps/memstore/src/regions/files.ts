import {
  chmodSync,
  closeSync,
  constants,
  fsyncSync,
  ftruncateSync,
  openSync,
  statfsSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * The region files themselves: create (sparse, zero-filled), stat, seal,
 * remove. No catalog knowledge here; the callers order these steps against
 * catalog commits (see region-store.ts).
 */

/** Mode of a writable region file (owner read/write). */
export const REGION_FILE_MODE = 0o600;
/** Mode of a sealed template file (read-only for everyone, per the template contract). */
export const SEALED_FILE_MODE = 0o444;

/**
 * Creates a zero-filled region file of `size` bytes (sparse: nothing is
 * allocated until written). Fails if the file exists (O_EXCL) or is a
 * symlink. With `durable`, the file and its directory entry are fsynced
 * before returning, so the file survives power loss once the caller commits.
 * On failure nothing is left behind.
 */
export function createRegionFile(path: string, size: number, durable: boolean): void {
  const fd = openSync(
    path,
    constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    REGION_FILE_MODE,
  );
  try {
    ftruncateSync(fd, size);
    if (durable) fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    removeRegionFile(path);
    throw err;
  }
  closeSync(fd);
  if (durable) syncDirectory(dirname(path));
}

/** Removes a region file; false if it did not exist. */
export function removeRegionFile(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** What stat tells about a region file. */
export interface RegionFileStat {
  readonly size: number;
  /** Bytes backed by memory or disk (st_blocks * 512). */
  readonly allocatedBytes: number;
  /** Permission bits (e.g. 0o600). */
  readonly mode: number;
  readonly isFile: boolean;
}

/** Stats a region file; undefined if it does not exist. */
export function statRegionFile(path: string): RegionFileStat | undefined {
  const st = statSync(path, { throwIfNoEntry: false });
  if (st === undefined) return undefined;
  return {
    size: st.size,
    allocatedBytes: st.blocks * 512,
    mode: st.mode & 0o777,
    isFile: st.isFile(),
  };
}

/** Sets the file's permission bits. */
export function setFileMode(path: string, mode: number): void {
  chmodSync(path, mode);
}

/** Flushes a file's data to its device (async: may take long for a large persistent file). */
export async function syncFileData(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/** fsyncs a directory, making entries created or removed in it durable. */
export function syncDirectory(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Free bytes an unprivileged writer can use on the file system holding `dir`. */
export function availableBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}
