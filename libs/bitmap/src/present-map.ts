/**
 * The present map of a lazily filled region: which of its pages have arrived.
 *
 * memstore writes it (one writer, the process filling the region) and every vmm that maps the
 * region reads it, through a file both map shared (`<region file>.present` on tmpfs). A vCPU
 * tests a page's bit before it touches a lazy page; a clear bit means "not here yet", never
 * "zero".
 *
 * Layout (little-endian, 32-bit words, version 1.0):
 *
 * | word | field |
 * |---|---|
 * | 0 | magic `0x50524553` ("PRES") |
 * | 1 | version: major << 16 \| minor |
 * | 2 | page count |
 * | 3 | state ({@link PresentState}) |
 * | 4 | present pages (a count the writer keeps; readers use it for progress only) |
 * | 5 | fill sequence: incremented after every batch of bits set (readers may wait on it) |
 * | 6–15 | reserved, zero |
 * | 16… | the bits: page p is bit `p & 31` of word `16 + (p >>> 5)` |
 *
 * Ordering contract: the writer stores a page's bytes into the region file first, then sets its
 * bit with an atomic OR, then bumps the fill sequence. A reader that sees the bit set (atomic
 * load) sees the page's bytes. Bits are only ever set, never cleared; once `state` is
 * {@link PresentState.Complete} every bit is set and the map may be unmapped.
 */
import { BitmapError } from './errors.js';

/** "PRES". */
export const PRESENT_MAGIC = 0x50524553;
export const PRESENT_VERSION_MAJOR = 1;
export const PRESENT_VERSION_MINOR = 0;
/** Header words before the bits. */
export const PRESENT_HEADER_WORDS = 16;

const W_MAGIC = 0;
const W_VERSION = 1;
const W_PAGES = 2;
const W_STATE = 3;
const W_PRESENT = 4;
const W_SEQUENCE = 5;

/** Where a lazy region's fill stands (word 3). */
export const PresentState = {
  /** Created; nothing is fetched until the fill starts (the source VM still runs). */
  Waiting: 0,
  /** Pages are arriving: on demand first, the rest in the background. */
  Filling: 1,
  /** The source stopped answering (its memstore died, the link broke): faults wait for a recover. */
  SourcePaused: 2,
  /** Every page is here: the region is an ordinary region now. */
  Complete: 3,
  /** Given up for good (the region was deleted or its source lost the pages). */
  Failed: 4,
} as const;
/** One of {@link PresentState}'s values. */
export type PresentState = (typeof PresentState)[keyof typeof PresentState];

/** Bytes of a present map for `pages` pages (header plus bits, rounded up to 64 bytes). */
export function presentMapBytes(pages: number): number {
  if (!Number.isSafeInteger(pages) || pages <= 0 || pages > 0x8000000) {
    throw new BitmapError(
      'BITMAP_INVALID_ARGUMENT',
      `a present map holds 1 to 2^27 pages, not ${pages}`,
    );
  }
  const bytes = (PRESENT_HEADER_WORDS + Math.ceil(pages / 32)) * 4;
  return Math.ceil(bytes / 64) * 64;
}

/**
 * A view of a present map in shared memory. The writer (memstore) uses {@link initialize},
 * {@link markPresent} and {@link setState}; readers use {@link isPresent}, {@link state} and
 * {@link presentPages}. Safe across threads and processes: every field is read and written with
 * `Atomics`.
 */
export class PresentMap {
  /** The whole map as words; bits start at {@link PRESENT_HEADER_WORDS}. */
  readonly words: Int32Array;
  /** Pages the map covers. */
  readonly pages: number;

  private constructor(words: Int32Array, pages: number) {
    this.words = words;
    this.pages = pages;
  }

  /**
   * Writes a fresh header (state Waiting, no page present) over `buffer` for `pages` pages and
   * returns its view. `buffer` must hold at least {@link presentMapBytes}(pages) bytes.
   */
  static initialize(buffer: ArrayBufferLike, pages: number): PresentMap {
    const bytes = presentMapBytes(pages);
    if (buffer.byteLength < bytes) {
      throw new BitmapError(
        'BITMAP_INVALID_ARGUMENT',
        `a present map of ${pages} pages needs ${bytes} bytes; the buffer has ${buffer.byteLength}`,
      );
    }
    const words = new Int32Array(buffer, 0, bytes / 4);
    words.fill(0);
    words[W_MAGIC] = PRESENT_MAGIC;
    words[W_VERSION] = (PRESENT_VERSION_MAJOR << 16) | PRESENT_VERSION_MINOR;
    words[W_PAGES] = pages;
    Atomics.store(words, W_STATE, PresentState.Waiting);
    return new PresentMap(words, pages);
  }

