/**
 * Cross-process futexes and sequentially consistent 32-bit atomics on words of a mapping.
 *
 * `Atomics.wait`/`Atomics.notify` only reach threads of one process, and JS `Atomics` on a
 * non-shared ArrayBuffer promise nothing at all. These functions work on one int32 of any
 * `ArrayBuffer` or `SharedArrayBuffer`, and across processes when that buffer is a `'shared'`
 * {@link Mapping} of the same file (`futex(2)` without `FUTEX_PRIVATE_FLAG`, `__atomic` builtins
 * with sequential consistency). A migration uses them to hand a VM's device state between the
 * vCPU threads of two vmm processes through one shared page, without waking either main thread.
 *
 * Every word is addressed by `byteOffset` into the buffer: a multiple of 4 with
 * `byteOffset + 4 <= buffer.byteLength`. Values are int32: arguments are taken modulo 2^32
 * (like `Int32Array`), results are signed.
 *
 * In a `'private'` (copy-on-write) mapping a word is only shared with other processes until this
 * process writes its page; use `'shared'` mappings for cross-process words.
 *
 * @packageDocumentation
 */
import { types } from 'node:util';

import { ShmError, describe } from './errors.js';
import type { MappingBuffer } from './mapping.js';
import { native, toShmError, type Classifier } from './native.js';
import { checkInteger } from './validate.js';

/** What {@link futexWait} saw. */
export type FutexWaitResult = 'woken' | 'not-equal' | 'timed-out';

/** Longest timeout {@link futexWait} accepts, in milliseconds (2^31 − 1, about 24.8 days). */
export const FUTEX_MAX_TIMEOUT_MS = 2 ** 31 - 1;

const INT32_MIN = -(2 ** 31);
const UINT32_MAX = 2 ** 32 - 1;

/** @internal Check the buffer and the word offset; returns the offset. */
function checkWord(op: string, buffer: unknown, byteOffset: unknown): number {
  if (!types.isArrayBuffer(buffer) && !types.isSharedArrayBuffer(buffer)) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: buffer is ${describe(buffer)}, not an ArrayBuffer or SharedArrayBuffer; pass ` +
        'mapping.buffer (not a typed array).',
    );
  }
  const offset = checkInteger(op, 'byteOffset', byteOffset, 0);
  if (offset % 4 !== 0) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: byteOffset ${offset} is not a multiple of 4; int32 words must be aligned.`,
    );
  }
  if (offset + 4 > buffer.byteLength) {
    throw new ShmError(
      'SHM_OUT_OF_RANGE',
      `${op}: the word at byteOffset ${offset} does not fit in the buffer of ` +
        `${buffer.byteLength} bytes (a detached or closed buffer has 0).`,
    );
  }
  return offset;
}

/** @internal An int32 value (any whole number in [-2^31, 2^32 - 1]), as a signed int32. */
function checkInt32(op: string, name: string, value: unknown): number {
  return checkInteger(op, name, value, INT32_MIN, UINT32_MAX) | 0;
}

