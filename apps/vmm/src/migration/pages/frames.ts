/**
 * Framing shared by sender and receiver: the stream format version, page-frame limits, the
 * frame builder (runs + concatenated data, at most {@link MAX_FRAME_DATA} bytes) and the
 * receiver's bounds checks. See PROTOCOL.md.
 */
import type { vmmStream } from '@handoff/proto';
import type { MigrationCapabilities } from '@handoff/qapi';
import type { RamBlockSpec } from '../../model/types.js';
import type { RamBacking } from '../../ram/backing.js';
import { MigrationError } from '../../model/migration-error.js';

export const PAGE_SIZE = 4096;
/** Page data per frame (1 MiB: 256 pages). */
export const MAX_FRAME_DATA = 1024 * 1024;
/** Runs per frame, so a frame of zero runs stays small too. */
export const MAX_FRAME_RUNS = 4096;
/** Page run flag bits (PageRunFlag). */
export const RUN_ZERO = 1;
/** Bits a receiver accepts; any other bit fails the stream (reserved for later). */
export const KNOWN_RUN_FLAGS = RUN_ZERO;

/** How a block travels. */
export type BlockMode =
  /** Shared region handed off by reference (bypass-shared-memory): no pages. */
  | 'ref'
  /** Clone: TemplateRef plus the pages the clone wrote. */
  | 'template'
  /** Every page is sent (zero runs for pages known zero). */
  | 'copy';

/** How a block of `spec` travels under `caps` (the source decides; a prepared target plans by it). */
export function modeFor(s: RamBlockSpec, caps: MigrationCapabilities): BlockMode {
  if (caps['bypass-shared-memory'] && s.backend === 'shared') return 'ref';
  if (caps['bypass-shared-memory'] && s.backend === 'clone') return 'template';
  return 'copy';
}

/**
 * A frame whose data so far is one segment at least this long is sent before a segment that
 * does not continue it is added, so long runs travel as views (no copy) and only short,
 * scattered runs are gathered into a copy.
 */
const VIEW_MIN_BYTES = 256 * 1024;

/**
 * Builds page frames; `flush` hands a finished frame to `emit`.
 *
 * Page data is kept as views of the caller's memory (guest RAM) until the frame is emitted. A
 * frame whose data is one contiguous segment carries that view itself (no copy: the stream
 * serializes it, possibly later, when it is written out); a frame of several segments gets one
 * fresh buffer with them concatenated. Sending guest RAM by view is sound for pre-copy: a page
 * that changes after its pass harvested the dirty log is dirty again and sent again in the next
 * pass, and in the final pass the vCPU is stopped.
 */
export class FrameBuilder {
  private runs: vmmStream.PageRun[] = [];
  private segs: Uint8Array[] = [];
  private len = 0;
  /** Wire bytes (data + ~16 bytes per run) of frames emitted so far. */
  bytes = 0;

  constructor(private readonly emit: (frame: vmmStream.PageFrame) => Promise<void>) {}

  /** Adds a zero run (no data). */
  async zero(block: number, first: number, count: number): Promise<void> {
    if (count === 0) return;
    const last = this.runs[this.runs.length - 1];
    if (
      last !== undefined &&
      last.flags === RUN_ZERO &&
      last.block === block &&
      Number(last.firstPage) + last.pageCount === first
    ) {
      last.pageCount += count;
      return;
    }
    if (this.runs.length >= MAX_FRAME_RUNS) await this.flush();
    this.runs.push({ block, firstPage: BigInt(first), pageCount: count, flags: RUN_ZERO });
  }

  /**
   * Adds the data of pages `first ..` of `block`: `bytes` is whole pages, contiguous in the
   * block (kept as a view until the frame is emitted; split over frames at 1 MiB).
   */
  async data(block: number, first: number, bytes: Uint8Array): Promise<void> {
    let view = bytes;
    let page = first;
    while (view.length > 0) {
      if (this.len + PAGE_SIZE > MAX_FRAME_DATA) await this.flush();
      const last = this.runs[this.runs.length - 1];
      const continues =
        last !== undefined &&
        last.flags === 0 &&
        last.block === block &&
        Number(last.firstPage) + last.pageCount === page;
      if (!continues) {
        if (
          this.runs.length >= MAX_FRAME_RUNS ||
          (this.segs.length === 1 && this.len >= VIEW_MIN_BYTES)
        ) {
          await this.flush();
        }
      }
      const take = Math.min(view.length, MAX_FRAME_DATA - this.len);
      const part = view.subarray(0, take);
      const n = take / PAGE_SIZE;
      const tail = this.runs[this.runs.length - 1];
      const seg = this.segs[this.segs.length - 1];
      if (
        tail !== undefined &&
        tail.flags === 0 &&
        tail.block === block &&
        Number(tail.firstPage) + tail.pageCount === page &&
        seg !== undefined &&
        seg.buffer === part.buffer &&
        seg.byteOffset + seg.length === part.byteOffset
      ) {
        tail.pageCount += n;
        this.segs[this.segs.length - 1] = new Uint8Array(
          seg.buffer,
          seg.byteOffset,
          seg.length + take,
        );
      } else {
        if (
          tail !== undefined &&
          tail.flags === 0 &&
          tail.block === block &&
          Number(tail.firstPage) + tail.pageCount === page
        ) {
          tail.pageCount += n; // same pages, data from elsewhere (not adjacent in memory)
        } else {
          this.runs.push({ block, firstPage: BigInt(page), pageCount: n, flags: 0 });
        }
        this.segs.push(part);
      }
      this.len += take;
      page += n;
      view = view.subarray(take);
    }
  }

