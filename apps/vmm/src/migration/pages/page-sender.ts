/**
 * The page half of an outgoing migration: turns RAM blocks (whole, by dirty bitmap, or by the
 * pages touched since boot) into page frames and counts what it sent. Pages known zero (never
 * written since boot, or in a hole of the block's file) travel as zero runs without being read;
 * other pages are read and, where asked, checked for zero; runs of non-zero pages go to the
 * framer as views of guest RAM (no per-page copy, no per-page await).
 * The emit callback owns the stream (flow control, bandwidth cap, cancellation).
 */
import type { PageBitmap } from '@handoff/bitmap';
import type { vmmStream } from '@handoff/proto';
import type { RamBacking } from '../../ram/index.js';
import { FrameBuilder, isZeroPage, MAX_FRAME_DATA, PAGE_SIZE, type BlockMode } from './frames.js';

/** Pages of one frame's data. */
const RUN_PAGES = MAX_FRAME_DATA / PAGE_SIZE;
/** Pages mapped in by one MADV_POPULATE_READ before they are read (4 MiB). */
const PREFAULT_PAGES = 4 * RUN_PAGES;
/** Shortest range worth populating before it is read. */
const PREFAULT_MIN_PAGES = 64;

/** Page counts of one outgoing migration (QAPI `ram.*` names in MigrationInfo). */
export interface PageCounts {
  /** Pages found zero by reading them (`ram.duplicate`). */
  duplicate: number;
  /**
   * Pages sent as zero runs without reading them: never written since boot, or in a hole of
   * the block's file.
   */
  zeroPages: number;
  /** Pages sent with their data (`ram.normal`). */
  normal: number;
}

export class PageSender {
  readonly counts: PageCounts = { duplicate: 0, zeroPages: 0, normal: 0 };
  private readonly framer: FrameBuilder;

  constructor(emit: (frame: vmmStream.PageFrame) => Promise<void>) {
    this.framer = new FrameBuilder(emit);
  }

  /** Wire bytes (data + run headers) of the frames emitted so far. */
  get bytes(): number {
    return this.framer.bytes;
  }

  /**
   * Bulk pass of block `k`: a clone's pages the clone touched (the rest is the template's); with
   * `untouchedAreZero`, never-written pages as zero runs (not read) and the touched ones read;
   * otherwise every page read.
   */
  async bulk(
    k: number,
    b: RamBacking,
    mode: BlockMode,
    touched: PageBitmap,
    untouchedAreZero: boolean,
  ): Promise<void> {
    if (mode === 'template') {
      await this.bitmap(k, b, touched, false); // untouched pages are the template's
    } else if (untouchedAreZero) {
      const pages = touched.size;
      let at = 0;
      while (at < pages) {
        const set = touched.findNextSet(at);
        const end = set < 0 || set >= pages ? pages : set;
        if (end > at) {
          await this.framer.zero(k, at, end - at);
          this.counts.zeroPages += end - at;
          at = end;
          continue;
        }
        const clear = touched.findNextClear(at);
        const stop = clear < 0 || clear >= pages ? pages : clear;
        await this.range(k, b, at, stop, true);
        at = stop;
      }
    } else {
      await this.holes(k, b);
    }
    await this.framer.flush();
  }

  /**
   * Every page of a block whose untouched pages are not known zero: pages in holes of the
   * backing file (never written, so zero for certain) go as zero runs without being read (reading
   * a tmpfs hole through a shared mapping would allocate it); the rest are read.
   */
  private async holes(k: number, b: RamBacking): Promise<void> {
    const pages = b.spec.size / PAGE_SIZE;
    const data = b.dataRanges?.() ?? null;
    if (data === null) {
      await this.range(k, b, 0, pages, true);
      return;
    }
    let at = 0;
    for (const [start, end] of data) {
      const s = Math.min(pages, Math.floor(start / PAGE_SIZE));
      const e = Math.min(pages, Math.ceil(end / PAGE_SIZE));
      if (e <= at) continue;
      const from = Math.max(at, s);
      if (from > at) {
        await this.framer.zero(k, at, from - at);
        this.counts.zeroPages += from - at;
      }
      await this.range(k, b, from, e, true);
      at = e;
    }
    if (at < pages) {
      await this.framer.zero(k, at, pages - at);
      this.counts.zeroPages += pages - at;
    }
  }

  /** Every page of a block that is not dirty-tracked (sent while the vCPU is stopped). */
  async all(k: number, b: RamBacking, mode: BlockMode): Promise<void> {
    if (mode === 'template') return; // only main RAM tracks a clone's writes; others: template's
    await this.holes(k, b);
  }

  /** The pages set in `bits`, read now (zero pages found by reading, if `scanZero`). */
  async bitmap(k: number, b: RamBacking, bits: PageBitmap, scanZero = true): Promise<void> {
    const runs: [number, number][] = [];
    bits.forEachRun((start, length) => {
      runs.push([start, start + length]);
    });
    for (const [s, e] of runs) await this.range(k, b, s, e, scanZero);
  }

  /** Emits what is buffered. */
  flush(): Promise<void> {
    return this.framer.flush();
  }

  /**
   * Pages [from, to) of block `k`, read now: runs of zero pages (if `scanZero`) as zero runs,
   * runs of other pages handed to the framer as one view each (no per-page work but the zero
   * test, no per-page await).
   */
  private async range(
    k: number,
    b: RamBacking,
    from: number,
    to: number,
    scanZero: boolean,
  ): Promise<void> {
    const bytes = new Uint8Array(b.buffer);
    if (!scanZero) {
      for (let p = from; p < to; p += RUN_PAGES) {
        const e = Math.min(to, p + RUN_PAGES);
        await this.framer.data(k, p, bytes.subarray(p * PAGE_SIZE, e * PAGE_SIZE));
        this.counts.normal += e - p;
      }
      return;
    }
    const words = new Uint32Array(b.buffer);
    const W = PAGE_SIZE / 4;
    let p = from;
    // Long ranges are mapped in ahead, one call per chunk instead of a fault per page (short ones,
    // like dirty pages the guest just wrote, are mapped already).
    let mapped = to - from >= PREFAULT_MIN_PAGES ? from : to;
    while (p < to) {
      if (p >= mapped) {
        mapped = Math.min(to, p + PREFAULT_PAGES);
        b.prefault?.(p * PAGE_SIZE, (mapped - p) * PAGE_SIZE, 'read');
      }
      const start = p;
      if (isZeroPage(words, p * W)) {
        p++;
        while (p < mapped && isZeroPage(words, p * W)) p++;
        await this.framer.zero(k, start, p - start);
        this.counts.duplicate += p - start;
      } else {
        // At most one frame's worth, so reading and sending interleave.
        const stop = Math.min(mapped, p + RUN_PAGES);
        p++;
        while (p < stop && !isZeroPage(words, p * W)) p++;
        await this.framer.data(k, start, bytes.subarray(start * PAGE_SIZE, p * PAGE_SIZE));
        this.counts.normal += p - start;
      }
    }
  }
}
