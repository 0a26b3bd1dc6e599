/**
 * Micro-benchmark of `@handoff/bitmap` on a bitmap sized for 2 GiB of RAM at 4 KiB pages
 * (524288 bits = 64 KiB), at densities 0%, 0.1%, 10% and 100% (uniformly random bits — the
 * worst case for run iteration; real dirty sets are clustered).
 *
 * `run()` is the entry point for the root harness (`npm run bench -- bitmap` imports the built
 * `dist/bitmap.bench.js`). Standalone without a build (Node 20 cannot run `.ts`):
 * `node bench/bitmap.bench.js` prints the table; `--write` also writes `bench/bitmap.md`.
 *
 * Columns: per-pass operations report the median µs of one pass over the whole bitmap; per-call
 * operations report ns per call (best of several 1M-call loops over random indexes).
 * `heap B/call` is the V8 heap growth per call across a loop without GC (0 = allocation-free).
 */
import { cpus } from 'node:os';

import { AtomicDirtyLog } from './atomic-dirty-log.js';
import { DirtyLog } from './dirty-log.js';
import { EpochDirtyLog } from './epoch-dirty-log.js';
import type { EpochDirtyWriter } from './epoch-dirty-log.js';
import { PageBitmap, RunCursor } from './page-bitmap.js';
import { decode, encode } from './wire.js';

/** The table shape every per-area bench module returns to the root harness (`bench/run.js`). */
export interface BenchTable {
  title: string;
  columns: string[];
  rows: (string | number)[][];
  /** Markdown printed under the table. */
  notes?: string;
}

/** How to read the table; printed under it by the harness. */
export const BENCH_NOTES = [
  'Bitmap of 524288 bits = 2 GiB of guest RAM at 4 KiB pages (64 KiB of bitmap); densities are',
  'uniformly random set bits (the worst case for runs). Per-pass rows: median µs of one pass over',
  'the whole bitmap. Per-call rows: best ns/call over 1M calls at random indexes. `heap B/call`:',
  'V8 heap growth per call measured at 10% density (0 = allocation-free).',
  '',
  '- A checked `set`/`mark` costs ≈0.7 ns more than a raw typed-array store (call, field loads,',
  '  bounds check); the hot paths are checked and allocation-free.',
  '- `AtomicDirtyLog.mark` pays an atomic read-modify-write (several times a plain mark); use',
  '  `EpochDirtyLog` for a vCPU thread that marks on every store.',
  '- Harvest: `DirtyLog` is a buffer swap plus one 64 KiB clear; `EpochDirtyLog` adds the epoch',
  '  flip and acknowledgement (a local writer here; a remote writer adds up to one of its time',
  '  slices of waiting, not measured); `AtomicDirtyLog` exchanges every non-zero word, so its cost',
  '  grows with density.',
  '- Consuming a harvest is dominated by run iteration at ~10 ns per run; uniformly random 10%',
  '  density is the worst case (47k runs). Sparse and dense bitmaps skip whole words.',
  '- Per-bit `findNextSet` loops on dense bitmaps cost a call per bit; prefer runs or `forEachSet`.',
].join('\n');

/** 2 GiB / 4 KiB. */
export const BENCH_BITS = 524288;
/** Densities measured, as fractions of set bits. */
export const BENCH_DENSITIES: readonly number[] = [0, 0.001, 0.1, 1];

let sink = 0;

function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** A bitmap with each bit set independently with probability `density` (seeded). */
export function patternBitmap(bits: number, density: number, seed = 42): PageBitmap {
  const b = new PageBitmap(bits);
  if (density >= 1) b.setAll();
  else if (density > 0) {
    const rnd = xorshift(seed);
    const threshold = Math.floor(density * 2 ** 32);
    for (let i = 0; i < bits; i++) if (rnd() < threshold) b.set(i);
  }
  return b;
}

function nowNs(): number {
  return Number(process.hrtime.bigint());
}

/** Median µs of `fn` over `reps` timed calls, each preceded by an untimed `setup`. */
function passMicros(fn: () => void, setup?: () => void, minReps = 30, budgetMs = 300): number {
  for (let i = 0; i < 5; i++) {
    setup?.();
    fn();
  }
  const samples: number[] = [];
  const stop = performance.now() + budgetMs;
  while (samples.length < minReps || (performance.now() < stop && samples.length < 2000)) {
    setup?.();
    const t = nowNs();
    fn();
    samples.push((nowNs() - t) / 1000);
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1]!;
}

