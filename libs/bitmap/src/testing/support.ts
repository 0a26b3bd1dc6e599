/**
 * Shared test helpers: the naive reference model, fast-check arbitraries, and assertions used by
 * every test file of this package (excluded from the build).
 *
 * @packageDocumentation
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';

import fc from 'fast-check';
import ts from 'typescript';
import { expect } from 'vitest';

import type { BitmapErrorCode } from '../errors.js';
import { BitmapError, isBitmapError } from '../errors.js';
import type { PageBitmap } from '../page-bitmap.js';
import { WIRE_HEADER_BYTES } from '../wire.js';

/** Assert that `fn` throws a {@link BitmapError} with `code`. */
export function expectBitmapError(fn: () => unknown, code: BitmapErrorCode): BitmapError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(BitmapError);
    expect(isBitmapError(e)).toBe(true);
    expect((e as BitmapError).code).toBe(code);
    expect((e as BitmapError).message.length).toBeGreaterThan(20);
    return e as BitmapError;
  }
  throw new Error(`expected a BitmapError ${code}, but nothing was thrown`);
}

/** Runs of set bits as `[start, length]` pairs, via `forEachRun`. */
export function collectRuns(b: PageBitmap, start?: number, end?: number): number[][] {
  const out: number[][] = [];
  b.forEachRun(
    (s, n) => {
      out.push([s, n]);
    },
    start,
    end,
  );
  return out;
}

/** The reference model: one boolean per page, every operation the obvious loop. */
export class Model {
  readonly bits: boolean[];
  constructor(readonly size: number) {
    this.bits = new Array<boolean>(size).fill(false);
  }
  static of(bitmap: PageBitmap): Model {
    const m = new Model(bitmap.size);
    for (let i = 0; i < bitmap.size; i++) m.bits[i] = bitmap.test(i);
    return m;
  }
  set(i: number): void {
    this.bits[i] = true;
  }
  clear(i: number): void {
    this.bits[i] = false;
  }
  fill(start: number, end: number, v: boolean): void {
    for (let i = start; i < end; i++) this.bits[i] = v;
  }
  or(other: Model): void {
    for (let i = 0; i < this.size; i++) if (other.bits[i]) this.bits[i] = true;
  }
  andNot(other: Model): void {
    for (let i = 0; i < this.size; i++) if (other.bits[i]) this.bits[i] = false;
  }
  nextSet(from: number): number {
    for (let i = from; i < this.size; i++) if (this.bits[i]) return i;
    return -1;
  }
  nextClear(from: number): number {
    for (let i = from; i < this.size; i++) if (!this.bits[i]) return i;
    return -1;
  }
  count(start = 0, end = this.size): number {
    let c = 0;
    for (let i = start; i < end; i++) if (this.bits[i]) c++;
    return c;
  }
  runs(start = 0, end = this.size): number[][] {
    const out: number[][] = [];
    let i = start;
    while (i < end) {
      if (!this.bits[i]) {
        i++;
        continue;
      }
      const s = i;
      while (i < end && this.bits[i]) i++;
      out.push([s, i - s]);
    }
    return out;
  }
  indices(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.size; i++) if (this.bits[i]) out.push(i);
    return out;
  }
}

/**
 * Compare every query of `b` against the model: test at each index, findNextSet/findNextClear
 * from each index (and past the end), popcount, popcount of a few ranges, runs, the tail
 * invariant.
 */
export function expectMatchesModel(b: PageBitmap, m: Model): void {
  expect(b.size).toBe(m.size);
  for (let i = 0; i < m.size; i++) {
    if (b.test(i) !== m.bits[i]) expect.fail(`bit ${i}: bitmap ${b.test(i)}, model ${m.bits[i]}`);
  }
  for (let i = 0; i <= m.size; i++) {
    if (b.findNextSet(i) !== m.nextSet(i)) {
      expect.fail(`findNextSet(${i}): bitmap ${b.findNextSet(i)}, model ${m.nextSet(i)}`);
    }
    if (b.findNextClear(i) !== m.nextClear(i)) {
      expect.fail(`findNextClear(${i}): bitmap ${b.findNextClear(i)}, model ${m.nextClear(i)}`);
    }
  }
  expect(b.popcount()).toBe(m.count());
  expect(b.isEmpty()).toBe(m.count() === 0);
  const cuts = [0, m.size >> 2, m.size >> 1, m.size - (m.size >> 3), m.size];
  for (const s of cuts) {
    for (const e of cuts) {
      if (s <= e) {
        expect(b.popcountRange(s, e)).toBe(m.count(s, e));
        expect(collectRunsOf(b, s, e)).toEqual(m.runs(s, e));
      }
    }
  }
  expect(b.toIndices()).toEqual(m.indices());
  // Tail invariant: nothing set at or beyond size.
  for (let i = m.size; i < b.words.length * 32; i++) {
    if ((b.words[i >>> 5]! & (1 << (i & 31))) !== 0) expect.fail(`tail bit ${i} is set`);
  }
}

