/**
 * The page half of an incoming migration: applies checked page frames to the blocks of the
 * announced table. Copied blocks land in fresh (zero) memory, so a zero run only needs writing
 * over pages this stream already filled; writing the rest would fault in every page of the
 * block. Where the block's file allows it, data runs are written through the file (pwrite) and
 * zero runs over filled pages punched out, so no page of the mapping faults in during the
 * stream (a first touch costs a fault per page); otherwise a run is faulted in with one system
 * call (MADV_POPULATE_WRITE) before it is copied. Main RAM's touched-pages bitmap follows what
 * arrives, so the VM can later migrate on with never-written pages as zero runs again.
 *
 * Writes through the file run on a libuv worker thread while the stream keeps arriving. They
 * and the hole punches go through one queue per receiver, so they land in stream order (a page
 * sent twice ends with its later contents); at most {@link MAX_QUEUED_BYTES} wait, then
 * `apply` waits too, which stops reading from the source. `drain` must resolve before the
 * memory runs.
 */
import { PageBitmap } from '@handoff/bitmap';
import type { vmmStream } from '@handoff/proto';
import { checkFrame, PAGE_SIZE, type IncomingBlock } from './frames.js';

/**
 * Bytes of page data queued for writing before `apply` waits for the writes to catch up. Small
 * enough that what is still queued when the source stops (the bulk pass's tail) lands within a
 * few milliseconds of the pause, large enough that the writes never wait for the socket.
 */
export const MAX_QUEUED_BYTES = 8 * 1024 * 1024;

export class PageReceiver {
  /** Per block: pages this stream wrote data into (copied blocks only). */
  private readonly written: (PageBitmap | null)[];
  /** The file writes and punches in stream order; rejects with the first failure. */
  private io: Promise<void> = Promise.resolve();
  private queued = 0;
  private roomFor: (() => void) | undefined;
  private failure: Error | null = null;

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
   * Checks every run of the frame against the table, then writes it (file writes are queued:
   * see {@link PageReceiver.drain}).
   *
   * @throws MigrationError `MIGRATION_BAD_STREAM` before any byte of a bad frame is written;
   *   the failure of an earlier queued write
   */
  async apply(frame: vmmStream.PageFrame): Promise<void> {
    if (this.failure !== null) await this.drain();
    const runs = checkFrame(frame, this.blocks);
    const data = frame.data;
    const touched = this.touched;
    for (const r of runs) {
      const b = this.blocks[r.block]!;
      const bytes = b.bytes!;
      const at = r.first * PAGE_SIZE;
      const len = r.count * PAGE_SIZE;
      const filled = this.written[r.block] ?? null;
      const file = b.backing ?? null;
      if (r.zero) {
        if (filled === null) bytes.fill(0, at, at + len);
        else {
          filled.forEachRun(
            (start, n) => {
              const from = start * PAGE_SIZE;
              const size = n * PAGE_SIZE;
              const zero = file?.zero;
              if (zero !== undefined)
                this.queue(0, () => zero(from, size)); // punch: no page touched
              else bytes.fill(0, from, from + size);
            },
            r.first,
            r.first + r.count,
          );
          filled.clearRange(r.first, r.first + r.count);
        }
      } else {
        const part = data.subarray(r.dataOffset, r.dataOffset + len);
        const write = file?.write;
        if (write !== undefined) {
          // pwrite: no page of the mapping faults in (≈4× a copy).
          this.queue(len, () => write(at, part));
        } else {
          // One MADV_POPULATE_WRITE for the run instead of a page fault per fresh page.
          file?.prefault?.(at, len);
          bytes.set(part, at);
        }
        filled?.setRange(r.first, r.first + r.count);
      }
      if (r.block === 0 && touched !== null) {
        if (r.zero && b.mode === 'copy') touched.clearRange(r.first, r.first + r.count);
        else touched.setRange(r.first, r.first + r.count);
      }
    }
    if (this.queued > MAX_QUEUED_BYTES) {
      // Wait until half of it landed, so the queue never runs dry while the source waits.
      await new Promise<void>((resolve) => (this.roomFor = resolve));
      if (this.failure !== null) await this.drain();
    }
  }

  /**
   * Runs `fn` once every write queued so far landed (at once when none waits); skipped when
   * one of them failed.
   */
  afterWrites(fn: () => void): void {
    if (this.queued === 0 && this.failure === null) fn();
    else this.queue(0, fn);
  }

  /** Resolves when every queued write and punch landed. @throws the first one that failed */
  async drain(): Promise<void> {
    await this.io;
  }

  private queue(bytes: number, op: () => Promise<void> | void): void {
    this.queued += bytes;
    this.io = this.io.then(async () => {
      try {
        await op();
      } catch (err) {
        this.failure ??= err as Error;
        this.roomFor?.();
        throw err;
      }
      this.queued -= bytes;
      if (this.roomFor !== undefined && this.queued <= MAX_QUEUED_BYTES / 2) {
        this.roomFor();
        this.roomFor = undefined;
      }
    });
    this.io.catch(() => undefined); // reported by drain (and apply)
  }
}
