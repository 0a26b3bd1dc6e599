/** Guest page geometry and the word-array page bitmaps used for dirty and touched tracking. */

/** log2 of the guest page size. */
export const PAGE_SHIFT = 12;
/** Guest page size in bytes (4 KiB). */
export const PAGE_SIZE = 1 << PAGE_SHIFT;

/** Number of 32-bit words a one-bit-per-page bitmap needs for `pages` pages. */
export function bitmapWords(pages: number): number {
  return (pages + 31) >>> 5;
}

/** Sets the bits of pages `first..last` (inclusive) in `words`. */
export function setPageBits(words: Int32Array, first: number, last: number): void {
  for (let p = first; p <= last; p++) words[p >>> 5]! |= 1 << (p & 31);
}

/** True when page `page`'s bit is set in `words`. */
export function testPageBit(words: Int32Array | Uint32Array, page: number): boolean {
  return ((words[page >>> 5]! >>> (page & 31)) & 1) !== 0;
}

/** Pages whose bit is set, in ascending order (for tests and reports; not for hot paths). */
export function listPages(words: Int32Array | Uint32Array, pages: number): number[] {
  const out: number[] = [];
  for (let p = 0; p < pages; p++) if (testPageBit(words, p)) out.push(p);
  return out;
}
