/**
 * Real threads: vCPU-like workers store into shared "guest memory" and mark pages while this
 * thread harvests and "sends" (copies) the harvested pages. The migration property must hold:
 * after the writers stop and a final harvest, the copy equals the memory — no dirty page lost.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { AtomicDirtyLog } from './atomic-dirty-log.js';
import { EpochDirtyLog } from './epoch-dirty-log.js';
import type { PageBitmap } from './page-bitmap.js';
import { transpileSourcesForWorkers } from './testing/support.js';

/** The writer thread: `stores` random stores into its own pages (slot, slot + writers, ...). */
const WORKER = `
import { parentPort, workerData } from 'node:worker_threads';
import { AtomicDirtyLog } from './atomic-dirty-log.js';
import { EpochDirtyWriter } from './epoch-dirty-log.js';

const { kind, log, data, flags, slot, writers, pages, stores, slice, seed } = workerData;
const mem = new Int32Array(data);
const ctl = new Int32Array(flags);
const marker = kind === 'atomic' ? AtomicDirtyLog.attach(log) : EpochDirtyWriter.attach(log, slot);
let x = seed >>> 0 || 1;
const own = Math.floor(pages / writers);
Atomics.add(ctl, 1, 1); // ready
for (let i = 0; i < stores; i++) {
  x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
  const page = (x % own) * writers + slot;
  mem[page] = mem[page] + 1;     // the guest store (plain)
  marker.mark(page);             // then the mark
  if (kind === 'epoch' && i % slice === slice - 1) marker.sync();
  if (kind === 'epoch' && i % (slice * 64) === 0) { marker.park(); marker.sync(); }
}
if (kind === 'epoch') marker.park();
Atomics.add(ctl, 0, 1); // done
Atomics.notify(ctl, 0);
parentPort.postMessage('done');
`;

let dir = '';

beforeAll(() => {
  dir = transpileSourcesForWorkers();
  writeFileSync(join(dir, 'writer-worker.js'), WORKER);
});

afterAll(() => {
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

interface Run {
  kind: 'atomic' | 'epoch';
  writers: number;
  pages: number;
  stores: number;
  /** Harvest until the writers are done; returns the harvested bitmap for each round. */
  harvest: () => Promise<PageBitmap>;
  log: SharedArrayBuffer;
}

async function migrate(run: Run): Promise<{ rounds: number; sentPages: number }> {
  const data = new SharedArrayBuffer(run.pages * 4);
  const flags = new SharedArrayBuffer(8);
  const mem = new Int32Array(data);
  const ctl = new Int32Array(flags);
  const copy = new Int32Array(run.pages);
  const workers: Worker[] = [];
  const exits: Promise<unknown>[] = [];
  for (let slot = 0; slot < run.writers; slot++) {
    const w = new Worker(join(dir, 'writer-worker.js'), {
      workerData: {
        kind: run.kind,
        log: run.log,
        data,
        flags,
        slot,
        writers: run.writers,
        pages: run.pages,
        stores: run.stores,
        slice: 1000,
        seed: 0x9e3779b9 + slot,
      },
    });
    workers.push(w);
    exits.push(
      new Promise((resolve, reject) => {
        w.on('error', reject);
        w.on('exit', resolve);
      }),
    );
  }
  // Let every writer start before harvesting (worker start-up needs no event-loop turn here).
  while (Atomics.load(ctl, 1) < run.writers) await new Promise((resolve) => setTimeout(resolve, 1));
  let rounds = 0;
  let sentPages = 0;
  const send = (h: PageBitmap): void => {
    sentPages += h.forEachSet((p) => {
      copy[p] = mem[p]!;
    });
  };
  // Pre-copy iterations while the writers run.
  while (Atomics.load(ctl, 0) < run.writers) {
    send(await run.harvest());
    rounds++;
  }
  // Writers are stopped (their `done` increment is the hand-off); final pass.
  send(await run.harvest());
  await Promise.all(exits);
  for (let p = 0; p < run.pages; p++) {
    if (copy[p] !== mem[p]) expect.fail(`page ${p}: sent version ${copy[p]}, memory has ${mem[p]}`);
  }
  let stored = 0;
  for (let p = 0; p < run.pages; p++) stored += mem[p]!;
  expect(stored).toBe(run.writers * run.stores);
  return { rounds, sentPages };
}

describe('concurrent writers and a harvester', () => {
  it('AtomicDirtyLog: two writer threads, read-and-clear harvests in a tight loop, no lost update', async () => {
    const pages = 512; // 16 words: writers and harvester collide often
    const log = AtomicDirtyLog.create(pages);
    const r = await migrate({
      kind: 'atomic',
      writers: 2,
      pages,
      stores: 1_000_000,
      log: log.buffer,
      harvest: () => Promise.resolve(log.harvest()),
    });
    expect(r.rounds).toBeGreaterThan(1);
  }, 60_000);

  it('EpochDirtyLog: two writer threads with plain marks, harvestAsync, no lost update', async () => {
    const pages = 4096;
    const log = EpochDirtyLog.create(pages, { writers: 2 });
    const r = await migrate({
      kind: 'epoch',
      writers: 2,
      pages,
      stores: 400_000,
      log: log.buffer,
      harvest: () => log.harvestAsync(10_000),
    });
    expect(r.rounds).toBeGreaterThan(1);
  }, 60_000);

  it('EpochDirtyLog: harvestSync (blocking wait) from this thread', async () => {
    const pages = 1024;
    const log = EpochDirtyLog.create(pages, { writers: 1 });
    // migrate() checks that no update was lost; here also that the harvests carried pages.
    const r = await migrate({
      kind: 'epoch',
      writers: 1,
      pages,
      stores: 300_000,
      log: log.buffer,
      harvest: async () => {
        await new Promise((resolve) => setImmediate(resolve));
        return log.harvestSync(10_000);
      },
    });
    expect(r.sentPages).toBeGreaterThan(0);
  }, 60_000);
});
