import { describe, expect, it } from 'vitest';

import { BitmapError, isBitmapError } from './errors.js';
import { MAX_BITS, PageBitmap, RunCursor } from './page-bitmap.js';
import { collectRuns, expectBitmapError } from './testing/support.js';

const SIZES = [0, 1, 31, 32, 33, 63, 64, 65, 95, 96, 127, 128, 129, 1000];

describe('PageBitmap construction', () => {
  it('starts empty and sizes its storage in whole 64-bit words', () => {
    for (const size of SIZES) {
      const b = new PageBitmap(size);
      expect(b.size).toBe(size);
      expect(b.words.length).toBe(Math.ceil(size / 64) * 2);
      expect(b.words.length % 2).toBe(0);
      expect(PageBitmap.byteLengthFor(size)).toBe(b.words.length * 4);
      expect(PageBitmap.wordCountFor(size)).toBe(b.words.length);
      expect(b.popcount()).toBe(0);
      expect(b.isEmpty()).toBe(true);
    }
  });

  it('rejects bad sizes with BITMAP_INVALID_ARGUMENT', () => {
    for (const bad of [-1, 1.5, NaN, Infinity, MAX_BITS + 1, '8' as unknown as number]) {
      expectBitmapError(() => new PageBitmap(bad), 'BITMAP_INVALID_ARGUMENT');
    }
  });

  it('adopts caller memory, including a SharedArrayBuffer at an aligned offset', () => {
    const sab = new SharedArrayBuffer(64);
    const a = new PageBitmap(100, { buffer: sab, byteOffset: 8 });
    const b = new PageBitmap(100, { buffer: sab, byteOffset: 8 });
    a.set(99);
    expect(b.test(99)).toBe(true);
    expect(new Uint32Array(sab)[2 + 3]).toBe(1 << 3);
  });

  it('rejects misaligned, short or wrong-typed storage', () => {
    const ab = new ArrayBuffer(32);
    expectBitmapError(
      () => new PageBitmap(64, { buffer: ab, byteOffset: 4 }),
      'BITMAP_INVALID_ARGUMENT',
    );
    expectBitmapError(
      () => new PageBitmap(64, { buffer: ab, byteOffset: 32 }),
      'BITMAP_INVALID_ARGUMENT',
    );
    expectBitmapError(() => new PageBitmap(512, { buffer: ab }), 'BITMAP_INVALID_ARGUMENT');
    expectBitmapError(
      () => new PageBitmap(64, { buffer: new Uint8Array(16) as unknown as ArrayBuffer }),
      'BITMAP_INVALID_ARGUMENT',
    );
  });

  it('refuses adopted memory with bits beyond the size', () => {
    const ab = new ArrayBuffer(8);
    new Uint32Array(ab)[1] = 1; // bit 32
    expect(() => new PageBitmap(32, { buffer: ab })).toThrow(BitmapError);
    expectBitmapError(() => new PageBitmap(32, { buffer: ab }), 'BITMAP_MALFORMED');
    expect(new PageBitmap(33, { buffer: ab }).test(32)).toBe(true);
  });
});

describe('single bits', () => {
  it('sets, tests and clears bit 0, the last bit and every word boundary', () => {
    for (const size of SIZES.filter((s) => s > 0)) {
      const b = new PageBitmap(size);
      const probes = [0, size - 1, 31, 32, 63, 64, 65].filter((i) => i < size);
      for (const i of probes) {
        b.set(i);
        expect(b.test(i)).toBe(true);
      }
      expect(b.popcount()).toBe(new Set(probes).size);
      for (const i of probes) {
        b.clear(i);
        expect(b.test(i)).toBe(false);
      }
      expect(b.isEmpty()).toBe(true);
    }
  });

  it('testAndAssign reports the previous value', () => {
    const b = new PageBitmap(40);
    expect(b.testAndAssign(33, true)).toBe(false);
    expect(b.testAndAssign(33, true)).toBe(true);
    expect(b.testAndAssign(33, false)).toBe(true);
    expect(b.test(33)).toBe(false);
  });

  it('throws BITMAP_OUT_OF_RANGE for indexes outside [0, size) or not integers', () => {
    const b = new PageBitmap(65);
    for (const bad of [-1, 65, 66, 2 ** 32, 0.5, NaN, Infinity]) {
      expectBitmapError(() => b.set(bad), 'BITMAP_OUT_OF_RANGE');
      expectBitmapError(() => b.clear(bad), 'BITMAP_OUT_OF_RANGE');
      expectBitmapError(() => b.test(bad), 'BITMAP_OUT_OF_RANGE');
    }
    expectBitmapError(() => new PageBitmap(0).test(0), 'BITMAP_OUT_OF_RANGE');
    expect(b.words.every((w) => w === 0)).toBe(true);
  });

  it('error messages say what failed and what to do', () => {
    try {
      new PageBitmap(10).set(10);
      expect.unreachable();
    } catch (e) {
      expect(isBitmapError(e)).toBe(true);
      expect((e as Error).message).toMatch(/page index 10 is outside the bitmap of 10 pages/);
      expect((e as Error).message).toMatch(/valid indexes are \[0, 10\)/);
    }
  });
});

