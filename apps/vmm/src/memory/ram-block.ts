import { CODE_SLOT_INTS } from './code-pages.js';
import { MemoryError } from './errors.js';
import { PAGE_SHIFT, PAGE_SIZE, bitmapWords, setPageBits } from './pages.js';

/** Describes one RAM block of a VM's physical address space. */
export interface RamBlockOptions {
  /** Block id, unique within the VM (e.g. `ram0`). */
  readonly id: string;
  /** Guest-physical base address; page-aligned. */
  readonly guestBase: number;
  /** Size in bytes; a multiple of 4 KiB, at least one page. */
  readonly size: number;
  /** Backing memory (e.g. a libs/shm mapping); allocated zeroed when omitted. At least `size` bytes. */
  readonly bytes?: ArrayBuffer | SharedArrayBuffer;
  /** Dirty bitmap words (one bit per page, LSB first); allocated when omitted. */
  readonly dirty?: Uint32Array;
  /** "Written since boot" bitmap words; pages never written are known to be zero. Allocated when omitted. */
  readonly touched?: Uint32Array;
  /**
   * Per-page tables made ahead of time ({@link makePageTables}, at least one entry per page,
   * never used before): building them costs ≈13 ms per table at 2 GiB, which a spare vCPU
   * thread pays while it waits rather than when a VM arrives.
   */
  readonly tables?: PageTables;
}

/** The decode-cache and translation tables of a block, one entry per page. */
export interface PageTables {
  readonly codePages: (Int32Array | undefined)[];
  readonly translated: unknown[];
}

/** Fresh per-page tables for up to `pages` pages (all entries undefined). */
export function makePageTables(pages: number): PageTables {
  return {
    codePages: new Array<Int32Array | undefined>(pages).fill(undefined),
    translated: new Array<unknown>(pages).fill(undefined),
  };
}

/**
 * One contiguous RAM block with typed-array views, its dirty and touched page bitmaps, and
 * the decode-cache page table of the code it holds (see `code-pages.ts`).
 *
 * Every write that does not go through the CPU's inlined fast path must call
 * {@link RamBlock.noteWrite} (the address space's host-side writers do).
 */
export class RamBlock {
  readonly id: string;
  /** Guest-physical base as an unsigned number. */
  readonly guestBase: number;
  readonly size: number;
  readonly pages: number;
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  readonly u8: Uint8Array;
  readonly i8: Int8Array;
  readonly u16: Uint16Array;
  readonly i16: Int16Array;
  readonly i32: Int32Array;
  readonly view: DataView;
  /** Dirty bits as handed in by the owner; swap with {@link RamBlock.swapDirty}. */
  dirtyWords: Uint32Array;
  /** Int32 view of {@link RamBlock.dirtyWords} used by hot paths. */
  dirty: Int32Array;
  readonly touchedWords: Uint32Array;
  /** Int32 view of {@link RamBlock.touchedWords}. */
  readonly touched: Int32Array;
  /** Decode-cache pages by page index (owned by the CPU, invalidated here). */
  readonly codePages: (Int32Array | undefined)[];
  /** One bit per page that has a decode-cache page. */
  readonly codeBits: Int32Array;
  /** Pages with a decode-cache page (bits set in {@link RamBlock.codeBits}). */
  codePageCount = 0;
  /**
   * Translated code per page (owned by the CPU's translator: a function, or null when the
   * page had nothing to translate). Dropped whenever a decoded instruction of the page changes.
   */
  readonly translated: unknown[];
  /** Per-page entry counter the translator uses to find hot pages. */
  readonly heat: Uint8Array;

