/**
 * The page half of an incoming migration: applies checked page frames to the blocks of the
 * announced table. Copied blocks land in fresh (zero) memory, so a zero run only needs writing
 * over pages this stream already filled; writing the rest would fault in every page of the
 * block. Main RAM's touched-pages bitmap follows what arrives, so the VM can later migrate on
 * with never-written pages as zero runs again.
 */
import { PageBitmap } from '@handoff/bitmap';
import type { vmmStream } from '@handoff/proto';
import { checkFrame, PAGE_SIZE, type IncomingBlock } from './stream.js';

export class PageReceiver {
  /** Per block: pages this stream wrote data into (copied blocks only). */
  private readonly written: (PageBitmap | null)[];

  /**
   * @param blocks the validated block table, each with its mapped bytes (null when sent by ref)
   * @param touched main RAM's touched-pages bitmap to keep current, or null
   */
  constructor(
    private readonly blocks: readonly IncomingBlock[],
    private readonly touched: PageBitmap | null,
  ) {
    this.written = blocks.map((b) => (b.mode === 'copy' ? new PageBitmap(b.pages) : null));
  }

  /**
   * Checks every run of the frame against the table, then writes it.
   *
   * @throws MigrationError `MIGRATION_BAD_STREAM` before any byte of a bad frame is written
   */
  apply(frame: vmmStream.PageFrame): void {
    const runs = checkFrame(frame, this.blocks);
    const data = frame.data;
    const touched = this.touched;
    for (const r of runs) {
      const b = this.blocks[r.block]!;
      const bytes = b.bytes!;
      const at = r.first * PAGE_SIZE;
      const len = r.count * PAGE_SIZE;
      const filled = this.written[r.block] ?? null;
      if (r.zero) {
        if (filled === null) bytes.fill(0, at, at + len);
        else {
          filled.forEachRun(
            (start, n) => void bytes.fill(0, start * PAGE_SIZE, (start + n) * PAGE_SIZE),
            r.first,
            r.first + r.count,
          );
          filled.clearRange(r.first, r.first + r.count);
        }
      } else {
        bytes.set(data.subarray(r.dataOffset, r.dataOffset + len), at);
        filled?.setRange(r.first, r.first + r.count);
      }
      if (r.block === 0 && touched !== null) {
        if (r.zero && b.mode === 'copy') touched.clearRange(r.first, r.first + r.count);
        else touched.setRange(r.first, r.first + r.count);
      }
    }
  }
}
