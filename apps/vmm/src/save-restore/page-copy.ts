/**
 * Which pages of a RAM block a full save copies, and the copy itself. Pages never written stay
 * holes of the snapshot's region — no page is scanned for zeros: the VM knows which pages it
 * wrote (the touched bitmap of main RAM) and the files know where they hold data (holes).
 *
 * @packageDocumentation
 */
import { PageBitmap } from '@handoff/bitmap';
import { PAGE_SIZE } from '../memory/pages.js';
import type { RamBacking, SaveRegion } from '../ram/index.js';

/** Largest single write into a save region: runs of pages are cut to this. */
const MAX_WRITE_BYTES = 8 << 20;
/** Writes into one region at once: the disk gets the next while one completes. */
const WRITES_IN_FLIGHT = 2;

/** What a block holds outside the pages the VM wrote, as byte ranges; null: unknown (all). */
type Ranges = readonly (readonly [start: number, end: number])[] | null;

/**
 * The pages of block `b` that may hold data: the pages the VM wrote (`touched`, main RAM only)
 * plus, unless the untouched pages are known zero, what the block held otherwise — the
 * template's data ranges for clone RAM, the backing file's data ranges for shared and private
 * RAM (every page when unknown).
 *
 * @param touched - main RAM's pages written since boot (or since the restore); null for other
 *   blocks (not tracked)
 * @param untouchedAreZero - the pages outside `touched` are zero for certain
 */
export function pagesToCopy(
  b: RamBacking,
  touched: PageBitmap | null,
  untouchedAreZero: boolean,
): PageBitmap {
  const pages = b.spec.size / PAGE_SIZE;
  const out = new PageBitmap(pages);
  if (touched !== null) out.or(touched);
  if (touched !== null && untouchedAreZero) return out;
  const base: Ranges =
    b.spec.backend === 'clone' ? (b.templateDataRanges?.() ?? null) : (b.dataRanges?.() ?? null);
  if (base === null) {
    out.setAll();
    return out;
  }
  for (const [start, end] of base) {
    const s = Math.min(pages, Math.floor(start / PAGE_SIZE));
    const e = Math.min(pages, Math.ceil(end / PAGE_SIZE));
    if (e > s) out.setRange(s, e);
  }
  return out;
}

/**
 * Copies the pages set in `pages` from the block's memory into `region` at the same offsets,
 * in writes of at most {@link MAX_WRITE_BYTES}, {@link WRITES_IN_FLIGHT} at a time. Only while
 * the vCPU is paused. Returns the bytes written; on a failure, once no write is in flight.
 */
export async function copyPages(
  b: RamBacking,
  pages: PageBitmap,
  region: SaveRegion,
): Promise<number> {
  const writes: number[] = []; // [offset, length] pairs
  pages.forEachRun((start, length) => {
    const from = start * PAGE_SIZE;
    const end = (start + length) * PAGE_SIZE;
    b.prefault?.(from, end - from, 'read');
    for (let at = from; at < end; at += MAX_WRITE_BYTES) {
      writes.push(at, Math.min(MAX_WRITE_BYTES, end - at));
    }
  });
  let next = 0;
  let failed = false;
  const lane = async (): Promise<number> => {
    let bytes = 0;
    while (!failed && next < writes.length) {
      const at = writes[next]!;
      const len = writes[next + 1]!;
      next += 2;
      try {
        await region.write(at, new Uint8Array(b.buffer, at, len));
      } catch (err) {
        failed = true;
        throw err;
      }
      bytes += len;
    }
    return bytes;
  };
  const lanes = await Promise.allSettled(Array.from({ length: WRITES_IN_FLIGHT }, lane));
  let bytes = 0;
  for (const l of lanes) {
    if (l.status === 'rejected') throw l.reason;
    bytes += l.value;
  }
  return bytes;
}
