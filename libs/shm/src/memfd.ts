/**
 * Anonymous memory files (`memfd_create(2)`), their seals, and `fallocate(2)`.
 *
 * A memfd is a tmpfs file with no name in any directory: it lives as long as an fd or a mapping
 * refers to it. Hand it to another process by fd inheritance (`spawn` with `stdio: [..., fd]`),
 * `SCM_RIGHTS`, or `/proc/<pid>/fd/<fd>`.
 *
 * @packageDocumentation
 */
import { closeSync, ftruncateSync } from 'node:fs';

import { ShmError, describe } from './errors.js';
import { native, toShmError, type Classifier } from './native.js';
import { checkFd, checkFlag, checkInteger, checkOptions } from './validate.js';

/** Options of {@link createMemfd}. */
export interface MemfdOptions {
  /** Size in bytes (`ftruncate`); new bytes read as zero. Default 0 (size it later). */
  size?: number;
  /** Allow {@link addSeals} on this memfd (`MFD_ALLOW_SEALING`). Default false. */
  allowSealing?: boolean;
}

/**
 * File seals (`fcntl(F_ADD_SEALS)`), for memfds created with `allowSealing`.
 * - `'seal'` — no more seals can be added.
 * - `'shrink'` / `'grow'` — the size is fixed in that direction.
 * - `'write'` — the contents are fixed; fails while a shared writable mapping exists.
 * - `'future-write'` — no new writable shared mappings or writes; existing mappings keep writing
 *   (Linux 5.1+).
 *
 * A template is sealed with `['shrink', 'grow', 'write', 'seal']` once it is ready: clones can
 * then rely on it never changing under their private mappings.
 */
export type Seal = 'seal' | 'shrink' | 'grow' | 'write' | 'future-write';

const ALL_SEALS: readonly Seal[] = ['seal', 'shrink', 'grow', 'write', 'future-write'];

/** Longest memfd name the kernel accepts, in bytes. */
export const MEMFD_NAME_MAX = 249;

/**
 * Create a memfd and return its file descriptor (close-on-exec). The caller owns the fd and
 * closes it with `fs.closeSync`; mappings of it stay valid after that.
 *
 * @param name - shown in `/proc/<pid>/maps` as `/memfd:<name>`; at most {@link MEMFD_NAME_MAX} bytes
 * @param options - {@link MemfdOptions}
 * @throws ShmError `SHM_INVALID_ARGUMENT`, `SHM_NO_SPACE`, `SHM_SYSCALL_FAILED`
 */