describe('ranges', () => {
  it('setRange/clearRange cover partial, single-word and multi-word ranges', () => {
    const b = new PageBitmap(300);
    b.setRange(5, 290);
    expect(b.popcount()).toBe(285);
    expect(b.test(4)).toBe(false);
    expect(b.test(5)).toBe(true);
    expect(b.test(289)).toBe(true);
    expect(b.test(290)).toBe(false);
    b.clearRange(32, 64);
    expect(b.popcountRange(32, 64)).toBe(0);
    expect(b.popcountRange(0, 300)).toBe(285 - 32);
    b.clearRange(7, 9);
    expect(collectRuns(b)).toEqual([
      [5, 2],
      [9, 23],
      [64, 226],
    ]);
  });

  it('accepts empty ranges and rejects inverted or out-of-bounds ones', () => {
    const b = new PageBitmap(64);
    b.setRange(10, 10);
    b.setRange(64, 64);
    expect(b.isEmpty()).toBe(true);
    expect(b.popcountRange(3, 3)).toBe(0);
    for (const [s, e] of [
      [5, 4],
      [0, 65],
      [-1, 3],
      [1.5, 3],
    ] as const) {
      expectBitmapError(() => b.setRange(s, e), 'BITMAP_OUT_OF_RANGE');
      expectBitmapError(() => b.clearRange(s, e), 'BITMAP_OUT_OF_RANGE');
      expectBitmapError(() => b.popcountRange(s, e), 'BITMAP_OUT_OF_RANGE');
    }
  });

  it('setAll keeps bits beyond the size clear', () => {
    for (const size of SIZES) {
      const b = new PageBitmap(size);
      b.setAll();
      expect(b.popcount()).toBe(size);
      expect(b.findNextClear(0)).toBe(-1);
      b.clearAll();
      expect(b.isEmpty()).toBe(true);
    }
  });
});

describe('search', () => {
  it('findNextSet skips zero words and finds bits at word edges', () => {
    const b = PageBitmap.fromIndices(200, [0, 31, 32, 63, 64, 199]);
    const seen: number[] = [];
    for (let i = b.findNextSet(0); i >= 0; i = b.findNextSet(i + 1)) seen.push(i);
    expect(seen).toEqual([0, 31, 32, 63, 64, 199]);
    expect(b.findNextSet(65)).toBe(199);
    expect(b.findNextSet(200)).toBe(-1);
    expect(b.findNextSet(2 ** 40)).toBe(-1);
    expect(new PageBitmap(0).findNextSet(0)).toBe(-1);
  });

  it('findNextClear skips full words and never returns an index >= size', () => {
    const b = new PageBitmap(130);
    b.setAll();
    b.clear(64);
    expect(b.findNextClear(0)).toBe(64);
    expect(b.findNextClear(65)).toBe(-1);
    b.clear(129);
    expect(b.findNextClear(65)).toBe(129);
    expect(new PageBitmap(1).findNextClear(0)).toBe(0);
    expect(new PageBitmap(0).findNextClear(0)).toBe(-1);
  });

  it('findNext* reject negative or fractional starts', () => {
    const b = new PageBitmap(10);
    for (const bad of [-1, 0.5, NaN, -Infinity]) {
      expectBitmapError(() => b.findNextSet(bad), 'BITMAP_OUT_OF_RANGE');
      expectBitmapError(() => b.findNextClear(bad), 'BITMAP_OUT_OF_RANGE');
    }
  });
});