  constructor(opts: RamBlockOptions) {
    const { id, guestBase, size } = opts;
    if (!Number.isInteger(size) || size < PAGE_SIZE || size % PAGE_SIZE !== 0) {
      throw new MemoryError(
        'bad-block',
        `RAM block ${id}: size ${size} is not a positive multiple of 4 KiB`,
      );
    }
    if (!Number.isInteger(guestBase) || guestBase < 0 || guestBase % PAGE_SIZE !== 0) {
      throw new MemoryError(
        'bad-block',
        `RAM block ${id}: base 0x${guestBase.toString(16)} is not page-aligned`,
      );
    }
    if (guestBase + size > 2 ** 32) {
      throw new MemoryError('bad-block', `RAM block ${id}: it ends past the 32-bit address space`);
    }
    if (size > 2 ** 31) {
      throw new MemoryError('bad-block', `RAM block ${id}: size ${size} is over the 2 GiB limit`);
    }
    const buffer = opts.bytes ?? new ArrayBuffer(size);
    if (buffer.byteLength < size) {
      throw new MemoryError(
        'bad-block',
        `RAM block ${id}: backing buffer holds ${buffer.byteLength} bytes, needs ${size}`,
      );
    }
    this.id = id;
    this.guestBase = guestBase;
    this.size = size;
    this.pages = size >>> PAGE_SHIFT;
    this.buffer = buffer;
    this.u8 = new Uint8Array(buffer, 0, size);
    this.i8 = new Int8Array(buffer, 0, size);
    this.u16 = new Uint16Array(buffer, 0, size >>> 1);
    this.i16 = new Int16Array(buffer, 0, size >>> 1);
    this.i32 = new Int32Array(buffer, 0, size >>> 2);
    this.view = new DataView(buffer, 0, size);
    const words = bitmapWords(this.pages);
    this.dirtyWords = checkWords(id, 'dirty', opts.dirty ?? new Uint32Array(words), words);
    this.dirty = int32View(this.dirtyWords);
    this.touchedWords = checkWords(id, 'touched', opts.touched ?? new Uint32Array(words), words);
    this.touched = int32View(this.touchedWords);
    const tables =
      opts.tables !== undefined && opts.tables.codePages.length >= this.pages
        ? opts.tables
        : makePageTables(this.pages);
    this.codePages = tables.codePages;
    this.codeBits = new Int32Array(words);
    this.translated = tables.translated;
    this.heat = new Uint8Array(this.pages);
  }

  /** True when the guest-physical range `[addr, addr+len)` lies inside this block. */
  contains(addr: number, len = 1): boolean {
    const off = addr - this.guestBase;
    return off >= 0 && off + len <= this.size;
  }

  /**
   * Records a write of `len` bytes at block offset `off` made outside the CPU fast path:
   * marks pages dirty and touched and invalidates decoded instructions there.
   */
  noteWrite(off: number, len: number): void {
    if (len <= 0) return;
    const first = off >>> PAGE_SHIFT;
    const last = (off + len - 1) >>> PAGE_SHIFT;
    setPageBits(this.dirty, first, last);
    setPageBits(this.touched, first, last);
    this.invalidateCode(off, len);
  }

  /** Forgets decoded instructions overlapping block bytes `[off, off+len)`. */
  invalidateCode(off: number, len: number): void {
    const firstPage = off >>> PAGE_SHIFT;
    const lastPage = (off + len - 1) >>> PAGE_SHIFT;
    for (let p = firstPage; p <= lastPage; p++) {
      if ((this.codeBits[p >>> 5]! & (1 << (p & 31))) === 0) continue;
      const page = this.codePages[p]!;
      const pageStart = p << PAGE_SHIFT;
      const from = Math.max(off, pageStart) - pageStart;
      const to = Math.min(off + len, pageStart + PAGE_SIZE) - pageStart;
      let changed = false;
      for (let s = from >>> 2; s << 2 < to; s++) {
        if (page[s * CODE_SLOT_INTS] !== 0) {
          page[s * CODE_SLOT_INTS] = 0;
          changed = true;
        }
      }
      if (changed) this.translated[p] = undefined;
    }
  }

  /**
   * Drops every decoded instruction of this block (fence.i, restore). Walks only the pages that
   * have a decode page (a translation exists only for those), so its cost follows the code the
   * guest ran, not the RAM size: a restore into a fresh machine costs nothing here.
   */
  flushCode(): void {
    if (this.codePageCount === 0) return;
    const bits = this.codeBits;
    for (let w = 0; w < bits.length; w++) {
      let word = bits[w]!;
      while (word !== 0) {
        const low = word & -word;
        const p = (w << 5) | (31 - Math.clz32(low));
        word ^= low;
        const page = this.codePages[p]!;
        page.fill(0, 0, page.length - CODE_SLOT_INTS);
        this.translated[p] = undefined;
      }
    }
  }

  /**
   * Installs `fresh` (cleared by the caller) as the dirty bitmap and returns the previous one:
   * harvesting by swapping two buffers. Call only between CPU `run()` slices.
   */
  swapDirty(fresh: Uint32Array): Uint32Array {
    checkWords(this.id, 'dirty', fresh, this.dirtyWords.length);
    const old = this.dirtyWords;
    this.dirtyWords = fresh;
    this.dirty = int32View(fresh);
    return old;
  }
}

function checkWords(id: string, what: string, words: Uint32Array, need: number): Uint32Array {
  if (words.length < need) {
    throw new MemoryError(
      'bad-block',
      `RAM block ${id}: ${what} bitmap has ${words.length} words, needs ${need}`,
    );
  }
  return words;
}

function int32View(words: Uint32Array): Int32Array {
  return new Int32Array(words.buffer, words.byteOffset, words.length);
}