export function createMemfd(name: string, options?: MemfdOptions): number {
  const op = 'createMemfd';
  if (typeof name !== 'string' || name.includes('\0') || Buffer.byteLength(name) > MEMFD_NAME_MAX) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: name ${describe(name)} must be a string of at most ${MEMFD_NAME_MAX} bytes without NUL.`,
    );
  }
  const o = checkOptions(op, options);
  const size = o.size === undefined ? 0 : checkInteger(op, 'size', o.size, 0);
  const flags = native.constants.flags;
  let bits = flags.MFD_CLOEXEC;
  if (checkFlag(op, 'allowSealing', o.allowSealing)) bits |= flags.MFD_ALLOW_SEALING;
  let fd: number;
  try {
    fd = native.memfdCreate(name, bits);
  } catch (err) {
    throw toShmError(
      `${op}(${name})`,
      err,
      (errno) =>
        errno === 'EMFILE' || errno === 'ENFILE'
          ? ['SHM_SYSCALL_FAILED', 'too many open files; close some or raise ulimit -n.']
          : undefined,
      ['SHM_SYSCALL_FAILED', 'memfd_create needs Linux 3.17+.'],
    );
  }
  if (size > 0) {
    try {
      ftruncateSync(fd, size);
    } catch (err) {
      closeSync(fd);
      throw toShmError(
        `${op}(${name}): sizing to ${size} bytes`,
        err,
        (errno) =>
          errno === 'ENOSPC' || errno === 'ENOMEM' || errno === 'EFBIG'
            ? ['SHM_NO_SPACE', 'free memory or use a smaller size.']
            : undefined,
        ['SHM_SYSCALL_FAILED', 'the memfd was closed again.'],
      );
    }
  }
  return fd;
}

const classifySeal: Classifier = (errno) => {
  switch (errno) {
    case 'EPERM':
      return [
        'SHM_PERMISSION_DENIED',
        "the file is sealed with 'seal' or was not created with allowSealing.",
      ];
    case 'EBUSY':
      return [
        'SHM_PERMISSION_DENIED',
        "'write' cannot be added while a shared writable mapping exists; close it first, or " +
          "use 'future-write'.",
      ];
    case 'EINVAL':
      return ['SHM_UNSUPPORTED', 'only memfds (and some tmpfs files) can be sealed.'];
    case 'EBADF':
      return ['SHM_INVALID_ARGUMENT', 'pass an open fd (sealing needs it open for writing).'];
    default:
      return undefined;
  }
};

/**
 * Add seals to a memfd (`fcntl(F_ADD_SEALS)`); seals can never be removed.
 *
 * @throws ShmError `SHM_PERMISSION_DENIED` (already sealed, not sealable, or a writable mapping
 *   blocks `'write'`), `SHM_UNSUPPORTED`, `SHM_INVALID_ARGUMENT`
 */
export function addSeals(fd: number, seals: readonly Seal[]): void {
  const op = 'addSeals';
  checkFd(op, fd);
  if (!Array.isArray(seals)) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: seals must be an array of ${ALL_SEALS.join(', ')}.`,
    );
  }
  let bits = 0;
  for (const seal of seals) {
    const bit = typeof seal === 'string' ? native.constants.seals[seal] : undefined;
    if (bit === undefined || !(ALL_SEALS as readonly string[]).includes(seal)) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${op}: unknown or unsupported seal ${describe(seal)}; known: ${ALL_SEALS.join(', ')}.`,
      );
    }
    bits |= bit;
  }
  try {
    native.addSeals(fd, bits);
  } catch (err) {
    throw toShmError(`${op}(fd ${fd})`, err, classifySeal, [
      'SHM_SYSCALL_FAILED',
      'no seal was added.',
    ]);
  }
}

/** The seals of a memfd (`fcntl(F_GET_SEALS)`); a file that cannot be sealed reports `['seal']`. */
export function getSeals(fd: number): Seal[] {
  const op = 'getSeals';
  checkFd(op, fd);
  let bits: number;
  try {
    bits = native.getSeals(fd);
  } catch (err) {
    throw toShmError(`${op}(fd ${fd})`, err, classifySeal, ['SHM_SYSCALL_FAILED', 'check the fd.']);
  }
  return ALL_SEALS.filter((s) => {
    const bit = native.constants.seals[s];
    return bit !== undefined && (bits & bit) !== 0;
  });
}

/** Options of {@link fallocate}. */
export interface FallocateOptions {
  /** Do not grow the file even if the range reaches past its end (`FALLOC_FL_KEEP_SIZE`). */
  keepSize?: boolean;
  /**
   * Free the range instead of allocating it (`FALLOC_FL_PUNCH_HOLE`, implies `keepSize`): its
   * pages are released and read back as zeros, in every mapping of the file.
   */
  punchHole?: boolean;
}

/**
 * Allocate (or, with `punchHole`, free) [offset, offset + length) of a file (`fallocate(2)`).
 * Allocating up front turns a later out-of-space SIGBUS into an error now.
 *
 * @throws ShmError `SHM_NO_SPACE`, `SHM_UNSUPPORTED`, `SHM_PERMISSION_DENIED`,
 *   `SHM_INVALID_ARGUMENT`
 */
export function fallocate(
  fd: number,
  offset: number,
  length: number,
  options?: FallocateOptions,
): void {
  const op = 'fallocate';
  checkFd(op, fd);
  checkInteger(op, 'offset', offset, 0);
  checkInteger(op, 'length', length, 1);
  const o = checkOptions(op, options);
  const flags = native.constants.flags;
  let mode = 0;
  if (checkFlag(op, 'keepSize', o.keepSize)) mode |= flags.FALLOC_FL_KEEP_SIZE;
  if (checkFlag(op, 'punchHole', o.punchHole)) {
    mode |= flags.FALLOC_FL_PUNCH_HOLE | flags.FALLOC_FL_KEEP_SIZE;
  }
  try {
    native.fallocate(fd, mode, offset, length);
  } catch (err) {
    throw toShmError(
      `${op}(fd ${fd}, [${offset}, ${offset + length}))`,
      err,
      (errno) => {
        if (errno === 'ENOSPC' || errno === 'EFBIG' || errno === 'EDQUOT') {
          return ['SHM_NO_SPACE', 'free space on the file system or allocate less.'];
        }
        if (errno === 'EOPNOTSUPP' || errno === 'ENOSYS' || errno === 'ENODEV') {
          return ['SHM_UNSUPPORTED', 'the file system does not support this fallocate mode.'];
        }
        if (errno === 'EBADF' || errno === 'EPERM' || errno === 'EACCES') {
          return [
            'SHM_PERMISSION_DENIED',
            'the fd must be open for writing and the file not sealed against it.',
          ];
        }
        return undefined;
      },
      ['SHM_SYSCALL_FAILED', 'the file is unchanged.'],
    );
  }
}
