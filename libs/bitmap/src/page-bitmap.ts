import {
  BitmapError,
  describe,
  throwFrom,
  throwIndex,
  throwRange,
  throwSizeMismatch,
} from './errors.js';
import {
  FULL,
  MAX_BITS,
  checkBitCount,
  clearRangeWords,
  hasTailBits,
  nextClear,
  nextSet,
  popcount32,
  popcountRangeWords,
  setRangeWords,
  wordCount32,
} from './words.js';

export { MAX_BITS };

/**
 * Where a {@link PageBitmap} keeps its words when the caller provides the memory, e.g. a
 * `SharedArrayBuffer` that a vCPU worker also maps.
 */
export interface PageBitmapStorage {
  /** Backing memory; at least {@link PageBitmap.byteLengthFor}(bits) bytes after `byteOffset`. */
  readonly buffer: ArrayBufferLike;
  /** Byte offset of the first word; a multiple of 8 (default 0). */
  readonly byteOffset?: number;
}

/**
 * Called once per run of consecutive set bits by {@link PageBitmap.forEachRun}.
 * Return `false` to stop early; any other return value continues.
 */
export type RunCallback = (start: number, length: number) => boolean | void;

/**
 * A fixed-size bitmap with one bit per page, stored LSB-first in 32-bit words.
 *
 * Layout: bit `i` is bit `i & 31` of `words[i >>> 5]`; the word count is always even, so words
 * `2k` and `2k + 1` are the low and high halves of 64-bit word `k` (see {@link PageBitmap.words64}
 * and the wire form in `wire.ts`).
 *
 * Invariant: bits at or beyond {@link PageBitmap.size} are always zero. Every method keeps it, and
 * constructing over caller memory checks it.
 *
 * Checking: every public method validates its arguments and throws {@link BitmapError}
 * (`BITMAP_OUT_OF_RANGE` for indexes/ranges, `BITMAP_SIZE_MISMATCH` for mismatched bitmaps).
 * The check on `set`/`clear`/`test` is one integer comparison (measured in `bitmap.bench.ts`);
 * there is no unchecked public variant.
 *
 * Concurrency: methods use plain (non-atomic) reads and writes. Over a `SharedArrayBuffer` they
 * are only safe when one thread owns the bitmap at a time; for a concurrent writer use
 * {@link AtomicDirtyLog} or {@link EpochDirtyLog}.
 *
 * Allocation: `set`, `clear`, `test`, range operations, `findNext*`, `popcount*`, `forEachRun`,
 * {@link RunCursor.next}, `or`, `andNot`, `copyFrom`, `equals`, `clearAll` and `setAll`
 * allocate nothing.
 */
export class PageBitmap {
  /** Number of bits (pages). Valid indexes are `[0, size)`. */
  readonly size: number;
  /**
   * The storage words (length {@link PageBitmap.wordCountFor}(size), always even). Exposed for
   * zero-copy I/O and for the dirty logs; writers must keep bits beyond `size` zero.
   */
  readonly words: Uint32Array;
  /**
   * The same memory as {@link PageBitmap.words}, viewed as `Int32Array`: what the hot paths use,
   * and what `Atomics` operations need. Same rules as `words`.
   */
  readonly cells: Int32Array;

