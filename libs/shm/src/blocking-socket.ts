/**
 * Blocking unix-socket connections for worker threads.
 *
 * A vCPU worker that must talk to another process (e.g. the peer vmm during a migration) without
 * going through its event loop connects with {@link connectUnixBlocking}, then reads and writes
 * the fd with `node:fs`: `fs.writeSync(fd, buf)`, `fs.readSync(fd, buf, off, len, null)`, or the
 * helpers {@link writeAllSync} and {@link readExactSync}, and closes it with `fs.closeSync(fd)`.
 * Every call blocks the calling thread for at most the socket's timeout; a raw `fs` read or write
 * that times out throws an error with `code` `'EAGAIN'`. Use these from worker threads, never
 * from the main thread (it would stall timers, I/O and every other callback meanwhile).
 *
 * @packageDocumentation
 */
import { readSync, writeSync } from 'node:fs';

import { ShmError, describe } from './errors.js';
import { native, toShmError, type Classifier } from './native.js';
import { checkFd, checkInteger } from './validate.js';

/** Longest socket path {@link connectUnixBlocking} accepts, in bytes (`sun_path` minus its NUL). */
export const UNIX_PATH_MAX: number = native.constants.unixPathMax;

/** Longest socket timeout accepted, in milliseconds (2^31 − 1, about 24.8 days). */
export const SOCKET_MAX_TIMEOUT_MS = 2 ** 31 - 1;

function checkTimeout(op: string, timeoutMs: unknown): number {
  if (
    typeof timeoutMs !== 'number' ||
    !Number.isFinite(timeoutMs) ||
    timeoutMs <= 0 ||
    timeoutMs > SOCKET_MAX_TIMEOUT_MS
  ) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: timeoutMs ${describe(timeoutMs)} is not a number of milliseconds in ` +
        `(0, ${SOCKET_MAX_TIMEOUT_MS}]; pass one (a socket cannot be made to wait forever here).`,
    );
  }
  return timeoutMs;
}

const classifySocket: Classifier = (errno) => {
  switch (errno) {
    case 'EAGAIN':
    case 'EWOULDBLOCK':
    case 'ETIMEDOUT':
      return ['SHM_TIMED_OUT', 'the peer did not respond in time; close the socket.'];
    case 'EPIPE':
    case 'ECONNRESET':
      return ['SHM_PEER_CLOSED', 'the peer closed the connection; close the socket.'];
    case 'ENOENT':
      return ['SHM_NOT_FOUND', 'no socket exists at that path; is the peer listening?'];
    case 'EACCES':
    case 'EPERM':
      return ['SHM_PERMISSION_DENIED', 'check the mode of the socket and its directories.'];
    case 'EBADF':
    case 'ENOTSOCK':
    case 'ENOTCONN':
      return ['SHM_INVALID_ARGUMENT', 'pass a connected socket fd from connectUnixBlocking.'];
    case 'EMFILE':
    case 'ENFILE':
      return ['SHM_SYSCALL_FAILED', 'too many open files; close some or raise ulimit -n.'];
    default:
      return undefined;
  }
};

/**
 * Connect a **blocking** `AF_UNIX` `SOCK_STREAM` socket (close-on-exec) to `path` and return its
 * fd. Both `SO_RCVTIMEO` and `SO_SNDTIMEO` are set to `timeoutMs` before connecting, so the
 * connect (a full listen backlog) and every later read or write each wait at most that long.
 *
 * The caller owns the fd: read and write it with `fs.readSync(fd, buf, off, len, null)` and
 * `fs.writeSync(fd, buf)` (or {@link readExactSync} / {@link writeAllSync}), and close it with
 * `fs.closeSync(fd)`. A raw `fs` call that times out throws with `code` `'EAGAIN'`. Blocks the
 * calling thread: use it from worker threads, not the main thread.
 *
 * @param path - the socket's file; at most {@link UNIX_PATH_MAX} bytes, no NUL (no abstract names)
 * @param timeoutMs - receive and send timeout in milliseconds, in (0, {@link SOCKET_MAX_TIMEOUT_MS}],
 *   rounded up to whole microseconds
 * @returns the connected fd
 * @throws ShmError `SHM_NOT_FOUND` (no such path, errno `ENOENT`), `SHM_PERMISSION_DENIED`,
 *   `SHM_TIMED_OUT` (the listener's backlog stayed full), `SHM_INVALID_ARGUMENT`,
 *   `SHM_SYSCALL_FAILED` (e.g. `ECONNREFUSED`: nobody listens on the socket)
 */
export function connectUnixBlocking(path: string, timeoutMs: number): number {
  const op = 'connectUnixBlocking';
  if (
    typeof path !== 'string' ||
    path.length === 0 ||
    path.includes('\0') ||
    Buffer.byteLength(path) > UNIX_PATH_MAX
  ) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: path ${describe(path)} must be a non-empty string of at most ${UNIX_PATH_MAX} ` +
        'bytes without NUL; use a shorter directory (e.g. a relative path or /run).',
    );
  }
  checkTimeout(op, timeoutMs);
  try {
    return native.connectUnix(path, timeoutMs);
  } catch (err) {
    throw toShmError(`${op}(${path})`, err, classifySocket, [
      'SHM_SYSCALL_FAILED',
      'no socket was left open; check that the peer listens on the path.',
    ]);
  }
}

