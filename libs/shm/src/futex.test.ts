import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

import { afterAll, describe, expect, it } from 'vitest';

import {
  FUTEX_MAX_TIMEOUT_MS,
  PAGE_SIZE,
  atomicCompareExchange32,
  atomicLoad32,
  atomicStore32,
  futexWait,
  futexWake,
  mapFile,
  type Mapping,
  type MappingBuffer,
  type ShmErrorCode,
} from './index.js';
import {
  ADDON,
  expectShmError,
  removeScratchFiles,
  runChild,
  scratchPath,
  sleepsOnFutex,
  spawnChild,
  waitFor,
} from './testing/helpers.js';

afterAll(removeScratchFiles);

// Byte offsets of the words used by the handshakes.
const WORD = 0; // the futex word
const READY = 4; // waiter -> waker: "about to wait"

/**
 * Child process: maps `args.path` shared, flags READY, waits on WORD while it is 0, and reports
 * the wait's result and the word it then reads.
 */
const FUTEX_CHILD = `
import { openSync, closeSync } from 'node:fs';
const fd = openSync(args.path, 'r+');
const [handle, buffer] = native.map(fd, 0, args.size, true, false, true);
closeSync(fd);
native.atomicStore32(buffer, ${READY}, 1);
const result = native.futexWait(buffer, ${WORD}, 0, 10000);
const value = native.atomicLoad32(buffer, ${WORD});
native.close(handle);
console.log(JSON.stringify({ result, value }));
`;

/**
 * Worker thread: loads the addon, reports its thread id, then on a buffer flags READY, waits on
 * WORD while it is 0, and reports the result and the word it then reads.
 */
const FUTEX_WORKER = `
const { readlinkSync } = require('node:fs');
const { parentPort } = require('node:worker_threads');
const native = require(${JSON.stringify(ADDON)});
const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
parentPort.on('message', (buffer) => {
  parentPort.postMessage({ tid });
  native.atomicStore32(buffer, ${READY}, 1);
  const result = native.futexWait(buffer, ${WORD}, 0, 10000);
  parentPort.postMessage({ result, value: native.atomicLoad32(buffer, ${WORD}) });
});
`;

describe('futexWait / futexWake', { timeout: 30_000 }, () => {
  it('a waiter in another process is woken and sees the stored value', async () => {
    const path = scratchPath('futex-xproc');
    const m = mapFile(path, { create: true, exclusive: true, size: PAGE_SIZE });
    try {
      const child = spawnChild(FUTEX_CHILD, { path, size: PAGE_SIZE });
      const pid = child.process.pid ?? -1;
      // The child's main thread is asleep in our futex once READY is set and wchan says so.
      await waitFor(() => atomicLoad32(m.buffer, READY) === 1 && sleepsOnFutex(pid));
      atomicStore32(m.buffer, WORD, 1);
      expect(futexWake(m.buffer, WORD)).toBe(1);
      const result = await child.result;
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout)).toEqual({ result: 'woken', value: 1 });
    } finally {
      m.close();
    }
  });

  it('a waiter on a worker thread is woken by the main thread', async () => {
    const path = scratchPath('futex-worker');
    const m = mapFile(path, { create: true, size: PAGE_SIZE });
    const worker = new Worker(FUTEX_WORKER, { eval: true, execArgv: [] });
    try {
      const hello = once(worker, 'message');
      worker.postMessage(m.buffer);
      const [{ tid }] = (await hello) as [{ tid: number }];
      const done = once(worker, 'message');
      await waitFor(() => atomicLoad32(m.buffer, READY) === 1 && sleepsOnFutex(process.pid, tid));
      atomicStore32(m.buffer, WORD, 7);
      expect(futexWake(m.buffer, WORD, Infinity)).toBe(1);
      const [reply] = (await done) as [Record<string, unknown>];
      expect(reply).toEqual({ result: 'woken', value: 7 });
    } finally {
      await worker.terminate();
      m.close();
    }
  });

  const mappings: Mapping[] = [];
  afterAll(() => mappings.forEach((m) => m.close()));
  const buffers: [string, () => MappingBuffer][] = [
    [
      'a shared mapping',
      () => {
        const m = mapFile(scratchPath('futex'), { create: true, size: 64 });
        mappings.push(m);
        return m.buffer;
      },
    ],
    ['a plain ArrayBuffer', () => new ArrayBuffer(64)],
    ['a plain SharedArrayBuffer', () => new SharedArrayBuffer(64)],
  ];

  it.each(buffers)("returns 'not-equal' when the word differs (%s)", (_kind, make) => {
    const buffer = make();
    atomicStore32(buffer, 8, 3);
    expect(futexWait(buffer, 8, 4, 10_000)).toBe('not-equal');
    expect(futexWait(buffer, 8, 0, 0)).toBe('not-equal');
  });

  it.each(buffers)("returns 'timed-out' after the timeout (%s)", (_kind, make) => {
    const buffer = make();
    const start = performance.now();
    expect(futexWait(buffer, 12, 0, 20)).toBe('timed-out');
    const took = performance.now() - start;
    expect(took).toBeGreaterThanOrEqual(15);
    expect(took).toBeLessThan(5_000);
    expect(futexWait(buffer, 12, 0, 0)).toBe('timed-out');
    expect(futexWait(buffer, 12, 0, 0.5)).toBe('timed-out');
  });

  it('wakes nobody when nobody waits', () => {
    const buffer = new SharedArrayBuffer(8);
    expect(futexWake(buffer, 4)).toBe(0);
    expect(futexWake(buffer, 4, 10)).toBe(0);
  });
});

