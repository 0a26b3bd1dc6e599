/**
 * The contract between RAM blocks and the CPU's decode cache.
 *
 * The CPU keeps pre-decoded instructions per 4 KiB guest page in an Int32Array of
 * {@link CODE_PAGE_INTS} entries: two ints per instruction slot (slot k describes the
 * instruction at page offset 4k) plus one sentinel pair at slot {@link CODE_SLOTS}.
 * A first int of 0 means "not decoded yet". RAM blocks own the page table and a bitmap
 * of pages that have one, so that every write into RAM — by the CPU, a device or the
 * loader — can invalidate exactly the slots it overwrote by zeroing their first int.
 */

/** Instruction slots per page (4 KiB / 4 bytes). */
export const CODE_SLOTS = 1024;
/** Ints per slot: packed operation word + immediate. */
export const CODE_SLOT_INTS = 2;
/** Length of a code page array: every slot plus the end-of-page sentinel. */
export const CODE_PAGE_INTS = (CODE_SLOTS + 1) * CODE_SLOT_INTS;