/** @internal A wait's timeout: finite, in [0, FUTEX_MAX_TIMEOUT_MS]. */
function checkTimeout(op: string, timeoutMs: unknown): void {
  if (
    typeof timeoutMs !== 'number' ||
    !Number.isFinite(timeoutMs) ||
    timeoutMs < 0 ||
    timeoutMs > FUTEX_MAX_TIMEOUT_MS
  ) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: timeoutMs ${describe(timeoutMs)} is not a finite number of milliseconds in ` +
        `[0, ${FUTEX_MAX_TIMEOUT_MS}]; pass one (loop for longer waits).`,
    );
  }
}

const classifyFutex: Classifier = (errno) =>
  errno === 'ENOSYS' ? ['SHM_UNSUPPORTED', 'this kernel has no futex(2).'] : undefined;

/**
 * Wait until another thread or process wakes the int32 at `byteOffset`, if it still holds
 * `expected` (`futex(FUTEX_WAIT)`, not private: wakes from every process that maps the same file
 * page reach it).
 *
 * **Blocks the calling thread** for up to `timeoutMs`. Call it from a worker thread (a vCPU),
 * never from the main thread: nothing else runs on the thread meanwhile, not even timers or
 * message handlers.
 *
 * Use it in a loop that re-checks the word: `'woken'` also covers spurious wake-ups and wakes
 * meant for another value.
 *
 * @param buffer - a `'shared'` {@link Mapping}'s buffer for cross-process use; any ArrayBuffer
 *   or SharedArrayBuffer within one process
 * @param byteOffset - offset of the word: a multiple of 4 inside the buffer
 * @param expected - sleep only while the word equals this (int32; taken modulo 2^32)
 * @param timeoutMs - longest wait (relative, monotonic clock): finite, in
 *   [0, {@link FUTEX_MAX_TIMEOUT_MS}], fractions allowed; 0 only checks the value. Interrupted
 *   waits (EINTR) resume with the time left.
 * @returns `'woken'` after a wake (or a spurious wake-up), `'not-equal'` if the word did not hold
 *   `expected` (`EAGAIN`), `'timed-out'` when `timeoutMs` passed (`ETIMEDOUT`)
 * @throws ShmError `SHM_INVALID_ARGUMENT` (not a buffer, unaligned or negative offset, bad value
 *   or timeout), `SHM_OUT_OF_RANGE` (word outside the buffer), `SHM_SYSCALL_FAILED`
 */
export function futexWait(
  buffer: MappingBuffer,
  byteOffset: number,
  expected: number,
  timeoutMs: number,
): FutexWaitResult {
  const op = 'futexWait';
  const offset = checkWord(op, buffer, byteOffset);
  const value = checkInt32(op, 'expected', expected);
  checkTimeout(op, timeoutMs);
  try {
    return native.futexWait(buffer, offset, value, timeoutMs);
  } catch (err) {
    throw toShmError(`${op}(byteOffset ${offset})`, err, classifyFutex, [
      'SHM_SYSCALL_FAILED',
      'the wait did not happen.',
    ]);
  }
}

/**
 * Wake up to `count` threads, in any process, waiting in {@link futexWait} on the int32 at
 * `byteOffset` (`futex(FUTEX_WAKE)`, not private). Store the new value first (e.g. with
 * {@link atomicStore32}), then wake. Does not block.
 *
 * @param buffer - the same memory the waiters use (the same file page, in another process)
 * @param byteOffset - offset of the word: a multiple of 4 inside the buffer
 * @param count - most waiters to wake: a whole number >= 1, or `Infinity` for all. Default 1.
 * @returns how many waiters were woken (0 if none was waiting)
 * @throws ShmError `SHM_INVALID_ARGUMENT`, `SHM_OUT_OF_RANGE`, `SHM_SYSCALL_FAILED`
 */
export function futexWake(buffer: MappingBuffer, byteOffset: number, count = 1): number {
  const op = 'futexWake';
  const offset = checkWord(op, buffer, byteOffset);
  const n = count === Infinity ? 2 ** 31 - 1 : checkInteger(op, 'count', count, 1, 2 ** 31 - 1);
  try {
    return native.futexWake(buffer, offset, n);
  } catch (err) {
    throw toShmError(`${op}(byteOffset ${offset})`, err, classifyFutex, [
      'SHM_SYSCALL_FAILED',
      'nobody was woken.',
    ]);
  }
}

/** Most words one {@link futexWaitAny} call waits on (the kernel's `FUTEX_WAITV_MAX`). */
export const FUTEX_WAIT_ANY_MAX = 128;

/** One word of a {@link futexWaitAny}: where it is and the value to sleep on. */
export interface FutexWord {
  readonly buffer: MappingBuffer;
  readonly byteOffset: number;
  readonly expected: number;
}

/**
 * Wait until another thread or process wakes any of `words`, if each still holds its `expected`
 * value (`futex_waitv(2)`, Linux 5.16+; not private: wakes from every process that maps the same
 * file page reach it, and {@link futexWake} on a word of a plain SharedArrayBuffer wakes a waiter
 * of this process). A vCPU thread that runs many VMs sleeps this way on its own wake word and on
 * the switchover slots of the VMs it hands over or takes over, so that its host and a migration
 * peer in another process can each wake it.
 *
 * **Blocks the calling thread**, like {@link futexWait}; call it from a worker thread. Use it in a
 * loop that re-checks the words: a wake also ends the wait when it was meant for another value.
 *
 * @param words - 1 to {@link FUTEX_WAIT_ANY_MAX} words (offsets multiples of 4 inside their
 *   buffers; values int32, taken modulo 2^32)
 * @param timeoutMs - longest wait (monotonic clock): finite, in [0, {@link FUTEX_MAX_TIMEOUT_MS}]
 * @returns the index of the word whose wake ended the wait (or a spurious wake-up), `'not-equal'`
 *   if a word did not hold its `expected` value, `'timed-out'` when `timeoutMs` passed
 * @throws ShmError `SHM_UNSUPPORTED` (a kernel before 5.16: wait on one word with
 *   {@link futexWait} instead), `SHM_INVALID_ARGUMENT`, `SHM_OUT_OF_RANGE`, `SHM_SYSCALL_FAILED`
 */
export function futexWaitAny(
  words: readonly FutexWord[],
  timeoutMs: number,
): number | 'not-equal' | 'timed-out' {
  const op = 'futexWaitAny';
  if (!Array.isArray(words) || words.length === 0 || words.length > FUTEX_WAIT_ANY_MAX) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: words is ${describe(words)}; pass 1 to ${FUTEX_WAIT_ANY_MAX} words.`,
    );
  }
  const buffers: MappingBuffer[] = [];
  const offsets: number[] = [];
  const expected: number[] = [];
  for (const w of words) {
    offsets.push(checkWord(op, w.buffer, w.byteOffset));
    buffers.push(w.buffer);
    expected.push(checkInt32(op, 'expected', w.expected));
  }
  checkTimeout(op, timeoutMs);
  let rc: number;
  try {
    rc = native.futexWaitAny(buffers, offsets, expected, timeoutMs);
  } catch (err) {
    throw toShmError(`${op}(${words.length} words)`, err, classifyWaitAny, [
      'SHM_SYSCALL_FAILED',
      'the wait did not happen.',
    ]);
  }
  return rc >= 0 ? rc : rc === -1 ? 'not-equal' : 'timed-out';
}

