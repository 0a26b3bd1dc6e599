/**
 * Where a file holds data: `lseek(2)` with `SEEK_DATA` / `SEEK_HOLE`. On tmpfs (memstore's
 * volatile regions, memfds) a hole is a page never written (or punched, or only fallocated), so
 * it certainly reads as zero; a data range may still hold zero bytes. A file system that does
 * not track holes reports the whole file as data, which stays correct.
 *
 * @packageDocumentation
 */
import { closeSync, openSync } from 'node:fs';

import { native, toShmError } from './native.js';
import { checkFd, checkInteger } from './validate.js';

/** A byte range [start, end) of a file. */
export type ByteRange = readonly [start: number, end: number];

/**
 * The parts of [offset, offset + length) of the file open as `fd` that may hold data, in
 * ascending order; every byte outside them reads as zero. Moves the fd's file offset.
 *
 * @param length - default: up to 2^53 - 1 (the end of the file)
 * @throws ShmError `SHM_INVALID_ARGUMENT`, `SHM_SYSCALL_FAILED`
 */
export function dataRanges(fd: number, offset = 0, length?: number): ByteRange[] {
  const op = 'dataRanges';
  checkFd(op, fd);
  checkInteger(op, 'offset', offset, 0);
  const len =
    length === undefined
      ? Number.MAX_SAFE_INTEGER - offset
      : checkInteger(op, 'length', length, 0, Number.MAX_SAFE_INTEGER - offset);
  let flat: Float64Array;
  try {
    flat = native.dataRanges(fd, offset, len);
  } catch (err) {
    throw toShmError(
      `${op}(fd ${fd}, [${offset}, ${offset + len}))`,
      err,
      (errno) =>
        errno === 'EBADF' ? ['SHM_INVALID_ARGUMENT', 'pass an open file descriptor.'] : undefined,
      ['SHM_SYSCALL_FAILED', 'treat the whole range as data.'],
    );
  }
  const out: ByteRange[] = [];
  for (let k = 0; k < flat.length; k += 2) out.push([flat[k]!, flat[k + 1]!]);
  return out;
}

/**
 * {@link dataRanges} of the file at `path` (opened read-only for the call).
 *
 * @throws ShmError `SHM_NOT_FOUND`, `SHM_OPEN_FAILED`, and those of {@link dataRanges}
 */
export function fileDataRanges(path: string, offset = 0, length?: number): ByteRange[] {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw toShmError(
      `dataRanges(${path})`,
      err,
      (errno) => (errno === 'ENOENT' ? ['SHM_NOT_FOUND', 'check the path.'] : undefined),
      ['SHM_OPEN_FAILED', 'check the path and its permissions.'],
    );
  }
  try {
    return dataRanges(fd, offset, length);
  } finally {
    closeSync(fd);
  }
}
