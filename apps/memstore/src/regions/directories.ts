import { accessSync, constants, lstatSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { MemstoreError } from '../errors.js';

/** The directories a memstore owns files in. */
export interface RegionDirectories {
  /** tmpfs directory of VOLATILE region files. */
  readonly volatileDir: string;
  /** Directory of PERSISTENT region files. */
  readonly persistentDir: string;
}

/**
 * Creates `path` (mode 0700) if needed and checks it is a directory we own
 * and can write. `shared` is for directories inside a world-writable parent
 * such as /dev/shm: there the path must not be a symlink and must be closed to
 * group and others (no read, write or search), so nobody else can plant, swap
 * or open files in it (the lease arms file, region files, the lease socket).
 * Throws REGION_UNSAFE_DIRECTORY with what to fix.
 */
export function ensureDirectory(path: string, what: string, opts: { shared: boolean }): void {
  try {
    mkdirSync(path, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new MemstoreError(
      'REGION_UNSAFE_DIRECTORY',
      `cannot create the ${what} ${path} (${(err as Error).message}); create it yourself or pick another path`,
      { cause: err },
    );
  }
  const st = opts.shared ? lstatSync(path) : statSync(path);
  if (st.isSymbolicLink() || !st.isDirectory()) {
    throw new MemstoreError(
      'REGION_UNSAFE_DIRECTORY',
      `the ${what} ${path} is not a plain directory${st.isSymbolicLink() ? ' (it is a symlink)' : ''}; remove it or pick another path`,
    );
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new MemstoreError(
      'REGION_UNSAFE_DIRECTORY',
      `the ${what} ${path} belongs to uid ${st.uid}, not to this process (uid ${uid}); pick a directory you own`,
    );
  }
  if (opts.shared && (st.mode & 0o077) !== 0) {
    throw new MemstoreError(
      'REGION_UNSAFE_DIRECTORY',
      `the ${what} ${path} is open to group or others (mode ${(st.mode & 0o777).toString(8)}); run chmod 700 on it`,
    );
  }
  try {
    accessSync(path, constants.R_OK | constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new MemstoreError(
      'REGION_UNSAFE_DIRECTORY',
      `the ${what} ${path} is not readable and writable by this process; fix its permissions`,
      { cause: err },
    );
  }
}

/** Names of the entries of a directory (empty if it does not exist). */
export function listDirectory(path: string): string[] {
  try {
    return readdirSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