const classifyWaitAny: Classifier = (errno) =>
  errno === 'ENOSYS'
    ? ['SHM_UNSUPPORTED', 'this kernel has no futex_waitv(2) (Linux 5.16+); wait on one word.']
    : undefined;

/**
 * Read the int32 at `byteOffset` with a sequentially consistent atomic load, which also orders
 * against other processes' {@link atomicStore32} and {@link atomicCompareExchange32}.
 *
 * @returns the word, as a signed int32
 * @throws ShmError `SHM_INVALID_ARGUMENT`, `SHM_OUT_OF_RANGE`
 */
export function atomicLoad32(buffer: MappingBuffer, byteOffset: number): number {
  const offset = checkWord('atomicLoad32', buffer, byteOffset);
  return native.atomicLoad32(buffer, offset);
}

/**
 * Write the int32 at `byteOffset` with a sequentially consistent atomic store.
 *
 * @param value - a whole number in [-2^31, 2^32 − 1], stored modulo 2^32
 * @throws ShmError `SHM_INVALID_ARGUMENT`, `SHM_OUT_OF_RANGE`
 */
export function atomicStore32(buffer: MappingBuffer, byteOffset: number, value: number): void {
  const op = 'atomicStore32';
  const offset = checkWord(op, buffer, byteOffset);
  native.atomicStore32(buffer, offset, checkInt32(op, 'value', value));
}

/**
 * Atomically replace the int32 at `byteOffset` with `desired` if it equals `expected`
 * (sequentially consistent compare-and-swap).
 *
 * @param expected - a whole number in [-2^31, 2^32 − 1], compared modulo 2^32
 * @param desired - a whole number in [-2^31, 2^32 − 1], stored modulo 2^32
 * @returns the word's value before the call, as a signed int32: equal to `expected` (as int32)
 *   exactly when the swap happened
 * @throws ShmError `SHM_INVALID_ARGUMENT`, `SHM_OUT_OF_RANGE`
 */
export function atomicCompareExchange32(
  buffer: MappingBuffer,
  byteOffset: number,
  expected: number,
  desired: number,
): number {
  const op = 'atomicCompareExchange32';
  const offset = checkWord(op, buffer, byteOffset);
  return native.atomicCompareExchange32(
    buffer,
    offset,
    checkInt32(op, 'expected', expected),
    checkInt32(op, 'desired', desired),
  );
}
