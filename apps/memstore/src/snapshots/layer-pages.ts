import { MemstoreError } from '../errors.js';
import { PAGE_SIZE } from '../regions/size.js';

/**
 * Layer bitmaps: which pages of a block a layer's region holds. One bit per 4 KiB page of the
 * block, least significant bit first (page p is bit p % 8 of byte p / 8), ceil(pages / 8)
 * bytes; the bits past the last page are zero. The bitmap is the truth: a set page belongs to
 * the layer even when its bytes are zero (a hole of the file).
 */

/** A run of consecutive pages [firstPage, firstPage + pageCount). */
export interface PageSpan {
  readonly firstPage: number;
  readonly pageCount: number;
}

/** Bytes of the bitmap of a block of `size` bytes. */
export function layerBitmapBytes(size: number): number {
  return Math.ceil(size / PAGE_SIZE / 8);
}

/**
 * Checks a bitmap given for a block of `size` bytes: exactly ceil(pages / 8) bytes, no bit set
 * past the last page. SNAPSHOT_INVALID naming `what` (e.g. `RAM block "ram0"`).
 */
export function checkLayerBitmap(bitmap: Uint8Array, size: number, what: string): void {
  const pages = size / PAGE_SIZE;
  const expected = layerBitmapBytes(size);
  if (bitmap.length !== expected) {
    throw new MemstoreError(
      'SNAPSHOT_INVALID',
      `${what}: layer_pages is ${bitmap.length} bytes, but a block of ${pages} pages needs ` +
        `exactly ${expected} (one bit per 4 KiB page, least significant bit first)`,
    );
  }
  const tailBits = pages % 8;
  if (tailBits !== 0 && bitmap[expected - 1]! >> tailBits !== 0) {
    throw new MemstoreError(
      'SNAPSHOT_INVALID',
      `${what}: layer_pages sets bits past the block's last page (${pages - 1}); clear them`,
    );
  }
}

const BITS_IN_BYTE = ((): Uint8Array => {
  const t = new Uint8Array(256);
  for (let i = 1; i < 256; i++) t[i] = (i & 1) + t[i >> 1]!;
  return t;
})();

/** Pages set in a bitmap. */
export function countLayerPages(bitmap: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < bitmap.length; i++) n += BITS_IN_BYTE[bitmap[i]!]!;
  return n;
}

/** Whether page `page` is set. */
export function hasLayerPage(bitmap: Uint8Array, page: number): boolean {
  return ((bitmap[page >> 3]! >> (page & 7)) & 1) === 1;
}

/**
 * The runs of set pages among the first `pages`, ascending; whole zero bytes are skipped a byte
 * at a time, so a sparse bitmap costs about its length in bytes.
 */
export function layerPageSpans(bitmap: Uint8Array, pages: number): PageSpan[] {
  const spans: PageSpan[] = [];
  let start = -1;
  let page = 0;
  while (page < pages) {
    const byte = bitmap[page >> 3]!;
    if ((page & 7) === 0 && page + 8 <= pages && (byte === 0 || byte === 0xff)) {
      if (byte === 0 && start >= 0) {
        spans.push({ firstPage: start, pageCount: page - start });
        start = -1;
      } else if (byte === 0xff && start < 0) {
        start = page;
      }
      page += 8;
      continue;
    }
    const set = ((byte >> (page & 7)) & 1) === 1;
    if (set && start < 0) start = page;
    else if (!set && start >= 0) {
      spans.push({ firstPage: start, pageCount: page - start });
      start = -1;
    }
    page++;
  }
  if (start >= 0) spans.push({ firstPage: start, pageCount: pages - start });
  return spans;
}

/** A bitmap of `pages` pages with the given spans set (tests and tools). */
export function layerBitmapOf(pages: number, spans: readonly PageSpan[]): Uint8Array {
  const bitmap = new Uint8Array(Math.ceil(pages / 8));
  for (const s of spans) {
    for (let p = s.firstPage; p < s.firstPage + s.pageCount; p++) bitmap[p >> 3]! |= 1 << (p & 7);
  }
  return bitmap;
}
