/**
 * The page bitmaps of snapshot layers as memstore stores and sends them (`layer_pages`: one bit
 * per page of the block, least significant bit first, ceil(pages / 8) bytes), to and from the
 * vmm's {@link PageBitmap}. Incoming bytes are hostile: a bitmap of another length, or with
 * bits set past the block's last page, is refused.
 *
 * @packageDocumentation
 */
import { PageBitmap } from '@handoff/bitmap';

/** Bytes of the bitmap of a block of `pages` pages. */
export function layerPagesLength(pages: number): number {
  return Math.ceil(pages / 8);
}

/**
 * The pages set in `bytes`, a bitmap of a block of `pages` pages. Returns null when the bytes
 * are not one (wrong length, bits past the last page); `why` then says what is wrong.
 */
export function layerPagesToBitmap(
  bytes: Uint8Array,
  pages: number,
): { readonly bitmap: PageBitmap } | { readonly bitmap: null; readonly why: string } {
  const want = layerPagesLength(pages);
  if (bytes.length !== want) {
    return {
      bitmap: null,
      why: `its page bitmap is ${bytes.length} bytes, a block of ${pages} pages needs ${want}`,
    };
  }
  const out = new PageBitmap(pages);
  const tail = pages % 8;
  if (tail !== 0 && (bytes[want - 1]! & ~((1 << tail) - 1) & 0xff) !== 0) {
    return { bitmap: null, why: `its page bitmap sets pages past the block's last (${pages - 1})` };
  }
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b === 0) continue;
    const first = i * 8;
    if (b === 0xff) {
      out.setRange(first, first + 8);
      continue;
    }
    for (let bit = 0; bit < 8; bit++) if ((b >> bit) & 1) out.set(first + bit);
  }
  return { bitmap: out };
}

/** `bitmap` as memstore's `layer_pages` bytes. */
export function bitmapToLayerPages(bitmap: PageBitmap): Uint8Array {
  const out = new Uint8Array(layerPagesLength(bitmap.size));
  bitmap.forEachRun((start, length) => {
    for (let p = start; p < start + length; p++) out[p >> 3] = out[p >> 3]! | (1 << (p & 7));
  });
  return out;
}
