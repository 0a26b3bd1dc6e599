/**
 * Benchmark suite `shm` (run by `bench/run.js`, or directly: `node libs/shm/dist/shm.bench.js`).
 *
 * Measures what a clone start pays to map guest RAM, and whether that mapping makes V8 collect
 * garbage: V8 charges an external `ArrayBuffer` to the isolate's external memory (starting
 * incremental marking around 64 MiB and forcing a full GC near 1 GiB), while a SharedArrayBuffer
 * over the same mapping is not charged. Every case runs in a fresh `node` process so heap state
 * does not leak between cases.
 *
 * @internal
 * @packageDocumentation
 */
import { spawnSync } from 'node:child_process';
import { closeSync } from 'node:fs';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

import { createMemfd, mapFd, type BufferKind, type Mapping } from './index.js';
import { PAGE_SIZE } from './validate.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** One table for the harness. */
export interface Table {
  title: string;
  columns: string[];
  rows: string[][];
  notes?: string;
}

interface GcEvent {
  kind: string;
  start: number;
  duration: number;
}

const GC_KINDS: Record<number, string> = { 1: 'minor', 4: 'major', 8: 'incremental', 16: 'weakcb' };

/** Record GC events (perf_hooks) until `stop()`; events arrive asynchronously. */
function watchGc(): { events: GcEvent[]; stop: () => void } {
  const events: GcEvent[] = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as { detail?: { kind?: number } }).detail?.kind ?? 0;
      events.push({
        kind: GC_KINDS[kind] ?? String(kind),
        start: e.startTime,
        duration: e.duration,
      });
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  return { events, stop: () => observer.disconnect() };
}

const settle = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

/** GCs that started in [from, to) as "n× kind (ms)". */
function describeGcs(events: GcEvent[], from: number, to: number): string {
  const hits = events.filter((e) => e.start >= from && e.start < to);
  if (hits.length === 0) return 'none';
  return hits.map((e) => `${e.kind} ${e.duration.toFixed(1)} ms`).join(', ');
}

/** @internal Case 1: map one sparse memfd of `size` bytes as a clone would (private), in a fresh process. */
export async function mapCase(size: number, bufferKind: BufferKind): Promise<string[]> {
  const fd = createMemfd('handoff-bench', { size });
  // Warm up: load the addon and compile the map path on a small mapping.
  for (let i = 0; i < 3; i++)
    mapFd(fd, { sharing: 'private', length: PAGE_SIZE, bufferKind }).close();
  const gc = watchGc();
  const t0 = performance.now();
  const m: Mapping<ArrayBuffer | SharedArrayBuffer> = mapFd(fd, { sharing: 'private', bufferKind });
  const t1 = performance.now();
  new Uint8Array(m.buffer)[0] = 1; // a first access
  await settle(200); // let scheduled GC work (incremental marking tasks) run and be reported
  const t2 = performance.now();
  m.close();
  const t3 = performance.now();
  // Nine more map/close pairs in the same process: the steady state of starting many clones.
  const again: number[] = [];
  for (let i = 0; i < 9; i++) {
    const a = performance.now();
    const n = mapFd(fd, { sharing: 'private', bufferKind });
    again.push(performance.now() - a);
    n.close();
    await settle(5);
  }
  const t4 = performance.now();
  await settle(100);
  gc.stop();
  closeSync(fd);
  const later = gc.events.filter((e) => e.start >= t3 && e.start < t4).length;
  return [
    `${size / MiB} MiB`,
    bufferKind === 'shared' ? 'SharedArrayBuffer' : 'ArrayBuffer (detachable)',
    ((t1 - t0) * 1000).toFixed(0),
    describeGcs(gc.events, t0, t1),
    describeGcs(gc.events, t1, t2),
    ((t3 - t2) * 1000).toFixed(0),
    `${(median(again) * 1000).toFixed(0)} µs, ${later} GCs`,
  ];
}

/** @internal Case 2: start `count` clones of one template (private maps, all kept), in a fresh process. */
export async function clonesCase(
  size: number,
  count: number,
  bufferKind: BufferKind,
): Promise<string[]> {
  const fd = createMemfd('handoff-bench-template', { size });
  mapFd(fd, { sharing: 'private', length: PAGE_SIZE, bufferKind }).close();
  const gc = watchGc();
  const clones: Mapping<ArrayBuffer | SharedArrayBuffer>[] = [];
  const each: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const a = performance.now();
    clones.push(mapFd(fd, { sharing: 'private', bufferKind }));
    each.push(performance.now() - a);
  }
  const t1 = performance.now();
  await settle(200);
  const t2 = performance.now();
  gc.stop();
  for (const c of clones) c.close();
  closeSync(fd);
  const gcs = gc.events.filter((e) => e.start >= t0 && e.start < t2);
  const gcMs = gcs.reduce((sum, e) => sum + e.duration, 0);
  return [
    `${count} × ${size / GiB} GiB`,
    bufferKind === 'shared' ? 'SharedArrayBuffer' : 'ArrayBuffer (detachable)',
    (t1 - t0).toFixed(2),
    `${(median(each) * 1000).toFixed(0)} / ${(Math.max(...each) * 1000).toFixed(0)}`,
    `${gcs.length} (${gcMs.toFixed(1)} ms)`,
  ];
}