  /**
   * Opens a map another process wrote. The file is hostile: the magic, the major version, the
   * page count (must be `expectedPages`) and the length are checked.
   */
  static open(buffer: ArrayBufferLike, expectedPages: number): PresentMap {
    if (buffer.byteLength < PRESENT_HEADER_WORDS * 4) {
      throw new BitmapError(
        'BITMAP_MALFORMED',
        `a present map of ${buffer.byteLength} bytes is shorter than its header`,
      );
    }
    const header = new Int32Array(buffer, 0, PRESENT_HEADER_WORDS);
    if (header[W_MAGIC] !== PRESENT_MAGIC) {
      throw new BitmapError(
        'BITMAP_MALFORMED',
        "not a present map (bad magic): the file is not a lazy region's map",
      );
    }
    const major = (header[W_VERSION]! >>> 16) & 0xffff;
    if (major !== PRESENT_VERSION_MAJOR) {
      throw new BitmapError(
        'BITMAP_UNSUPPORTED_VERSION',
        `present map version ${major}.x; this build reads ${PRESENT_VERSION_MAJOR}.x: upgrade the vmm`,
      );
    }
    const pages = header[W_PAGES]!;
    if (pages !== expectedPages) {
      throw new BitmapError(
        'BITMAP_SIZE_MISMATCH',
        `the present map covers ${pages} pages; the region has ${expectedPages}`,
      );
    }
    const bytes = presentMapBytes(pages);
    if (buffer.byteLength < bytes) {
      throw new BitmapError(
        'BITMAP_MALFORMED',
        `a present map of ${pages} pages needs ${bytes} bytes; the file has ${buffer.byteLength}`,
      );
    }
    return new PresentMap(new Int32Array(buffer, 0, bytes / 4), pages);
  }

  /** Whether page `page` has arrived (no bounds check: callers pass a page of the region). */
  isPresent(page: number): boolean {
    return (
      (Atomics.load(this.words, PRESENT_HEADER_WORDS + (page >>> 5)) & (1 << (page & 31))) !== 0
    );
  }

  /** Whether every page of `[first, first + count)` has arrived. */
  allPresent(first: number, count: number): boolean {
    for (let p = first; p < first + count; p++) if (!this.isPresent(p)) return false;
    return true;
  }

  /** The fill's state. */
  get state(): PresentState {
    return Atomics.load(this.words, W_STATE) as PresentState;
  }

  /** Pages the writer counted as present. */
  get presentPages(): number {
    return Atomics.load(this.words, W_PRESENT) >>> 0;
  }

  /** The fill sequence (word 5): changes after every batch the writer marked. */
  get sequence(): number {
    return Atomics.load(this.words, W_SEQUENCE);
  }

  /** Word index of the fill sequence, for a futex wait on it. */
  static readonly SEQUENCE_WORD = W_SEQUENCE;

  /**
   * Writer: marks `[first, first + count)` present (after their bytes are in the file) and
   * bumps the sequence. Returns how many of them were not present before.
   */
  markPresent(first: number, count: number): number {
    if (first < 0 || count < 0 || first + count > this.pages) {
      throw new BitmapError(
        'BITMAP_OUT_OF_RANGE',
        `pages ${first}+${count} lie outside a map of ${this.pages}`,
      );
    }
    let added = 0;
    let p = first;
    const end = first + count;
    while (p < end) {
      const w = p >>> 5;
      const lo = p & 31;
      const n = Math.min(32 - lo, end - p);
      const mask = n === 32 ? -1 : ((1 << n) - 1) << lo;
      const before = Atomics.or(this.words, PRESENT_HEADER_WORDS + w, mask);
      added += popcount(mask & ~before);
      p += n;
    }
    if (added > 0) Atomics.add(this.words, W_PRESENT, added);
    Atomics.add(this.words, W_SEQUENCE, 1);
    return added;
  }

  /** Writer: sets the state and bumps the sequence (so waiters look again). */
  setState(state: PresentState): void {
    Atomics.store(this.words, W_STATE, state);
    Atomics.add(this.words, W_SEQUENCE, 1);
  }

  /** The first page at or after `from` that has not arrived, or -1. */
  nextMissing(from: number): number {
    for (let p = from; p < this.pages;) {
      const w = Atomics.load(this.words, PRESENT_HEADER_WORDS + (p >>> 5));
      if (w === -1 && (p & 31) === 0) {
        p += 32;
        continue;
      }
      if ((w & (1 << (p & 31))) === 0) return p;
      p++;
    }
    return -1;
  }
}

function popcount(v: number): number {
  v = v - ((v >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}
