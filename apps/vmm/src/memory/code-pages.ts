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

/** Pages per chunk of a block's sparse code table (a chunk is allocated on first use). */
export const CODE_CHUNK_SHIFT = 8;
/** {@link CODE_CHUNK_SHIFT} as a page count. */
export const CODE_CHUNK_PAGES = 1 << CODE_CHUNK_SHIFT;

/**
 * What a block holds for one page that has run code: the decoded slots, whether they are
 * shared with other machines (see `shared-code.ts`), the page's translation and its heat.
 */
export interface CodeEntry {
  /**
   * Decoded slots ({@link CODE_PAGE_INTS} ints). While {@link CodeEntry.shared} is set this is
   * the shared array: it may only gain decoded slots, never lose or change one; a write into
   * the page first gives the entry a private copy.
   */
  code: Int32Array;
  /** The shared page whose slots {@link CodeEntry.code} is, or undefined when private. */
  shared: SharedCodePage | undefined;
  /**
   * The page's translated function (owned by the CPU's translator), null when the page had
   * nothing to translate, undefined when not translated (yet or any more).
   */
  translated: unknown;
  /** Entries into the page since its translation was last dropped (the translator's hotness). */
  heat: number;
}

/**
 * A decoded code page shared by every machine of a thread whose page at the same guest address,
 * in a block of the same geometry, holds the same bytes (a template's clones, the same guest in
 * many VMs). Owned by `shared-code.ts`.
 */
export interface SharedCodePage {
  /** The 4 KiB the slots were decoded from; a machine attaches only when its page equals them. */
  readonly bytes: Int32Array;
  /** The shared decoded slots. */
  readonly code: Int32Array;
  /** The translator's plan of the page (opaque here), shared like the slots; undefined when none yet. */
  plan: unknown;
}