function collectRunsOf(b: PageBitmap, s: number, e: number): number[][] {
  const viaCallback = collectRuns(b, s, e);
  const c = b.runCursor(s, e);
  const viaCursor: number[][] = [];
  while (c.next()) viaCursor.push([c.start, c.length]);
  expect(viaCursor).toEqual(viaCallback);
  return viaCallback;
}

/** Bitmap sizes that stress word edges: 0..300 plus sizes around multiples of 32 and 64. */
export const sizeArb: fc.Arbitrary<number> = fc.oneof(
  fc.integer({ min: 0, max: 300 }),
  fc.constantFrom(1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 191, 192, 193, 256, 257),
);

/** One mutation of a bitmap of a given size, as plain data (printable by fast-check). */
export type Op =
  | { kind: 'set' | 'clear'; index: number }
  | { kind: 'setRange' | 'clearRange'; start: number; end: number }
  | { kind: 'or' | 'andNot'; indices: number[] }
  | { kind: 'setAll' | 'clearAll' | 'harvest' };

/** Operations valid for a bitmap of `size` bits (range ops biased towards word edges). */
export function opArb(size: number): fc.Arbitrary<Op> {
  const edge = fc.oneof(
    fc.integer({ min: 0, max: size }),
    fc.constantFrom(0, 31, 32, 33, 63, 64, 65, size - 1, size).filter((v) => v >= 0 && v <= size),
  );
  const range = fc.tuple(edge, edge).map(([a, b]): [number, number] => (a <= b ? [a, b] : [b, a]));
  const ops: fc.Arbitrary<Op>[] = [
    range.map(([start, end]) => ({ kind: 'setRange' as const, start, end })),
    range.map(([start, end]) => ({ kind: 'clearRange' as const, start, end })),
    fc.constant({ kind: 'setAll' as const }),
    fc.constant({ kind: 'clearAll' as const }),
    fc.constant({ kind: 'harvest' as const }),
  ];
  if (size > 0) {
    const index = fc.integer({ min: 0, max: size - 1 });
    const indices = fc.array(index, { maxLength: 20 });
    ops.push(
      index.map((i) => ({ kind: 'set' as const, index: i })),
      index.map((i) => ({ kind: 'set' as const, index: i })),
      index.map((i) => ({ kind: 'clear' as const, index: i })),
      indices.map((is) => ({ kind: 'or' as const, indices: is })),
      indices.map((is) => ({ kind: 'andNot' as const, indices: is })),
    );
  }
  return fc.oneof(...ops);
}

/** A size and a sequence of operations for it. */
export const scenarioArb: fc.Arbitrary<{ size: number; ops: Op[] }> = sizeArb.chain((size) =>
  fc.record({ size: fc.constant(size), ops: fc.array(opArb(size), { maxLength: 40 }) }),
);

/** A random bitmap as `{ size, indices }` with a random density. */
export const bitmapArb: fc.Arbitrary<{ size: number; indices: number[] }> = sizeArb.chain((size) =>
  fc.record({
    size: fc.constant(size),
    indices:
      size === 0
        ? fc.constant([] as number[])
        : fc.oneof(
            fc.array(fc.integer({ min: 0, max: size - 1 }), { maxLength: 40 }),
            fc
              .tuple(fc.integer({ min: 0, max: size }), fc.integer({ min: 0, max: size }))
              .map(([a, b]) => range(Math.min(a, b), Math.max(a, b))),
          ),
  }),
);

function range(a: number, b: number): number[] {
  const out: number[] = [];
  for (let i = a; i < b; i++) out.push(i);
  return out;
}

/**
 * Transpile this package's sources (not its tests) to plain ES modules in a fresh temporary
 * directory, so a `worker_threads` Worker — which does not go through vitest's transform — can
 * import them. Returns the directory; modules keep their names with a `.js` suffix.
 */
export function transpileSourcesForWorkers(): string {
  const srcDir = join(dirname(fileURLToPath(import.meta.url)), '..');
  const outDir = mkdtempSync(join(tmpdir(), 'handoff-bitmap-'));
  writeFileSync(join(outDir, 'package.json'), '{"type":"module"}\n');
  for (const name of readdirSync(srcDir)) {
    if (!name.endsWith('.ts') || name.endsWith('.test.ts')) continue;
    const source = readFileSync(join(srcDir, name), 'utf8');
    const { outputText } = ts.transpileModule(source, {
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        verbatimModuleSyntax: true,
      },
      fileName: name,
    });
    writeFileSync(join(outDir, name.replace(/\.ts$/, '.js')), outputText);
  }
  return outDir;
}

/** Recompute the checksum field after a deliberate edit, so deeper checks are reached. */
export function withFixedChecksum(bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  if (out.length < WIRE_HEADER_BYTES) return out;
  const view = new DataView(out.buffer);
  const bits = view.getUint32(8, true);
  const bodyEnd = Math.min(out.length, WIRE_HEADER_BYTES + Math.ceil(bits / 64) * 8);
  const crc = crc32(out.subarray(WIRE_HEADER_BYTES, bodyEnd), crc32(out.subarray(0, 16))) >>> 0;
  view.setUint32(16, crc, true);
  return out;
}
