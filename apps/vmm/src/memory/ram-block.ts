import { PresentState, type PresentMap } from '@handoff/bitmap';
import {
  CODE_CHUNK_PAGES,
  CODE_CHUNK_SHIFT,
  CODE_SLOT_INTS,
  type CodeEntry,
} from './code-pages.js';
import { MemoryError } from './errors.js';
import { PAGE_SHIFT, PAGE_SIZE, bitmapWords, setPageBits } from './pages.js';
import { sharedCodePage } from './shared-code.js';

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
   * Share decoded code pages with the other blocks of this thread that hold the same bytes at
   * the same guest address (`shared-code.ts`); default true. False keeps every page private.
   */
  readonly shareCode?: boolean;
  /**
   * Makes the block **lazy**: its pages arrive over time (post-copy) and this map, over pages
   * of the block, says which are here. Until the map says Complete, no guest access touches a
   * page whose bit is clear (see {@link RamBlock.present}).
   */
  readonly present?: PresentMap;
}

/**
 * One contiguous RAM block with typed-array views, its dirty and touched page bitmaps, and
 * the decode-cache table of the code it holds (see `code-pages.ts`). The code table is sparse:
 * a small directory of chunks of {@link CODE_CHUNK_PAGES} pages, a chunk allocated when a page
 * in it first runs code, so an idle block costs a few hundred bytes whatever its size.
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
  /** One bit per page that has a code entry ({@link RamBlock.code}). */
  readonly codeBits: Int32Array;
  /** Pages with a code entry (bits set in {@link RamBlock.codeBits}). */
  codePageCount = 0;
  /** Whether new code entries attach to shared decoded pages. */
  readonly shareCode: boolean;
  /**
   * The present map while the block is lazy, else undefined. While set, every guest access to
   * the block goes through the address space's slow path, which tests the page's bit first,
   * and nothing of the block is translated; {@link RamBlock.settleLazy} clears it once the map
   * says Complete.
   */
  present: PresentMap | undefined;
  /**
   * Bytes of the block the CPU's inlined fast path may access: {@link RamBlock.size}, or 0
   * while the block is lazy (every access then takes the slow path, which checks presence).
   */
  fastSize: number;
  /**
   * Code entries by chunk (`page >>> CODE_CHUNK_SHIFT`), then by page within the chunk; the
   * directory itself is made when the first page runs code (an idle clone never runs any).
   */
  private codeChunks: ((CodeEntry | undefined)[] | undefined)[] | undefined;

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
    this.codeBits = new Int32Array(words);
    this.shareCode = opts.shareCode ?? true;
    const present = opts.present;
    if (present !== undefined && present.pages !== this.pages) {
      throw new MemoryError(
        'bad-block',
        `RAM block ${id}: the present map covers ${present.pages} pages; the block has ${this.pages}`,
      );
    }
    this.present = present;
    this.fastSize = present === undefined ? size : 0;
    this.settleLazy();
  }

  /**
   * Whether every page of block bytes `[off, off+len)` is here (always true for a block that
   * is not lazy). `len` > 0.
   */
  isPresent(off: number, len: number): boolean {
    const map = this.present;
    if (map === undefined) return true;
    const last = (off + len - 1) >>> PAGE_SHIFT;
    for (let p = off >>> PAGE_SHIFT; p <= last; p++) if (!map.isPresent(p)) return false;
    return true;
  }

  /**
   * The first page of block bytes `[off, off+len)` that is not here, or -1. `len` > 0.
   */
  missingPage(off: number, len: number): number {
    const map = this.present;
    if (map === undefined) return -1;
    const last = (off + len - 1) >>> PAGE_SHIFT;
    for (let p = off >>> PAGE_SHIFT; p <= last; p++) if (!map.isPresent(p)) return p;
    return -1;
  }

  /**
   * A lazy block whose map says Complete becomes an ordinary block: the fast path and the
   * translator take it again. Nothing decoded needs dropping: no page of a lazy block is
   * translated, and decoded slots hold what the (present) bytes said. Call between CPU `run()`
   * slices. True when the block is (now) not lazy.
   */
  settleLazy(): boolean {
    const map = this.present;
    if (map === undefined) return true;
    if (map.state !== PresentState.Complete) return false;
    this.present = undefined;
    this.fastSize = this.size;
    return true;
  }

  /** The code entry of page `p` (block page index), or undefined when the page has run no code. */
  code(p: number): CodeEntry | undefined {
    const chunk = this.codeChunks?.[p >>> CODE_CHUNK_SHIFT];
    return chunk === undefined ? undefined : chunk[p & (CODE_CHUNK_PAGES - 1)];
  }

  /**
   * The code entry of page `p`, made on first use: attached to the thread's shared decoded page
   * for these bytes when sharing is on and one exists (or published as one), else private with
   * slots from `blank()` (a fresh, undecoded code page).
   */
  openCode(p: number, blank: () => Int32Array): CodeEntry {
    const c = p >>> CODE_CHUNK_SHIFT;
    const dir = (this.codeChunks ??= new Array<undefined>(
      (this.pages + CODE_CHUNK_PAGES - 1) >>> CODE_CHUNK_SHIFT,
    ));
    let chunk = dir[c];
    if (chunk === undefined) {
      chunk = new Array<undefined>(CODE_CHUNK_PAGES);
      dir[c] = chunk;
    }
    const k = p & (CODE_CHUNK_PAGES - 1);
    let entry = chunk[k];
    if (entry === undefined) {
      const shared = this.shareCode
        ? sharedCodePage(this.guestBase, this.size, p, this.i32, blank)
        : undefined;
      entry = {
        code: shared?.code ?? blank(),
        shared,
        translated: undefined,
        heat: 0,
      };
      chunk[k] = entry;
      this.codeBits[p >>> 5]! |= 1 << (p & 31);
      this.codePageCount++;
    }
    return entry;
  }

  /**
   * Gives `entry` private slots (a copy of the shared ones, which stay valid for its bytes until
   * it writes them) before anything of its page is written; drops its translation. No-op when
   * already private.
   */
  privatizeCode(entry: CodeEntry): void {
    if (entry.shared === undefined) return;
    entry.code = entry.code.slice();
    entry.shared = undefined;
    entry.translated = undefined;
    entry.heat = 0;
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
      const entry = this.code(p)!;
      this.privatizeCode(entry);
      const page = entry.code;
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
      if (changed) {
        entry.translated = undefined;
        entry.heat = 0;
      }
    }
  }

  /**
   * Drops every decoded instruction of this block (fence.i, restore): private pages are zeroed
   * (kept for reuse), shared ones are let go (the next run attaches again, to these bytes). Walks
   * only the pages that have an entry, so its cost follows the code the guest ran, not the RAM
   * size: a restore into a fresh machine costs nothing here. A CPU holding a page's slots must
   * look its page up again afterwards.
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
        const chunk = this.codeChunks![p >>> CODE_CHUNK_SHIFT]!;
        const entry = chunk[p & (CODE_CHUNK_PAGES - 1)]!;
        if (entry.shared !== undefined) {
          chunk[p & (CODE_CHUNK_PAGES - 1)] = undefined;
          bits[w]! &= ~low;
          this.codePageCount--;
          continue;
        }
        entry.code.fill(0, 0, entry.code.length - CODE_SLOT_INTS);
        entry.translated = undefined;
        entry.heat = 0;
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