describe('runs', () => {
  it('forEachRun visits maximal runs, clipped to the window, and can stop early', () => {
    const b = new PageBitmap(100);
    b.setRange(0, 3);
    b.setRange(30, 70);
    b.set(99);
    expect(collectRuns(b)).toEqual([
      [0, 3],
      [30, 40],
      [99, 1],
    ]);
    expect(collectRuns(b, 1, 50)).toEqual([
      [1, 2],
      [30, 20],
    ]);
    const first: number[] = [];
    const visited = b.forEachRun((s) => {
      first.push(s);
      return false;
    });
    expect(first).toEqual([0]);
    expect(visited).toBe(1);
  });

  it('RunCursor walks the same runs and can be reset and reused', () => {
    const b = PageBitmap.fromIndices(70, [0, 1, 2, 40, 63, 64, 69]);
    const c = b.runCursor();
    const pass = (): number[][] => {
      const out: number[][] = [];
      while (c.next()) out.push([c.start, c.length]);
      return out;
    };
    expect(pass()).toEqual(collectRuns(b));
    expect(c.next()).toBe(false);
    expect([c.start, c.length]).toEqual([0, 0]);
    c.reset(41, 69);
    expect(pass()).toEqual([[63, 2]]);
    expect(() => new RunCursor(b, 3, 71)).toThrow(BitmapError);
    const other = PageBitmap.fromIndices(10, [4, 5]);
    expect(c.over(other).bitmap).toBe(other);
    expect(pass()).toEqual([[4, 2]]);
    expectBitmapError(() => c.over(b, 0, 71), 'BITMAP_OUT_OF_RANGE');
    expect(c.bitmap).toBe(other);
  });

  it('handles a full bitmap as a single run and the empty bitmap as none', () => {
    const b = new PageBitmap(129);
    b.setAll();
    expect(collectRuns(b)).toEqual([[0, 129]]);
    expect(collectRuns(new PageBitmap(0))).toEqual([]);
  });

  it('forEachSet visits every set bit in order, including bit 31 of a word', () => {
    const idx = [0, 5, 31, 32, 62, 63, 64, 127];
    expect(PageBitmap.fromIndices(128, idx).toIndices()).toEqual(idx);
  });
});

describe('whole-bitmap operations', () => {
  it('or, andNot, copyFrom, clone and equals', () => {
    const a = PageBitmap.fromIndices(70, [1, 33, 69]);
    const b = PageBitmap.fromIndices(70, [2, 33]);
    a.or(b);
    expect(a.toIndices()).toEqual([1, 2, 33, 69]);
    a.andNot(PageBitmap.fromIndices(70, [33, 69]));
    expect(a.toIndices()).toEqual([1, 2]);
    const c = a.clone();
    expect(c.equals(a)).toBe(true);
    c.set(3);
    expect(c.equals(a)).toBe(false);
    a.copyFrom(c);
    expect(a.equals(c)).toBe(true);
    expect(a.equals(new PageBitmap(71))).toBe(false);
  });

  it('size mismatches throw BITMAP_SIZE_MISMATCH', () => {
    const a = new PageBitmap(64);
    const b = new PageBitmap(65);
    expectBitmapError(() => a.or(b), 'BITMAP_SIZE_MISMATCH');
    expectBitmapError(() => a.andNot(b), 'BITMAP_SIZE_MISMATCH');
    expectBitmapError(() => a.copyFrom(b), 'BITMAP_SIZE_MISMATCH');
  });

  it('words64 is a 64-bit view of the same memory', () => {
    const b = PageBitmap.fromIndices(130, [0, 63, 64, 129]);
    const w = b.words64();
    expect(w.length).toBe(3);
    expect(w[0]).toBe((1n << 63n) | 1n);
    expect(w[1]).toBe(1n);
    expect(w[2]).toBe(2n);
  });
});
