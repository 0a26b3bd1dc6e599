import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

import { afterAll, beforeEach, describe, expect, it } from 'vitest';

import { PAGE_SIZE, mapFile, mappingStats } from './index.js';
import {
  collectUntil,
  mapsContain,
  readFileBytes,
  removeScratchFiles,
  scratchPath,
  waitFor,
} from './testing/helpers.js';

afterAll(removeScratchFiles);
beforeEach(() => collectUntil(() => mappingStats().regions === 0));

/**
 * A vCPU stand-in: receives the guest RAM buffer by postMessage, then obeys commands.
 * - 'handshake': sets word 1 = 7, flags word 0, blocks in Atomics.wait on word 2 until the main
 *   thread notifies, then writes word 3 = word 2 * 2.
 * - 'write': fills bytes [64, 128) with 0x42 and reports word 1.
 */
const WORKER = `
const { parentPort } = require('node:worker_threads');
let i32, u8;
parentPort.on('message', (msg) => {
  if (msg.buffer) {
    i32 = new Int32Array(msg.buffer);
    u8 = new Uint8Array(msg.buffer);
    parentPort.postMessage({ got: msg.buffer instanceof SharedArrayBuffer, length: msg.buffer.byteLength });
  } else if (msg === 'handshake') {
    Atomics.store(i32, 1, 7);
    Atomics.store(i32, 0, 1);
    Atomics.notify(i32, 0);
    const woke = Atomics.wait(i32, 2, 0, 10000);
    Atomics.store(i32, 3, Atomics.load(i32, 2) * 2);
    parentPort.postMessage({ woke });
  } else if (msg === 'write') {
    u8.fill(0x42, 64, 128);
    parentPort.postMessage({ word1: Atomics.load(i32, 1) });
  }
});
`;

async function ask(worker: Worker, message: unknown): Promise<Record<string, unknown>> {
  worker.postMessage(message);
  const [reply] = (await once(worker, 'message')) as [Record<string, unknown>];
  return reply;
}

describe('worker threads', { timeout: 30_000 }, () => {
  it('receive the mapping by postMessage (no remap) and synchronise with Atomics on it', async () => {
    const path = scratchPath('worker');
    const m = mapFile(path, { create: true, size: PAGE_SIZE });
    const i32 = new Int32Array(m.buffer);
    const worker = new Worker(WORKER, { eval: true, execArgv: [] });
    try {
      expect(await ask(worker, { buffer: m.buffer })).toEqual({ got: true, length: PAGE_SIZE });
      expect(mappingStats().regions).toBe(1); // one mapping, seen by two threads

      worker.postMessage('handshake');
      await waitFor(() => Atomics.load(i32, 0) === 1);
      expect(Atomics.load(i32, 1)).toBe(7);
      const replied = once(worker, 'message');
      // Wake the worker blocked in Atomics.wait on the mapped memory.
      await waitFor(() => {
        Atomics.store(i32, 2, 21);
        return Atomics.notify(i32, 2) === 1;
      });
      const [reply] = (await replied) as [Record<string, unknown>];
      expect(reply).toEqual({ woke: 'ok' });
      expect(Atomics.load(i32, 3)).toBe(42);
      expect(readFileBytes(path, 12, 4)).toEqual(Uint8Array.of(42, 0, 0, 0));
    } finally {
      await worker.terminate();
      m.close();
    }
  });

  it('close() while a worker holds the buffer revokes it; the range is freed after both drop it', async () => {
    const path = scratchPath('worker-close');
    const worker = new Worker(WORKER, { eval: true, execArgv: [] });
    // In a plain function, so that no suspended async frame keeps the buffer alive afterwards.
    const m = (() => mapFile(path, { create: true, size: PAGE_SIZE }))();
    new Int32Array(m.buffer)[1] = 5;
    await ask(worker, { buffer: m.buffer });
    expect(await ask(worker, 'write')).toEqual({ word1: 5 });
    expect(readFileBytes(path, 64, 1)[0]).toBe(0x42);

    m.close();
    expect(mapsContain(path)).toBe(false);
    // The worker's view is still valid memory, but it is no longer the file.
    expect(await ask(worker, 'write')).toEqual({ word1: 0 });
    expect(readFileBytes(path, 60, 8)).toEqual(Uint8Array.of(0, 0, 0, 0, 0x42, 0x42, 0x42, 0x42));
    expect(mappingStats().regions).toBe(1);

    await worker.terminate();
    await collectUntil(() => mappingStats().regions === 0);
  });
});