/** @internal Case 3: hand a 2 GiB mapping to a worker thread and back, in a fresh process. */
export async function workerCase(): Promise<string[]> {
  const fd = createMemfd('handoff-bench-worker', { size: 2 * GiB });
  const m = mapFd(fd);
  closeSync(fd);
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads');
     parentPort.on('message', (buffer) => {
       const ram = new Uint8Array(buffer);
       ram[ram.length - 1] = 7;
       parentPort.postMessage(ram.length);
     });`,
    { eval: true, execArgv: [] },
  );
  const roundTrip = (): Promise<number> =>
    new Promise((resolve) => {
      const t = performance.now();
      worker.once('message', () => resolve(performance.now() - t));
      worker.postMessage(m.buffer);
    });
  await roundTrip(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < 20; i++) times.push(await roundTrip());
  const seen = new Uint8Array(m.buffer)[2 * GiB - 1];
  await worker.terminate();
  m.close();
  return ['2 GiB SharedArrayBuffer', (median(times) * 1000).toFixed(0), String(seen === 7)];
}

/** @internal Case 4: first-touch costs per 4 KiB page, in a fresh process. */
export function touchCase(): string[][] {
  const size = 256 * MiB;
  const pages = size / PAGE_SIZE;
  const rows: string[][] = [];
  const fd = createMemfd('handoff-bench-touch', { size });
  const time = (label: string, m: Mapping, touch: (ram: Uint8Array) => void): void => {
    const t = performance.now();
    touch(new Uint8Array(m.buffer));
    const us = ((performance.now() - t) * 1000) / pages;
    rows.push([label, us.toFixed(3), (PAGE_SIZE / MiB / (us / 1e6)).toFixed(0)]);
  };
  const write = (value: number) => (ram: Uint8Array) => {
    for (let i = 0; i < size; i += PAGE_SIZE) ram[i] = value;
  };
  const read = (ram: Uint8Array): void => {
    let s = 0;
    for (let i = 0; i < size; i += PAGE_SIZE) s += ram[i] as number;
    if (s < 0) throw new Error('unreachable');
  };
  const first = mapFd(fd);
  time('write, fresh tmpfs pages (allocate + zero + fault)', first, write(1));
  time('write, same mapping again (no faults)', first, write(2));
  const second = mapFd(fd);
  time('write, resident pages through a new shared mapping (minor faults)', second, write(3));
  const reader = mapFd(fd, { sharing: 'private' });
  time('read, private clone of resident template (minor faults, no copy)', reader, read);
  const writer = mapFd(fd, { sharing: 'private' });
  time('write, private clone (copy-on-write: allocate + copy)', writer, write(4));
  const populated = mapFd(fd, { sharing: 'private' });
  const t = performance.now();
  populated.advise('populate-read');
  const populateUs = ((performance.now() - t) * 1000) / pages;
  rows.push([
    "advise('populate-read') of a private clone",
    populateUs.toFixed(3),
    (PAGE_SIZE / MiB / (populateUs / 1e6)).toFixed(0),
  ]);
  time(
    'read after populate-read (PTEs present; the VM still charges first access)',
    populated,
    read,
  );
  for (const m of [first, second, reader, writer, populated]) m.close();
  closeSync(fd);
  return rows;
}

/** Run `expr` (an expression over the module `m`) in a fresh node process; parse its JSON. */
function inFreshProcess<T>(expr: string): T {
  const url = pathToFileURL(fileURLToPath(import.meta.url)).href;
  const script = `const m = await import(${JSON.stringify(url)}); console.log(JSON.stringify(await ${expr}));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  if (r.status !== 0) throw new Error(`bench case ${expr} failed: ${r.stderr}`);
  const last = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as T;
}

/** Entry point for `bench/run.js`: every table of the suite. */
export async function run(): Promise<Table[]> {
  const mapRows: string[][] = [];
  for (const size of [64 * MiB, GiB, 2 * GiB]) {
    for (const kind of ['shared', 'detachable'] as const) {
      mapRows.push(inFreshProcess<string[]>(`m.mapCase(${size}, '${kind}')`));
    }
  }
  const cloneRows: string[][] = [];
  for (const kind of ['shared', 'detachable'] as const) {
    cloneRows.push(inFreshProcess<string[]>(`m.clonesCase(${GiB}, 20, '${kind}')`));
  }
  const workerRow = inFreshProcess<string[]>('m.workerCase()');
  const touchRows = inFreshProcess<string[][]>('m.touchCase()');
  return [
    {
      title: 'Mapping a clone (private map of a sparse memfd) in a fresh process',
      columns: [
        'size',
        'buffer',
        'map µs',
        'GC during map',
        'GC in next 200 ms',
        'close µs',
        'next 9 maps: median, GCs',
      ],
      rows: mapRows,
      notes:
        'A SharedArrayBuffer is not charged to V8 external memory (BackingStore::' +
        'PerIsolateAccountingLength is 0 for shared stores), so no GC is triggered at any size. ' +
        'An external ArrayBuffer is charged: from ~64 MiB it starts incremental marking inside ' +
        'the map call, and at 1-2 GiB it exceeds the hard limit and forces a full (reduce-memory) ' +
        'mark-compact. "next 9 maps" map and close again with 5 ms idle gaps in between, so ' +
        'their per-call time includes cold caches; the clone table below maps back to back.',
    },
    {
      title: 'Starting 20 clones of a 1 GiB template in one process (all kept mapped)',
      columns: ['clones', 'buffer', 'total ms', 'per clone µs (median / max)', 'GCs (total)'],
      rows: cloneRows,
    },
    {
      title: 'Handing guest RAM to a vCPU worker thread',
      columns: ['buffer', 'postMessage round trip µs (median of 20)', 'worker write seen by owner'],
      rows: [workerRow],
    },
    {
      title: 'Touching 256 MiB of a memfd mapping, one byte per 4 KiB page',
      columns: ['access', 'µs / page', 'MiB/s of pages'],
      rows: touchRows,
    },
  ];
}

// Standalone: `node libs/shm/dist/shm.bench.js` prints the tables as JSON.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const table of await run()) console.log(JSON.stringify(table, null, 2));
}