  /**
   * Create a bitmap of `bits` zero bits, or adopt existing words in caller-provided memory.
   *
   * @param bits - number of pages, integer in `[0, MAX_BITS]`
   * @param storage - optional backing memory; its contents are adopted as-is (not cleared)
   * @throws BitmapError `BITMAP_INVALID_ARGUMENT` for a bad size, a misaligned or short buffer;
   *   `BITMAP_MALFORMED` if adopted memory has bits set beyond `bits`
   */
  constructor(bits: number, storage?: PageBitmapStorage) {
    this.size = checkBitCount('PageBitmap', bits);
    const count = wordCount32(bits);
    if (storage === undefined) {
      this.words = new Uint32Array(count);
      this.cells = new Int32Array(this.words.buffer, 0, count);
      return;
    }
    const buffer: unknown = storage.buffer;
    const byteOffset = storage.byteOffset ?? 0;
    if (!(buffer instanceof ArrayBuffer || isSharedArrayBuffer(buffer))) {
      throw new BitmapError(
        'BITMAP_INVALID_ARGUMENT',
        `PageBitmap: storage.buffer is ${describe(buffer)}, not an ArrayBuffer or SharedArrayBuffer; ` +
          `pass the buffer itself, not a typed-array view.`,
      );
    }
    if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset % 8 !== 0) {
      throw new BitmapError(
        'BITMAP_INVALID_ARGUMENT',
        `PageBitmap: storage.byteOffset ${describe(byteOffset)} must be a non-negative multiple of 8 ` +
          `(64-bit word alignment).`,
      );
    }
    const need = count * 4;
    if (buffer.byteLength - byteOffset < need) {
      throw new BitmapError(
        'BITMAP_INVALID_ARGUMENT',
        `PageBitmap: storage has ${Math.max(0, buffer.byteLength - byteOffset)} bytes after offset ` +
          `${byteOffset} but ${bits} bits need ${need}; size the buffer with PageBitmap.byteLengthFor(${bits}).`,
      );
    }
    this.words = new Uint32Array(buffer, byteOffset, count);
    this.cells = new Int32Array(buffer, byteOffset, count);
    if (hasTailBits(this.cells, bits)) {
      throw new BitmapError(
        'BITMAP_MALFORMED',
        `PageBitmap: the adopted storage has bits set at or beyond bit ${bits}; ` +
          `clear the buffer or pass the bit count it was written with.`,
      );
    }
  }

  /** Bytes of storage a bitmap of `bits` bits needs (a multiple of 8). */
  static byteLengthFor(bits: number): number {
    return wordCount32(checkBitCount('PageBitmap.byteLengthFor', bits)) * 4;
  }

  /** Number of 32-bit storage words for `bits` bits (always even). */
  static wordCountFor(bits: number): number {
    return wordCount32(checkBitCount('PageBitmap.wordCountFor', bits));
  }

  /**
   * A new bitmap of `bits` bits with the listed indexes set (convenience for tests and setup).
   *
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` for any index outside `[0, bits)`
   */
  static fromIndices(bits: number, indexes: Iterable<number>): PageBitmap {
    const b = new PageBitmap(bits);
    for (const i of indexes) b.set(i);
    return b;
  }

  // ---- single bits ---------------------------------------------------------------------------

  /** Set bit `index`. @throws BitmapError `BITMAP_OUT_OF_RANGE` */
  set(index: number): void {
    if (!(index >>> 0 === index && index < this.size))
      throwIndex('PageBitmap.set', index, this.size);
    const w = index >>> 5;
    this.cells[w] = this.cells[w]! | (1 << (index & 31));
  }

  /** Clear bit `index`. @throws BitmapError `BITMAP_OUT_OF_RANGE` */
  clear(index: number): void {
    if (!(index >>> 0 === index && index < this.size))
      throwIndex('PageBitmap.clear', index, this.size);
    const w = index >>> 5;
    this.cells[w] = this.cells[w]! & ~(1 << (index & 31));
  }

  /** Whether bit `index` is set. @throws BitmapError `BITMAP_OUT_OF_RANGE` */
  test(index: number): boolean {
    if (!(index >>> 0 === index && index < this.size))
      throwIndex('PageBitmap.test', index, this.size);
    return (this.cells[index >>> 5]! & (1 << (index & 31))) !== 0;
  }

  /**
   * Set or clear bit `index` and report whether it was set before.
   *
   * @throws BitmapError `BITMAP_OUT_OF_RANGE`
   */
  testAndAssign(index: number, value: boolean): boolean {
    if (!(index >>> 0 === index && index < this.size))
      throwIndex('PageBitmap.testAndAssign', index, this.size);
    const w = index >>> 5;
    const bit = 1 << (index & 31);
    const old = this.cells[w]!;
    this.cells[w] = value ? old | bit : old & ~bit;
    return (old & bit) !== 0;
  }

  // ---- ranges --------------------------------------------------------------------------------

  /**
   * Set every bit in the half-open range `[start, end)`; whole words in the middle are filled at
   * once. An empty range is a no-op.
   *
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` unless `0 <= start <= end <= size`
   */
  setRange(start: number, end: number): void {
    this.checkRange('PageBitmap.setRange', start, end);
    if (start < end) setRangeWords(this.cells, start, end);
  }

  /**
   * Clear every bit in `[start, end)`.
   *
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` unless `0 <= start <= end <= size`
   */
  clearRange(start: number, end: number): void {
    this.checkRange('PageBitmap.clearRange', start, end);
    if (start < end) clearRangeWords(this.cells, start, end);
  }

  /** Clear every bit. */
  clearAll(): void {
    this.cells.fill(0);
  }

  /** Set every bit in `[0, size)` (bits beyond `size` stay zero). */
  setAll(): void {
    if (this.size === 0) return;
    this.cells.fill(FULL);
    if (this.cells.length * 32 !== this.size)
      clearRangeWords(this.cells, this.size, this.cells.length * 32);
  }

  // ---- search --------------------------------------------------------------------------------

  /**
   * Index of the first set bit at or after `from`, or -1 if there is none. Zero words are skipped
   * a word at a time; the bit inside a word is found with `Math.clz32`.
   *
   * @param from - non-negative integer; values `>= size` return -1 (so `i + 1` after a hit is
   *   always a valid next start)
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` if `from` is negative or not an integer
   */
  findNextSet(from: number): number {
    if (!(from >>> 0 === from)) return this.farFrom('PageBitmap.findNextSet', from);
    if (from >= this.size) return -1;
    return nextSet(this.cells, from);
  }

  /**
   * Index of the first clear bit at or after `from` and below `size`, or -1. Full words are
   * skipped a word at a time.
   *
   * @param from - non-negative integer; values `>= size` return -1
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` if `from` is negative or not an integer
   */
  findNextClear(from: number): number {
    if (!(from >>> 0 === from)) return this.farFrom('PageBitmap.findNextClear', from);
    if (from >= this.size) return -1;
    return nextClear(this.cells, from, this.size);
  }

  /** Whether no bit is set. Stops at the first non-zero word. */
  isEmpty(): boolean {
    const words = this.cells;
    for (let w = 0; w < words.length; w++) if (words[w] !== 0) return false;
    return true;
  }

  // ---- counting ------------------------------------------------------------------------------

  /** Number of set bits. */
  popcount(): number {
    const words = this.cells;
    let c = 0;
    for (let w = 0; w < words.length; w++) c += popcount32(words[w]!);
    return c;
  }

  /**
   * Number of set bits in `[start, end)`.
   *
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` unless `0 <= start <= end <= size`
   */
  popcountRange(start: number, end: number): number {
    this.checkRange('PageBitmap.popcountRange', start, end);
    return start < end ? popcountRangeWords(this.cells, start, end) : 0;
  }

  // ---- iteration -----------------------------------------------------------------------------

  /**
   * Call `fn(start, length)` for each maximal run of set bits inside `[start, end)` (runs are
   * clipped to the range), in ascending order. Allocates nothing per run. Return `false` from
   * `fn` to stop. The bitmap must not be modified by `fn` except at bits already visited.
   *
   * @returns the number of runs visited
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` for a bad range
   */
  forEachRun(fn: RunCallback, start = 0, end: number = this.size): number {
    this.checkRange('PageBitmap.forEachRun', start, end);
    const words = this.cells;
    const size = this.size;
    let runs = 0;
    let pos = start;
    while (pos < end) {
      const s = nextSet(words, pos);
      if (s < 0 || s >= end) break;
      let e = nextClear(words, s, size);
      if (e < 0 || e > end) e = end;
      runs++;
      if (fn(s, e - s) === false) break;
      pos = e;
    }
    return runs;
  }

  /**
   * Call `fn(index)` for every set bit in ascending order (word at a time, lowest set bit first).
   * Allocates nothing per bit. The bitmap must not be modified by `fn`.
   *
   * @returns the number of bits visited
   */
  forEachSet(fn: (index: number) => void): number {
    const words = this.cells;
    let n = 0;
    for (let w = 0; w < words.length; w++) {
      let v = words[w]!;
      while (v !== 0) {
        const t = v & -v;
        fn((w << 5) + 31 - Math.clz32(t));
        v ^= t;
        n++;
      }
    }
    return n;
  }

  /**
   * A reusable cursor over runs of set bits; see {@link RunCursor}. Create it once and
   * {@link RunCursor.reset} it for each pass to avoid allocation.
   */
  runCursor(start = 0, end: number = this.size): RunCursor {
    return new RunCursor(this, start, end);
  }

  // ---- whole-bitmap operations ---------------------------------------------------------------

  /**
   * OR `other` into this bitmap (`this |= other`).
   *
   * @throws BitmapError `BITMAP_SIZE_MISMATCH` if sizes differ
   */
  or(other: PageBitmap): void {
    if (other.size !== this.size) throwSizeMismatch('PageBitmap.or', this.size, other.size);
    const a = this.cells;
    const b = other.cells;
    for (let w = 0; w < a.length; w++) {
      const v = b[w]!;
      if (v !== 0) a[w] = a[w]! | v;
    }
  }

  /**
   * Clear every bit that is set in `other` (`this &= ~other`), e.g. drop pages already sent.
   *
   * @throws BitmapError `BITMAP_SIZE_MISMATCH` if sizes differ
   */
  andNot(other: PageBitmap): void {
    if (other.size !== this.size) throwSizeMismatch('PageBitmap.andNot', this.size, other.size);
    const a = this.cells;
    const b = other.cells;
    for (let w = 0; w < a.length; w++) {
      const v = b[w]!;
      if (v !== 0) a[w] = a[w]! & ~v;
    }
  }

  /**
   * Overwrite this bitmap with the contents of `other`.
   *
   * @throws BitmapError `BITMAP_SIZE_MISMATCH` if sizes differ
   */
  copyFrom(other: PageBitmap): void {
    if (other.size !== this.size) throwSizeMismatch('PageBitmap.copyFrom', this.size, other.size);
    if (other.cells !== this.cells) this.cells.set(other.cells);
  }

  /** A new, independent bitmap (in a fresh non-shared buffer) with the same size and bits. */
  clone(): PageBitmap {
    const b = new PageBitmap(this.size);
    b.cells.set(this.cells);
    return b;
  }

  /** Whether `other` has the same size and the same bits. Never throws. */
  equals(other: PageBitmap): boolean {
    if (other.size !== this.size) return false;
    const a = this.cells;
    const b = other.cells;
    for (let w = 0; w < a.length; w++) if (a[w] !== b[w]) return false;
    return true;
  }

  /**
   * A 64-bit view of the same memory (`BigUint64Array`, host byte order; word `k` holds bits
   * `64k .. 64k+63`). Allocates a view object; not for hot loops.
   */
  words64(): BigUint64Array {
    return new BigUint64Array(this.words.buffer, this.words.byteOffset, this.words.length >>> 1);
  }

  /** Set indexes as an array (allocates; for tests, logs and small bitmaps). */
  toIndices(): number[] {
    const out: number[] = [];
    this.forEachSet((i) => {
      out.push(i);
    });
    return out;
  }

  // ---- internals -----------------------------------------------------------------------------

  private checkRange(op: string, start: number, end: number): void {
    if (!(start >>> 0 === start && end >>> 0 === end && start <= end && end <= this.size))
      throwRange(op, start, end, this.size);
  }

  /** Slow path of findNext*: `from` is not a uint32; either huge (=> -1) or invalid (=> throw). */
  private farFrom(op: string, from: number): number {
    if (Number.isSafeInteger(from) && from >= 0) return -1;
    return throwFrom(op, from);
  }
}

