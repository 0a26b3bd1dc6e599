/**
 * Decoded code pages shared between the machines of one thread.
 *
 * Decoding is a pure function of an instruction word, and a translation of a page depends only
 * on its decoded slots and the block's geometry (guest base, size, page address). So machines
 * whose page at the same guest address, in a block of the same geometry, holds the same 4 KiB —
 * a template's clones, the same guest booted in many VMs — can run from one decoded page and
 * one translation plan. The key is the geometry, the page and a hash of its bytes; a machine
 * attaches only when its bytes equal the shared page's copy, so a hash collision or a page the
 * clone changed makes a private page, never a wrong one.
 *
 * The contract that keeps it exact (RamBlock and the CPU hold it): while attached, a machine's
 * page holds exactly {@link SharedCodePage.bytes}, so every slot any sharer decodes is right for
 * all of them. Before anything writes into an attached page (a CPU store, a device or host
 * write), the block gives the entry a private copy of the slots (`RamBlock.privatizeCode`);
 * fence.i and restore let shared pages go. Shared slots are only ever added, never cleared.
 *
 * Pages are held weakly: one lives as long as some machine's entry uses it.
 *
 * @packageDocumentation
 */
import { CODE_SLOTS, type SharedCodePage } from './code-pages.js';

const pages = new Map<string, WeakRef<SharedCodePage>>();
const forget = new FinalizationRegistry<string>((key) => {
  if (pages.get(key)?.deref() === undefined) pages.delete(key);
});

/** FNV-1a over the page's words: cheap, and equality is checked word by word anyway. */
function hashWords(i32: Int32Array, first: number): number {
  let h = 0x811c9dc5 | 0;
  for (let k = first, end = first + CODE_SLOTS; k < end; k++)
    h = Math.imul(h ^ i32[k]!, 0x01000193);
  return h >>> 0;
}

function sameWords(i32: Int32Array, first: number, bytes: Int32Array): boolean {
  for (let k = 0; k < CODE_SLOTS; k++) if (i32[first + k] !== bytes[k]) return false;
  return true;
}

/**
 * The shared decoded page for page `page` of a block at `guestBase` of `size` bytes whose words
 * are `i32`: an existing one when its bytes equal the page's now, a new one (slots from
 * `blank()`, bytes copied) when none has this key, or undefined when another page holds the key
 * (a hash collision: the caller keeps a private page).
 */
export function sharedCodePage(
  guestBase: number,
  size: number,
  page: number,
  i32: Int32Array,
  blank: () => Int32Array,
): SharedCodePage | undefined {
  const first = page * CODE_SLOTS;
  const key = `${guestBase}/${size}/${page}/${hashWords(i32, first)}`;
  const known = pages.get(key)?.deref();
  if (known !== undefined) return sameWords(i32, first, known.bytes) ? known : undefined;
  const fresh: SharedCodePage = {
    bytes: i32.slice(first, first + CODE_SLOTS),
    code: blank(),
    plan: undefined,
  };
  pages.set(key, new WeakRef(fresh));
  forget.register(fresh, key);
  return fresh;
}

/** How many shared pages this thread knows (alive or not yet collected); for tests and benchmarks. */
export function sharedCodePages(): number {
  return pages.size;
}
