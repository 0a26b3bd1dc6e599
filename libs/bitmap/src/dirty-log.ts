import { throwIndex, throwRange } from './errors.js';
import { PageBitmap } from './page-bitmap.js';
import { setRangeWords } from './words.js';

/**
 * The writer side of dirty tracking, as the memory code sees it (after rust-vmm's `Bitmap`):
 * mark one page or a range of pages dirty. Implemented by {@link DirtyLog},
 * {@link AtomicDirtyLog}, {@link EpochDirtyWriter} and {@link NO_DIRTY_TRACKING}.
 */
export interface DirtyMarker {
  /** Mark page `page` dirty. */
  mark(page: number): void;
  /** Mark pages `[start, end)` dirty. */
  markRange(start: number, end: number): void;
}

/** A {@link DirtyMarker} that records nothing, for RAM blocks whose writes need no tracking. */
export const NO_DIRTY_TRACKING: DirtyMarker = Object.freeze({
  mark(_page: number): void {},
  markRange(_start: number, _end: number): void {},
});

/**
 * Single-threaded dirty log with double buffering (as TinyEMU): writers mark pages in the
 * active bitmap; {@link DirtyLog.harvest} makes the other (cleared) bitmap active and returns the
 * previously active one. No allocation after construction.
 *
 * Use it when the writer and the harvester run on the same thread (the vCPU runs in slices on the
 * event loop). For a writer in another thread use {@link AtomicDirtyLog} or {@link EpochDirtyLog}.
 *
 * `mark` is checked (`BITMAP_OUT_OF_RANGE`); the check is one comparison.
 */
export class DirtyLog implements DirtyMarker {
  /** Number of pages tracked. */
  readonly size: number;
  private active: PageBitmap;
  private standby: PageBitmap;
  /** `active.cells`, cached so `mark` is one field load away from the store. */
  private activeWords: Int32Array;

  /**
   * @param pages - number of pages, integer in `[0, MAX_BITS]`
   * @throws BitmapError `BITMAP_INVALID_ARGUMENT`
   */
  constructor(pages: number) {
    this.active = new PageBitmap(pages);
    this.standby = new PageBitmap(pages);
    this.activeWords = this.active.cells;
    this.size = pages;
  }

  /** Mark page `page` dirty. @throws BitmapError `BITMAP_OUT_OF_RANGE` */
  mark(page: number): void {
    if (!(page >>> 0 === page && page < this.size)) throwIndex('DirtyLog.mark', page, this.size);
    const w = page >>> 5;
    this.activeWords[w] = this.activeWords[w]! | (1 << (page & 31));
  }

  /**
   * Mark pages `[start, end)` dirty (device DMA, loader writes).
   *
   * @throws BitmapError `BITMAP_OUT_OF_RANGE` unless `0 <= start <= end <= size`
   */
  markRange(start: number, end: number): void {
    if (!(start >>> 0 === start && end >>> 0 === end && start <= end && end <= this.size))
      throwRange('DirtyLog.markRange', start, end, this.size);
    if (start < end) setRangeWords(this.activeWords, start, end);
  }

  /** Mark every page dirty (the first pass of a pre-copy migration sends everything). */
  markAll(): void {
    this.active.setAll();
  }

  /**
   * OR a bitmap into the active log, e.g. to requeue pages of a harvest that could not be sent.
   *
   * @throws BitmapError `BITMAP_SIZE_MISMATCH`
   */
  markBitmap(bitmap: PageBitmap): void {
    this.active.or(bitmap);
  }

  /** Whether `page` has been marked since the last harvest. @throws BitmapError `BITMAP_OUT_OF_RANGE` */
  isDirty(page: number): boolean {
    return this.active.test(page);
  }

  /** Number of pages marked since the last harvest (a popcount; O(size / 32)). */
  dirtyCount(): number {
    return this.active.popcount();
  }

  /**
   * Swap buffers: clear the standby bitmap, make it active, and return the previously active
   * bitmap with every page marked since the last harvest.
   *
   * The returned bitmap belongs to the log: read it (and modify it if you like) until the next
   * `harvest()`, which clears it and reuses it as the active buffer. Copy it (`clone()` /
   * `copyFrom()`) to keep it longer.
   */
  harvest(): PageBitmap {
    const harvested = this.active;
    const next = this.standby;
    next.clearAll();
    this.active = next;
    this.activeWords = next.cells;
    this.standby = harvested;
    return harvested;
  }
}