/**
 * Walks the runs of set bits of a {@link PageBitmap} without allocating per run.
 *
 * ```ts
 * const c = bitmap.runCursor();
 * while (c.next()) send(c.start, c.length);
 * c.reset(); // reuse for the next pass
 * ```
 *
 * Runs are maximal within `[start, end)` and clipped to it. The bitmap may change between passes;
 * during a pass, only bits before the current run may change.
 */
export class RunCursor {
  /** First page of the current run (valid after `next()` returned true). */
  start = 0;
  /** Number of pages in the current run (valid after `next()` returned true). */
  length = 0;
  private pos = 0;
  private end = 0;
  private target: PageBitmap;

  /**
   * @param bitmap - the bitmap to walk
   * @param start - first page of the window (default 0)
   * @param end - end of the window, exclusive (default `bitmap.size`)
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` for a bad window
   */
  constructor(bitmap: PageBitmap, start = 0, end: number = bitmap.size) {
    this.target = bitmap;
    this.reset(start, end);
  }

  /** The bitmap being walked (see {@link RunCursor.over}). */
  get bitmap(): PageBitmap {
    return this.target;
  }

  /**
   * Point the cursor at another bitmap (e.g. each new harvest) and rewind it. No allocation.
   *
   * @returns this cursor
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` for a bad window
   */
  over(bitmap: PageBitmap, start = 0, end: number = bitmap.size): this {
    if (!(start >>> 0 === start && end >>> 0 === end && start <= end && end <= bitmap.size))
      throwRange('RunCursor.over', start, end, bitmap.size);
    this.target = bitmap;
    this.reset(start, end);
    return this;
  }