/**
 * Change the receive and send timeouts (`SO_RCVTIMEO`, `SO_SNDTIMEO`) of a socket fd, e.g. one
 * from {@link connectUnixBlocking}.
 *
 * @param timeoutMs - in (0, {@link SOCKET_MAX_TIMEOUT_MS}], rounded up to whole microseconds
 * @throws ShmError `SHM_INVALID_ARGUMENT` (bad timeout, or the fd is not an open socket),
 *   `SHM_SYSCALL_FAILED`
 */
export function setSocketTimeout(fd: number, timeoutMs: number): void {
  const op = 'setSocketTimeout';
  checkFd(op, fd);
  checkTimeout(op, timeoutMs);
  try {
    native.setSocketTimeout(fd, timeoutMs);
  } catch (err) {
    throw toShmError(`${op}(fd ${fd})`, err, classifySocket, [
      'SHM_SYSCALL_FAILED',
      'the timeouts are unchanged.',
    ]);
  }
}

/**
 * Write all of `bytes` to a blocking socket fd, looping over partial writes.
 *
 * Each underlying write waits at most the socket's send timeout for buffer space. After a
 * failure an unknown prefix of `bytes` may have been sent: close the socket.
 *
 * @throws ShmError `SHM_TIMED_OUT` (the peer stopped reading), `SHM_PEER_CLOSED` (`EPIPE`,
 *   `ECONNRESET`), `SHM_INVALID_ARGUMENT`, `SHM_SYSCALL_FAILED`
 */
export function writeAllSync(fd: number, bytes: Uint8Array): void {
  const op = 'writeAllSync';
  checkFd(op, fd);
  if (!(bytes instanceof Uint8Array)) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: bytes is ${describe(bytes)}; pass a Uint8Array (or Buffer).`,
    );
  }
  let written = 0;
  while (written < bytes.length) {
    try {
      written += writeSync(fd, bytes, written, bytes.length - written);
    } catch (err) {
      throw toShmError(
        `${op}(fd ${fd}) after ${written} of ${bytes.length} bytes`,
        err,
        classifySocket,
        ['SHM_SYSCALL_FAILED', 'close the socket.'],
      );
    }
  }
}

/**
 * Read exactly `length` bytes from a blocking socket fd into `into[0, length)`, looping over
 * partial reads.
 *
 * Each underlying read waits at most the socket's receive timeout, so the whole call can take
 * longer when data trickles in. After a failure part of a frame may have been consumed: the
 * stream is out of step, close the socket.
 *
 * @param into - destination; must hold at least `length` bytes
 * @param length - bytes to read, a whole number in [0, into.length]
 * @throws ShmError `SHM_PEER_CLOSED` (end of stream before `length` bytes, or `ECONNRESET`),
 *   `SHM_TIMED_OUT` (no data within the receive timeout: `EAGAIN`/`EWOULDBLOCK`),
 *   `SHM_INVALID_ARGUMENT`, `SHM_SYSCALL_FAILED`
 */
export function readExactSync(fd: number, into: Uint8Array, length: number): void {
  const op = 'readExactSync';
  checkFd(op, fd);
  if (!(into instanceof Uint8Array)) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: into is ${describe(into)}; pass a Uint8Array (or Buffer).`,
    );
  }
  checkInteger(op, 'length', length, 0, into.length);
  let got = 0;
  while (got < length) {
    let n: number;
    try {
      n = readSync(fd, into, got, length - got, null);
    } catch (err) {
      throw toShmError(`${op}(fd ${fd}) after ${got} of ${length} bytes`, err, classifySocket, [
        'SHM_SYSCALL_FAILED',
        'close the socket.',
      ]);
    }
    if (n === 0) {
      throw new ShmError(
        'SHM_PEER_CLOSED',
        `${op}(fd ${fd}): the peer closed the connection after ${got} of ${length} bytes; ` +
          'close the socket.',
      );
    }
    got += n;
  }
}