/** Best ns per call of `loop(n)` (which performs n calls) over several rounds. */
function callNanos(loop: (n: number) => void, n = 1_000_000, rounds = 7): number {
  for (let i = 0; i < 3; i++) loop(n); // warm up: let V8 optimise the whole loop, not OSR it
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t = nowNs();
    loop(n);
    best = Math.min(best, (nowNs() - t) / n);
  }
  return best;
}

/**
 * V8 heap growth per call over `calls` calls (after warm-up); 0 means no allocation.
 * `opsPerCall` is how many elementary operations (bits, runs, words) one call performs.
 */
function heapPerCall(fn: () => void, calls: number, opsPerCall = 1): number {
  for (let i = 0; i < calls; i++) fn();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < calls; i++) fn();
  const after = process.memoryUsage().heapUsed;
  // process.memoryUsage() and the JIT allocate a little; under 4 KiB in total, or under 1 B per
  // elementary operation (the smallest V8 heap object is 12+ bytes), is not an allocation per
  // call or per element.
  const grown = after - before;
  return grown < 4096 || grown / (calls * Math.max(1, opsPerCall)) < 1 ? 0 : grown / calls;
}

function round(v: number): number {
  if (v >= 100) return Math.round(v);
  if (v >= 10) return Math.round(v * 10) / 10;
  return Math.round(v * 100) / 100;
}

const IDX_MASK = (1 << 16) - 1;

function rawStoreLoop(cells: Int32Array, idx: Int32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const p = idx[i & IDX_MASK]!;
    cells[p >>> 5] = cells[p >>> 5]! | (1 << (p & 31));
  }
}

function setLoop(b: PageBitmap, idx: Int32Array, n: number): void {
  for (let i = 0; i < n; i++) b.set(idx[i & IDX_MASK]!);
}

function testLoop(b: PageBitmap, idx: Int32Array, n: number): void {
  let c = 0;
  for (let i = 0; i < n; i++) if (b.test(idx[i & IDX_MASK]!)) c++;
  sink = (sink + c) | 0;
}

// One loop per marker class, so each call site stays monomorphic as in a real vCPU.
function markLoopDirty(m: DirtyLog, idx: Int32Array, n: number): void {
  for (let i = 0; i < n; i++) m.mark(idx[i & IDX_MASK]!);
}

function markLoopEpoch(m: EpochDirtyWriter, idx: Int32Array, n: number): void {
  for (let i = 0; i < n; i++) m.mark(idx[i & IDX_MASK]!);
}

function markLoopAtomic(m: AtomicDirtyLog, idx: Int32Array, n: number): void {
  for (let i = 0; i < n; i++) m.mark(idx[i & IDX_MASK]!);
}

interface Row {
  name: string;
  unit: string;
  values: number[];
  heap: number | string;
}