  /**
   * Rewind to the start of a window (default: the whole bitmap).
   *
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` unless `0 <= start <= end <= size`
   */
  reset(start = 0, end: number = this.target.size): void {
    const size = this.target.size;
    if (!(start >>> 0 === start && end >>> 0 === end && start <= end && end <= size))
      throwRange('RunCursor.reset', start, end, size);
    this.pos = start;
    this.end = end;
    this.start = 0;
    this.length = 0;
  }

  /** Advance to the next run; false when there are no more (then `start`/`length` are 0). */
  next(): boolean {
    const end = this.end;
    if (this.pos < end) {
      const words = this.target.cells;
      const s = nextSet(words, this.pos);
      if (s >= 0 && s < end) {
        let e = nextClear(words, s, this.target.size);
        if (e < 0 || e > end) e = end;
        this.start = s;
        this.length = e - s;
        this.pos = e;
        return true;
      }
      this.pos = end;
    }
    this.start = 0;
    this.length = 0;
    return false;
  }
}

/** True for a SharedArrayBuffer (also where the global is absent or from another realm). */
export function isSharedArrayBuffer(value: unknown): value is SharedArrayBuffer {
  return (
    typeof SharedArrayBuffer !== 'undefined' &&
    (value instanceof SharedArrayBuffer ||
      Object.prototype.toString.call(value) === '[object SharedArrayBuffer]')
  );
}
