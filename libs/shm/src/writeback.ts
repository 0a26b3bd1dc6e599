/**
 * Early write-back of a file range (`sync_file_range(2)`), so that a final `fdatasync` of a
 * file written in large runs has little left to wait for: the disk writes one run while the
 * next is copied.
 *
 * @packageDocumentation
 */
import { checkFd, checkInteger } from './validate.js';
import { native } from './native.js';

/**
 * Queues the dirty pages of [offset, offset + length) of a file for writing to disk
 * (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, on a libuv worker thread) and resolves once they
 * are queued, without waiting for the writes to complete. It is a hint for speed and promises
 * nothing about durability: only `fsync`/`fdatasync` does (the file's metadata and the disk's
 * cache are not written by it). Resolves `true`, or `false` when the kernel refused (a file
 * system or a file that does not support it); never rejects on a kernel refusal.
 *
 * @throws ShmError `SHM_INVALID_ARGUMENT` for a bad fd, offset or length (synchronously)
 */
export function startWriteback(fd: number, offset: number, length: number): Promise<boolean> {
  const op = 'startWriteback';
  checkFd(op, fd);
  checkInteger(op, 'offset', offset, 0);
  checkInteger(op, 'length', length, 1);
  return native.startWriteback(fd, offset, length).then((errno) => errno === 0);
}