/** Run the benchmark; about 20–40 s on a laptop-class CPU. */
export async function run(): Promise<BenchTable> {
  const bits = BENCH_BITS;
  const rows: Row[] = [];
  const row = (name: string, unit: string, heap: number | string = '') => {
    const r: Row = { name, unit, values: [], heap };
    rows.push(r);
    return r;
  };
  const setBits = row('set bits', 'count', '—');
  const runCount = row('runs of set bits', 'count', '—');
  const rFindSet = row('findNextSet loop over all set bits', 'µs/pass');
  const rFindClear = row('findNextClear loop over all clear bits', 'µs/pass');
  const rForEachSet = row('forEachSet (callback per set bit)', 'µs/pass');
  const rCursor = row('RunCursor pass (next() per run)', 'µs/pass');
  const rForEachRun = row('forEachRun (callback per run)', 'µs/pass');
  const rPopcount = row('popcount', 'µs/pass');
  const rOr = row('or (merge a same-density bitmap)', 'µs/pass');
  const rHarvest = row('DirtyLog.harvest (swap + clear 64 KiB)', 'µs/harvest');
  const rHarvestRuns = row('DirtyLog.harvest + RunCursor pass', 'µs/harvest');
  const rAtomicHarvest = row('AtomicDirtyLog.harvest (load/exchange per word)', 'µs/harvest');
  const rEpochHarvest = row('EpochDirtyLog harvest (flip, ack, merge+clear)', 'µs/harvest');
  const rEncode = row('encode (wire form, incl. CRC-32)', 'µs/pass', '—');
  const rDecode = row('decode (validate + copy)', 'µs/pass', '—');
  const rRaw = row('baseline: raw Int32Array bit store, no check', 'ns/call');
  const rSet = row('PageBitmap.set (checked)', 'ns/call');
  const rTest = row('PageBitmap.test (checked)', 'ns/call');
  const rMark = row('DirtyLog.mark (checked)', 'ns/call');
  const rEpochMark = row('EpochDirtyWriter.mark (checked, plain store)', 'ns/call');
  const rAtomicMark = row('AtomicDirtyLog.mark (checked, Atomics.or)', 'ns/call');

  const idx = new Int32Array(IDX_MASK + 1);
  const rnd = xorshift(7);
  for (let i = 0; i < idx.length; i++) idx[i] = rnd() % bits;

  for (const density of BENCH_DENSITIES) {
    const heapHere = density === 0.1; // heap column measured at 10%
    const pattern = patternBitmap(bits, density);
    const b = pattern.clone();
    const setCount = b.popcount();
    const runs = b.forEachRun(() => undefined);
    setBits.values.push(setCount);
    runCount.values.push(runs);

    const findSetPass = () => {
      let c = 0;
      for (let i = b.findNextSet(0); i >= 0; i = b.findNextSet(i + 1)) c++;
      sink = (sink + c) | 0;
    };
    rFindSet.values.push(passMicros(findSetPass));
    if (heapHere) rFindSet.heap = heapPerCall(findSetPass, 20, setCount);

    const findClearPass = () => {
      let c = 0;
      for (let i = b.findNextClear(0); i >= 0; i = b.findNextClear(i + 1)) c++;
      sink = (sink + c) | 0;
    };
    rFindClear.values.push(passMicros(findClearPass));
    if (heapHere) rFindClear.heap = heapPerCall(findClearPass, 20, bits - setCount);

    const onBit = (i: number) => {
      sink = (sink + i) | 0;
    };
    const forEachSetPass = () => {
      b.forEachSet(onBit);
    };
    rForEachSet.values.push(passMicros(forEachSetPass));
    if (heapHere) rForEachSet.heap = heapPerCall(forEachSetPass, 20, setCount);

    const cursor = b.runCursor();
    const cursorPass = () => {
      cursor.reset();
      while (cursor.next()) sink = (sink + cursor.length) | 0;
    };
    rCursor.values.push(passMicros(cursorPass));
    if (heapHere) rCursor.heap = heapPerCall(cursorPass, 20, runs);

    const onRun = (_s: number, n: number) => {
      sink = (sink + n) | 0;
    };
    const forEachRunPass = () => {
      b.forEachRun(onRun);
    };
    rForEachRun.values.push(passMicros(forEachRunPass));
    if (heapHere) rForEachRun.heap = heapPerCall(forEachRunPass, 20, runs);

    const popPass = () => {
      sink = (sink + b.popcount()) | 0;
    };
    rPopcount.values.push(passMicros(popPass));
    if (heapHere) rPopcount.heap = heapPerCall(popPass, 20, b.words.length);

    const other = patternBitmap(bits, density, 99);
    const target = new PageBitmap(bits);
    const orPass = () => target.or(other);
    rOr.values.push(passMicros(orPass, () => target.copyFrom(pattern)));
    if (heapHere) rOr.heap = heapPerCall(orPass, 20, b.words.length);

    // DirtyLog: the active buffer is refilled (untimed) before each timed harvest.
    const log = new DirtyLog(bits);
    const refill = () => log.markBitmap(pattern);
    const harvestOnly = () => {
      sink = (sink + log.harvest().size) | 0;
    };
    rHarvest.values.push(passMicros(harvestOnly, refill));
    if (heapHere) rHarvest.heap = heapPerCall(harvestOnly, 50);
    const harvestCursor = new RunCursor(log.harvest()); // re-pointed at each harvest
    const harvestAndRuns = () => {
      const c = harvestCursor.over(log.harvest());
      while (c.next()) sink = (sink + c.length) | 0;
    };
    rHarvestRuns.values.push(passMicros(harvestAndRuns, refill));
    if (heapHere) rHarvestRuns.heap = heapPerCall(harvestAndRuns, 50, runs);

    const alog = AtomicDirtyLog.create(bits);
    const cells = new Uint32Array(alog.buffer, 16, pattern.words.length);
    const arefill = () => cells.set(pattern.words);
    const aharvest = () => {
      sink = (sink + alog.harvest().size) | 0;
    };
    rAtomicHarvest.values.push(passMicros(aharvest, arefill));
    if (heapHere) rAtomicHarvest.heap = heapPerCall(aharvest, 50);

    const elog = EpochDirtyLog.create(bits, { writers: 1 });
    const ew = elog.writer(0);
    const erefill = () => {
      pattern.forEachRun((s, n) => ew.markRange(s, s + n));
    };
    const eharvest = () => {
      elog.requestHarvest();
      sink = (sink + elog.tryCollect()!.size) | 0;
    };
    rEpochHarvest.values.push(passMicros(eharvest, erefill, 30, 600));
    if (heapHere) rEpochHarvest.heap = heapPerCall(eharvest, 50);

    let bytes = encode(b);
    rEncode.values.push(
      passMicros(() => {
        bytes = encode(b);
      }),
    );
    rDecode.values.push(
      passMicros(() => {
        sink = (sink + decode(bytes, { expectedBits: bits }).size) | 0;
      }),
    );

    // Per-call costs at this fill level. The loops are module-level functions taking the target
    // as a parameter, as in real callers (closures over a constant would let V8 specialise them).
    const raw = b.clone();
    rRaw.values.push(callNanos((n) => rawStoreLoop(raw.cells, idx, n)));
    const sb = b.clone();
    rSet.values.push(callNanos((n) => setLoop(sb, idx, n)));
    if (heapHere) rSet.heap = heapPerCall(() => setLoop(sb, idx, 1), 200_000);
    rTest.values.push(callNanos((n) => testLoop(sb, idx, n)));
    if (heapHere) rTest.heap = heapPerCall(() => testLoop(sb, idx, 1), 200_000);
    const mlog = new DirtyLog(bits);
    rMark.values.push(callNanos((n) => markLoopDirty(mlog, idx, n)));
    if (heapHere) rMark.heap = heapPerCall(() => markLoopDirty(mlog, idx, 1), 200_000);
    rEpochMark.values.push(callNanos((n) => markLoopEpoch(ew, idx, n)));
    if (heapHere) rEpochMark.heap = heapPerCall(() => markLoopEpoch(ew, idx, 1), 200_000);
    rAtomicMark.values.push(callNanos((n) => markLoopAtomic(alog, idx, n)));
    if (heapHere) rAtomicMark.heap = heapPerCall(() => markLoopAtomic(alog, idx, 1), 200_000);
  }
  if (sink === 0x7fffffff) console.log(sink); // keep results observable

  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  return {
    title: `@handoff/bitmap — ${bits} bits (2 GiB at 4 KiB pages), node ${process.version}, ${cpu}`,
    columns: ['operation', 'unit', ...BENCH_DENSITIES.map(pct), 'heap B/call (10%)'],
    rows: rows.map((r) => [
      r.name,
      r.unit,
      ...r.values.map((v) => (r.unit === 'count' ? v : round(v))),
      typeof r.heap === 'number' ? round(r.heap) : r.heap,
    ]),
    notes: BENCH_NOTES,
  };
}

function pct(d: number): string {
  return `${Math.round(d * 1000) / 10}%`;
}

/** Render a {@link BenchTable} (and its notes) as Markdown. */
export function toMarkdown(table: BenchTable): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [
    `### ${table.title}`,
    '',
    line(table.columns),
    line(table.columns.map((_, i) => (i < 2 ? '---' : '---:'))),
    ...table.rows.map(line),
    '',
    ...(table.notes === undefined ? [] : [table.notes, '']),
  ].join('\n');
}
