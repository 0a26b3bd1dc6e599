/**
 * Folders for a service's side-channel files (sockets, slots, keys): this user's alone, so no
 * other user can open, plant or swap what is in them. The files inside are created 0600 by
 * their owners; the folder's mode closes the race between a file's creation and its chmod.
 *
 * @packageDocumentation
 */
import { chmodSync, lstatSync, mkdirSync } from 'node:fs';
import { ServiceError } from '../errors.js';

function notOurs(path: string, what: string, detail: string): ServiceError {
  return new ServiceError(
    'SERVICE_INVALID_CONFIG',
    `the ${what} ${path} ${detail}; pick a folder only this user (uid ${process.getuid?.()}) can enter`,
  );
}

/**
 * Checks that `path` is a folder (not a symlink) of this user that group and others cannot
 * enter. With `tighten`, a looser mode on it is set to 0700 instead of refused.
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` saying what is wrong and what to give instead
 */
export function checkPrivateDirectory(path: string, what: string, tighten = false): void {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `the ${what} ${path} cannot be read (${(err as NodeJS.ErrnoException).code}); create it (mode 0700) or pick another`,
      { cause: err },
    );
  }
  if (st.isSymbolicLink()) throw notOurs(path, what, 'is a symlink');
  if (!st.isDirectory()) throw notOurs(path, what, 'is not a folder');
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) throw notOurs(path, what, `belongs to uid ${st.uid}`);
  if ((st.mode & 0o077) === 0) return;
  if (!tighten) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `the ${what} ${path} is open to group or others (mode ${(st.mode & 0o777).toString(8)}); ` +
        'run chmod 700 on it, or pick a folder only this user can enter',
    );
  }
  chmodSync(path, 0o700);
}

/**
 * Creates `path` (and its parents) with mode 0700 when missing, and makes sure it is a folder
 * of this user closed to everyone else (a looser mode on our own folder is tightened).
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` for a symlink, a file, or another user's folder
 */
export function ensurePrivateDirectory(path: string, what: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  checkPrivateDirectory(path, what, true);
}
