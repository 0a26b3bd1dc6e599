/**
 * The page half of an outgoing migration: turns RAM blocks (whole, by dirty bitmap, or by the
 * pages touched since boot) into page frames and counts what it sent. Pages known zero travel
 * as zero runs without being read; other pages are read and, where asked, checked for zero.
 * The emit callback owns the stream (flow control, bandwidth cap, cancellation).
 */
import type { PageBitmap } from '@handoff/bitmap';
import type { vmmStream } from '@handoff/proto';
import type { RamBacking } from '../ram/index.js';
import { FrameBuilder, isZeroPage, PAGE_SIZE, type BlockMode } from './stream.js';

/** Page counts of one outgoing migration (QAPI `ram.*` names in MigrationInfo). */
export interface PageCounts {
  /** Pages found zero by reading them (`ram.duplicate`). */
  duplicate: number;
  /** Pages sent as zero runs without reading them (never written since boot). */
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
      await this.range(k, b, 0, b.spec.size / PAGE_SIZE, true);
    }
    await this.framer.flush();
  }

  /** Every page of a block that is not dirty-tracked (sent while the vCPU is stopped). */
  async all(k: number, b: RamBacking, mode: BlockMode): Promise<void> {
    if (mode === 'template') return; // only main RAM tracks a clone's writes; others: template's
    await this.range(k, b, 0, b.spec.size / PAGE_SIZE, true);
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

  private async range(
    k: number,
    b: RamBacking,
    from: number,
    to: number,
    scanZero: boolean,
  ): Promise<void> {
    const bytes = new Uint8Array(b.buffer);
    const words = new Uint32Array(b.buffer);
    for (let p = from; p < to; p++) {
      if (scanZero && isZeroPage(words, p * (PAGE_SIZE / 4))) {
        await this.framer.zero(k, p, 1);
        this.counts.duplicate++;
        continue;
      }
      await this.framer.page(k, p, bytes.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE));
      this.counts.normal++;
    }
  }
}