describe('atomics', { timeout: 30_000 }, () => {
  it('compareExchange returns the old value, swaps only on a match, and another process sees it', async () => {
    const path = scratchPath('cas');
    const m = mapFile(path, { create: true, size: PAGE_SIZE });
    try {
      expect(atomicCompareExchange32(m.buffer, 16, 0, 5)).toBe(0);
      expect(atomicLoad32(m.buffer, 16)).toBe(5);
      expect(atomicCompareExchange32(m.buffer, 16, 0, 7)).toBe(5); // no match: unchanged
      expect(atomicLoad32(m.buffer, 16)).toBe(5);

      const result = await runChild(
        `
        import { openSync, closeSync } from 'node:fs';
        const fd = openSync(args.path, 'r+');
        const [handle, buffer] = native.map(fd, 0, args.size, true, false, true);
        closeSync(fd);
        const seen = native.atomicLoad32(buffer, 16);
        const miss = native.atomicCompareExchange32(buffer, 16, 4, 8);
        const hit = native.atomicCompareExchange32(buffer, 16, 5, 9);
        native.close(handle);
        console.log(JSON.stringify({ seen, miss, hit }));
        `,
        { path, size: PAGE_SIZE },
      );
      expect(result.stderr).toBe('');
      expect(JSON.parse(result.stdout)).toEqual({ seen: 5, miss: 5, hit: 5 });
      expect(atomicLoad32(m.buffer, 16)).toBe(9);
      expect(new Int32Array(m.buffer)[4]).toBe(9);
    } finally {
      m.close();
    }
  });

  it('takes values modulo 2^32 and returns signed int32s', () => {
    const buffer = new ArrayBuffer(8);
    atomicStore32(buffer, 0, 0xffffffff);
    expect(atomicLoad32(buffer, 0)).toBe(-1);
    expect(new Int32Array(buffer)[0]).toBe(-1);
    expect(atomicCompareExchange32(buffer, 0, 0xffffffff, 2 ** 31)).toBe(-1);
    expect(atomicLoad32(buffer, 0)).toBe(-(2 ** 31));
    expect(futexWait(buffer, 0, 2 ** 31, 0)).toBe('timed-out'); // equal modulo 2^32
  });
});

describe('word arguments are checked', () => {
  const sab = new SharedArrayBuffer(16);
  const cases: [string, () => unknown, ShmErrorCode][] = [
    ['an unaligned offset', () => atomicLoad32(sab, 2), 'SHM_INVALID_ARGUMENT'],
    ['a negative offset', () => futexWait(sab, -4, 0, 0), 'SHM_INVALID_ARGUMENT'],
    ['a fractional offset', () => futexWake(sab, 1.5), 'SHM_INVALID_ARGUMENT'],
    ['an offset at the end', () => atomicStore32(sab, 16, 1), 'SHM_OUT_OF_RANGE'],
    ['an offset past the end', () => futexWait(sab, 64, 0, 0), 'SHM_OUT_OF_RANGE'],
    [
      'a typed array instead of a buffer',
      () => atomicLoad32(new Int32Array(sab) as unknown as SharedArrayBuffer, 0),
      'SHM_INVALID_ARGUMENT',
    ],
    ['a NaN timeout', () => futexWait(sab, 0, 0, NaN), 'SHM_INVALID_ARGUMENT'],
    ['an infinite timeout', () => futexWait(sab, 0, 0, Infinity), 'SHM_INVALID_ARGUMENT'],
    ['a negative timeout', () => futexWait(sab, 0, 0, -1), 'SHM_INVALID_ARGUMENT'],
    [
      'a too long timeout',
      () => futexWait(sab, 0, 0, FUTEX_MAX_TIMEOUT_MS + 1),
      'SHM_INVALID_ARGUMENT',
    ],
    ['a fractional value', () => atomicStore32(sab, 0, 0.5), 'SHM_INVALID_ARGUMENT'],
    ['a value above 2^32 - 1', () => atomicStore32(sab, 0, 2 ** 32), 'SHM_INVALID_ARGUMENT'],
    ['an expected below -2^31', () => futexWait(sab, 0, -(2 ** 31) - 1, 0), 'SHM_INVALID_ARGUMENT'],
    ['a wake count of 0', () => futexWake(sab, 0, 0), 'SHM_INVALID_ARGUMENT'],
  ];
  it.each(cases)('rejects %s', (_name, fn, code) => {
    expectShmError(fn, code);
  });

  it('a closed detachable mapping has no words left', () => {
    const m = mapFile(scratchPath('futex-detach'), {
      create: true,
      size: PAGE_SIZE,
      bufferKind: 'detachable',
    });
    const buffer = m.buffer;
    atomicStore32(buffer, 0, 1);
    m.close();
    expectShmError(() => atomicLoad32(buffer, 0), 'SHM_OUT_OF_RANGE');
    expectShmError(() => futexWait(buffer, 0, 1, 0), 'SHM_OUT_OF_RANGE');
  });
});
