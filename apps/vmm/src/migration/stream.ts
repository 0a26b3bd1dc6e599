/**
 * Framing shared by sender and receiver: the stream format version, page-frame limits, the
 * frame builder (runs + concatenated data, at most {@link MAX_FRAME_DATA} bytes) and the
 * receiver's bounds checks. See PROTOCOL.md.
 */
import type { vmmStream } from '@handoff/proto';
import { MigrationError } from './errors.js';

/** Stream format version: major must match, the receiver loads minor <= its own. */
export const STREAM_FORMAT = { major: 1, minor: 0 } as const;
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

/** Builds page frames; `flush` hands a finished frame to `emit`. */
export class FrameBuilder {
  private runs: vmmStream.PageRun[] = [];
  private data = new Uint8Array(MAX_FRAME_DATA);
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

  /** Adds one page's data. */
  async page(block: number, index: number, bytes: Uint8Array): Promise<void> {
    if (this.len + PAGE_SIZE > MAX_FRAME_DATA || this.runs.length >= MAX_FRAME_RUNS) {
      await this.flush();
    }
    const last = this.runs[this.runs.length - 1];
    if (
      last !== undefined &&
      last.flags === 0 &&
      last.block === block &&
      Number(last.firstPage) + last.pageCount === index
    ) {
      last.pageCount++;
    } else {
      this.runs.push({ block, firstPage: BigInt(index), pageCount: 1, flags: 0 });
    }
    this.data.set(bytes, this.len);
    this.len += PAGE_SIZE;
  }

  async flush(): Promise<void> {
    if (this.runs.length === 0) return;
    // The stream may queue the frame before serializing it: hand over this buffer, take a new one.
    const frame: vmmStream.PageFrame = { runs: this.runs, data: this.data.subarray(0, this.len) };
    this.bytes += this.len + 16 * this.runs.length;
    this.runs = [];
    this.data = new Uint8Array(MAX_FRAME_DATA);
    this.len = 0;
    await this.emit(frame);
  }
}

/** True when a 4 KiB page is all zero; `words` views the block as 32-bit words. */
export function isZeroPage(words: Uint32Array, firstWord: number): boolean {
  for (let k = firstWord, end = firstWord + PAGE_SIZE / 4; k < end; k++) {
    if (words[k] !== 0) return false;
  }
  return true;
}

/** A receiver's view of one block of the announced table. */
export interface IncomingBlock {
  readonly pages: number;
  readonly mode: BlockMode;
  readonly bytes: Uint8Array | null;
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
