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
const MAX_WRITE_BYTES = 4 << 20;

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
 * in runs of at most {@link MAX_WRITE_BYTES}. Only while the vCPU is paused. Returns the bytes
 * written.
 */
export async function copyPages(
  b: RamBacking,
  pages: PageBitmap,
  region: SaveRegion,
): Promise<number> {
  const runs: [number, number][] = [];
  pages.forEachRun((start, length) => {
    runs.push([start * PAGE_SIZE, (start + length) * PAGE_SIZE]);
  });
  let bytes = 0;
  for (const [start, end] of runs) {
    b.prefault?.(start, end - start, 'read');
    for (let at = start; at < end; at += MAX_WRITE_BYTES) {
      const len = Math.min(MAX_WRITE_BYTES, end - at);
      await region.write(at, new Uint8Array(b.buffer, at, len));
      bytes += len;
    }
  }
  return bytes;
}
