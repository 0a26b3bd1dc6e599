import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

import { afterAll, describe, expect, it } from 'vitest';

import {
  FUTEX_WAIT_ANY_MAX,
  PAGE_SIZE,
  atomicLoad32,
  atomicStore32,
  futexWaitAny,
  futexWake,
  mapFile,
  type FutexWord,
} from './index.js';
import {
  ADDON,
  expectShmError,
  removeScratchFiles,
  runChild,
  scratchPath,
  sleepsOnFutex,
  waitFor,
} from './testing/helpers.js';

afterAll(removeScratchFiles);

/** Byte offsets: the waited word of each buffer, and the waiter's "about to wait" flag. */
const WORD = 0;
const READY = 4;

/**
 * Worker thread: on [sab, file buffer] flags READY in the SAB, waits on the SAB's WORD and the
 * file's WORD (both while 0), and reports which one woke it and the words it then reads.
 */
const WAIT_ANY_WORKER = `
const { readlinkSync } = require('node:fs');
const { parentPort } = require('node:worker_threads');
const native = require(${JSON.stringify(ADDON)});
const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
parentPort.on('message', ([sab, file]) => {
  parentPort.postMessage({ tid });
  native.atomicStore32(sab, ${READY}, 1);
  const result = native.futexWaitAny([sab, file], [${WORD}, ${WORD}], [0, 0], 10000);
  parentPort.postMessage({
    result,
    words: [native.atomicLoad32(sab, ${WORD}), native.atomicLoad32(file, ${WORD})],
  });
});
`;

/** Starts the worker on the two buffers; resolves once it sleeps, with its reply to come. */
async function sleepingWaiter(
  sab: SharedArrayBuffer,
  file: SharedArrayBuffer,
): Promise<{ worker: Worker; reply: Promise<{ result: number; words: number[] }> }> {
  const worker = new Worker(WAIT_ANY_WORKER, { eval: true, execArgv: [] });
  const hello = once(worker, 'message');
  worker.postMessage([sab, file]);
  const [{ tid }] = (await hello) as [{ tid: number }];
  const reply = once(worker, 'message').then(([r]) => r as { result: number; words: number[] });
  await waitFor(() => atomicLoad32(sab, READY) === 1 && sleepsOnFutex(process.pid, tid));
  return { worker, reply };
}

describe('futexWaitAny', { timeout: 30_000 }, () => {
  it('a worker asleep on two words is woken by another process through the mapped one', async () => {
    const path = scratchPath('futex-any-xproc');
    const m = mapFile(path, { create: true, exclusive: true, size: PAGE_SIZE });
    const sab = new SharedArrayBuffer(16);
    const { worker, reply } = await sleepingWaiter(sab, m.buffer);
    try {
      const child = await runChild(
        `
        import { openSync, closeSync } from 'node:fs';
        const fd = openSync(args.path, 'r+');
        const [handle, buffer] = native.map(fd, 0, args.size, true, false, true);
        closeSync(fd);
        native.atomicStore32(buffer, ${WORD}, 5);
        const woken = native.futexWake(buffer, ${WORD}, 1);
        native.close(handle);
        console.log(JSON.stringify({ woken }));
        `,
        { path, size: PAGE_SIZE },
      );
      expect(child.stderr).toBe('');
      expect(JSON.parse(child.stdout)).toEqual({ woken: 1 });
      expect(await reply).toEqual({ result: 1, words: [0, 5] });
    } finally {
      await worker.terminate();
      m.close();
    }
  });

  it("a worker asleep on two words is woken by this process's futexWake on its SAB word", async () => {
    const m = mapFile(scratchPath('futex-any-local'), { create: true, size: PAGE_SIZE });
    const sab = new SharedArrayBuffer(16);
    const { worker, reply } = await sleepingWaiter(sab, m.buffer);
    try {
      atomicStore32(sab, WORD, 3);
      expect(futexWake(sab, WORD)).toBe(1);
      expect(await reply).toEqual({ result: 0, words: [3, 0] });
    } finally {
      await worker.terminate();
      m.close();
    }
  });

  it("returns 'not-equal' when any word differs, 'timed-out' after the timeout", () => {
    const a = new SharedArrayBuffer(8);
    const b = new SharedArrayBuffer(8);
    atomicStore32(b, 4, 9);
    const words = (bExpected: number): FutexWord[] => [
      { buffer: a, byteOffset: 0, expected: 0 },
      { buffer: b, byteOffset: 4, expected: bExpected },
    ];
    expect(futexWaitAny(words(8), 10_000)).toBe('not-equal');
    const start = performance.now();
    expect(futexWaitAny(words(9), 20)).toBe('timed-out');
    const took = performance.now() - start;
    expect(took).toBeGreaterThanOrEqual(15);
    expect(took).toBeLessThan(5_000);
    expect(futexWaitAny(words(9), 0)).toBe('timed-out');
  });

  it('checks its arguments', () => {
    const sab = new SharedArrayBuffer(8);
    const one: FutexWord = { buffer: sab, byteOffset: 0, expected: 0 };
    expectShmError(() => futexWaitAny([], 0), 'SHM_INVALID_ARGUMENT');
    expectShmError(
      () => futexWaitAny(new Array<FutexWord>(FUTEX_WAIT_ANY_MAX + 1).fill(one), 0),
      'SHM_INVALID_ARGUMENT',
    );
    expectShmError(() => futexWaitAny([one, { ...one, byteOffset: 2 }], 0), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => futexWaitAny([{ ...one, byteOffset: 8 }], 0), 'SHM_OUT_OF_RANGE');
    expectShmError(() => futexWaitAny([one], -1), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => futexWaitAny([one], Infinity), 'SHM_INVALID_ARGUMENT');
  });
});
