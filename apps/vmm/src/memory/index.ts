/** Guest physical memory: RAM blocks with dirty/touched bitmaps, the MMIO map, the decode-cache contract. */
export { AddressSpace } from './address-space.js';
export {
  CODE_CHUNK_PAGES,
  CODE_PAGE_INTS,
  CODE_SLOTS,
  CODE_SLOT_INTS,
  type CodeEntry,
  type SharedCodePage,
} from './code-pages.js';
export { assertLittleEndianHost } from './endian.js';
export { MemoryError, isMemoryError, type MemoryErrorCode } from './errors.js';
export type { AccessWidth, MmioDevice } from './mmio.js';
export {
  PAGE_SHIFT,
  PAGE_SIZE,
  bitmapWords,
  listPages,
  setPageBits,
  testPageBit,
} from './pages.js';
export { RamBlock, type RamBlockOptions } from './ram-block.js';
export { sharedCodePage, sharedCodePages } from './shared-code.js';