  /** Adds one page's data. */
  page(block: number, index: number, bytes: Uint8Array): Promise<void> {
    return this.data(block, index, bytes.subarray(0, PAGE_SIZE));
  }

  async flush(): Promise<void> {
    if (this.runs.length === 0) return;
    let data: Uint8Array;
    if (this.segs.length === 1) data = this.segs[0]!;
    else if (this.segs.length === 0) data = new Uint8Array(0);
    else {
      // The stream may queue the frame before serializing it: gather into a buffer of its own.
      data = new Uint8Array(this.len);
      let at = 0;
      for (const s of this.segs) {
        data.set(s, at);
        at += s.length;
      }
    }
    const frame: vmmStream.PageFrame = { runs: this.runs, data };
    this.bytes += this.len + 16 * this.runs.length;
    this.runs = [];
    this.segs = [];
    this.len = 0;
    await this.emit(frame);
  }
}

/** True when a 4 KiB page is all zero; `words` views the block as 32-bit words. */
export function isZeroPage(words: Uint32Array, firstWord: number): boolean {
  // Eight words per test: about twice as fast as one at a time.
  for (let k = firstWord, end = firstWord + PAGE_SIZE / 4; k < end; k += 8) {
    if (
      (words[k]! |
        words[k + 1]! |
        words[k + 2]! |
        words[k + 3]! |
        words[k + 4]! |
        words[k + 5]! |
        words[k + 6]! |
        words[k + 7]!) !==
      0
    ) {
      return false;
    }
  }
  return true;
}

/** A receiver's view of one block of the announced table. */
export interface IncomingBlock {
  readonly pages: number;
  readonly mode: BlockMode;
  readonly bytes: Uint8Array | null;
  /** The block's memory, when it can write or zero through its file (see RamBacking). */
  readonly backing?: Pick<RamBacking, 'write' | 'zero' | 'prefault'> | null;
}

/** One validated run: where it writes, and where its data starts in the frame. */
export interface CheckedRun {
  readonly block: number;
  readonly first: number;
  readonly count: number;
  readonly zero: boolean;
  readonly dataOffset: number;
}

/**
 * Checks every run of a frame against the block table before anything is written: block
 * index, flags, page range, and that the data length is exactly the non-zero pages.
 *
 * @throws MigrationError `MIGRATION_BAD_STREAM` naming the first bad run
 */
export function checkFrame(
  frame: vmmStream.PageFrame,
  blocks: readonly IncomingBlock[],
): CheckedRun[] {
  const bad = (what: string): never => {
    throw new MigrationError('MIGRATION_BAD_STREAM', `page frame rejected: ${what}`);
  };
  if (frame.runs.length === 0) bad('it has no runs');
  if (frame.runs.length > MAX_FRAME_RUNS) bad(`${frame.runs.length} runs (max ${MAX_FRAME_RUNS})`);
  if (frame.data.length > MAX_FRAME_DATA) bad(`${frame.data.length} data bytes (max 1 MiB)`);
  const out: CheckedRun[] = [];
  let offset = 0;
  for (const [k, run] of frame.runs.entries()) {
    const b = blocks[run.block];
    if (b === undefined) bad(`run ${k} names block ${run.block}; the table has ${blocks.length}`);
    if (b!.mode === 'ref') bad(`run ${k} writes block ${run.block}, which was sent by reference`);
    if ((run.flags & ~KNOWN_RUN_FLAGS) !== 0)
      bad(`run ${k} has unknown flags 0x${run.flags.toString(16)}`);
    if (run.pageCount === 0) bad(`run ${k} is empty`);
    if (
      run.firstPage > BigInt(b!.pages) ||
      run.firstPage + BigInt(run.pageCount) > BigInt(b!.pages)
    ) {
      bad(
        `run ${k} covers pages ${run.firstPage}..+${run.pageCount} of block ${run.block}, ` +
          `which has ${b!.pages} pages`,
      );
    }
    const zero = (run.flags & RUN_ZERO) !== 0;
    out.push({
      block: run.block,
      first: Number(run.firstPage),
      count: run.pageCount,
      zero,
      dataOffset: offset,
    });
    if (!zero) offset += run.pageCount * PAGE_SIZE;
    if (offset > frame.data.length)
      bad(`run ${k} needs data beyond the ${frame.data.length} bytes sent`);
  }
  if (offset !== frame.data.length) {
    bad(`the runs take ${offset} data bytes but the frame carries ${frame.data.length}`);
  }
  return out;
}
