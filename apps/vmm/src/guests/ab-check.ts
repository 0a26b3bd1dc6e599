/**
 * Host-side checker for the `ab` guest (guests/ab): the guest increments the first byte of
 * every page of a range, page after page, pass after pass. Whenever the VM is paused, the
 * pages it already reached in the current pass hold one more than the pages it has not, so a
 * consistent range reads `n n n ... n n-1 n-1 ... n-1` (mod 256): all first bytes equal except
 * exactly one edge where the value drops by one. Anything else means a page was lost, came
 * from the wrong moment, or was copied twice — the migration or snapshot is broken.
 */

/** Page size the guest walks by (4 KiB, like the VMM's dirty tracking). */
export const AB_PAGE_SIZE = 4096;

/** Options of {@link checkAbConsistency}. */
export interface AbCheckOptions {
  /** Stride between counted bytes; default {@link AB_PAGE_SIZE}. */
  readonly pageSize?: number;
  /** Guest-physical address of `ram[0]`, used only to name pages in descriptions. */
  readonly baseAddress?: number;
}

/** Outcome of a check; `description` says in one sentence what was found. */
export interface AbCheckResult {
  readonly consistent: boolean;
  /** Pages checked. */
  readonly pages: number;
  /** First byte of the first page: the value of the newest pass. */
  readonly newer: number;
  /**
   * Index of the first page still holding the previous pass's value (`newer - 1` mod 256), or
   * null when all pages are equal (paused between passes) or the range is inconsistent.
   */
  readonly edge: number | null;
  /** When inconsistent: index of the first page that breaks the rule. */
  readonly badPage: number | null;
  readonly description: string;
}

/** Thrown by {@link assertAbConsistent}; the message is the check's description. */
export class AbInconsistentError extends Error {
  readonly code = 'AB_INCONSISTENT';
  constructor(readonly result: AbCheckResult) {
    super(result.description);
    this.name = 'AbInconsistentError';
  }
}

const hex2 = (v: number): string => `0x${v.toString(16).padStart(2, '0')}`;

/**
 * Checks a paused `ab` VM's RAM range (`ram` holds exactly the guest's range: whole pages).
 * Throws RangeError when the input itself is unusable (empty, not whole pages).
 */
export function checkAbConsistency(ram: Uint8Array, opts: AbCheckOptions = {}): AbCheckResult {
  const pageSize = opts.pageSize ?? AB_PAGE_SIZE;
  if (!Number.isInteger(pageSize) || pageSize <= 0)
    throw new RangeError(`page size must be a positive integer, got ${pageSize}`);
  if (ram.length === 0) throw new RangeError('the a-b range is empty');
  if (ram.length % pageSize !== 0) {
    throw new RangeError(
      `the a-b range must be whole pages: ${ram.length} bytes is not a multiple of ${pageSize}`,
    );
  }
  const pages = ram.length / pageSize;
  const where = (page: number): string =>
    opts.baseAddress !== undefined
      ? `page ${page} (0x${(opts.baseAddress + page * pageSize).toString(16).padStart(8, '0')})`
      : `page ${page} (offset 0x${(page * pageSize).toString(16)})`;
  const newer = ram[0]!;
  const older = (newer + 255) & 0xff;
  let edge: number | null = null;
  for (let page = 1; page < pages; page++) {
    const value = ram[page * pageSize]!;
    const expected = edge === null ? newer : older;
    if (value === expected) continue;
    if (edge === null && value === older) {
      edge = page;
      continue;
    }
    const prev = ram[(page - 1) * pageSize]!;
    const description =
      edge === null
        ? `inconsistent: ${where(page)} holds ${hex2(value)} after ${hex2(prev)}; expected ${hex2(newer)} or a drop by one to ${hex2(older)}`
        : value === ((older + 255) & 0xff)
          ? `inconsistent: a second edge at ${where(page)} (${hex2(prev)} -> ${hex2(value)}) after the edge at ${where(edge)}`
          : `inconsistent: ${where(page)} holds ${hex2(value)} after the edge at ${where(edge)}; expected ${hex2(older)}`;
    return { consistent: false, pages, newer, edge: null, badPage: page, description };
  }
  const description =
    edge === null
      ? `consistent: all ${pages} pages hold ${hex2(newer)} (paused between passes)`
      : `consistent: pages 0..${edge - 1} hold ${hex2(newer)}, pages ${edge}..${pages - 1} hold ${hex2(older)} (the pass had reached ${where(edge)})`;
  return { consistent: true, pages, newer, edge, badPage: null, description };
}

/** Like {@link checkAbConsistency} but throws {@link AbInconsistentError} when inconsistent. */
export function assertAbConsistent(ram: Uint8Array, opts: AbCheckOptions = {}): AbCheckResult {
  const result = checkAbConsistency(ram, opts);
  if (!result.consistent) throw new AbInconsistentError(result);
  return result;
}

/** The range line `ab` prints before its `A`. */
export interface AbBanner {
  /** First page (guest-physical, inclusive). */
  readonly start: number;
  /** End of the range (exclusive). */
  readonly end: number;
  readonly pages: number;
  /** Passes per `B`. */
  readonly every: number;
}

const BANNER = /ab: range 0x([0-9a-f]{8})\.\.0x([0-9a-f]{8}), (\d+) pages, every (\d+) passes/;

/** Finds and parses the guest's banner (`ab: range 0x80013000..0x87e00000, 32237 pages, every 16 passes`) in console text. */
export function parseAbBanner(text: string): AbBanner | null {
  const m = BANNER.exec(text);
  if (m === null) return null;
  return {
    start: parseInt(m[1]!, 16),
    end: parseInt(m[2]!, 16),
    pages: Number(m[3]),
    every: Number(m[4]),
  };
}
