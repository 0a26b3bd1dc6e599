import { describe, expect, it } from 'vitest';
import { CODE_PAGE_INTS, CODE_SLOT_INTS } from './code-pages.js';
import { makePageTables, RamBlock } from './ram-block.js';

/** Gives `block` a decode page at `p` with one decoded slot and a translation, as the CPU does. */
function decode(block: RamBlock, p: number): Int32Array {
  const page = new Int32Array(CODE_PAGE_INTS);
  page[0] = 7;
  page[CODE_PAGE_INTS - CODE_SLOT_INTS] = 99; // the end marker past the last slot stays
  block.codePages[p] = page;
  block.codeBits[p >>> 5]! |= 1 << (p & 31);
  block.codePageCount++;
  block.translated[p] = () => 0;
  return page;
}

describe('RamBlock.flushCode', () => {
  it('forgets every decoded page and translation, whatever their bit position', () => {
    const block = new RamBlock({ id: 'ram0', guestBase: 0x8000_0000, size: 4096 * 2048 });
    const pages = [0, 1, 31, 32, 63, 1000, 2047].map((p) => [p, decode(block, p)] as const);
    block.flushCode();
    for (const [p, page] of pages) {
      expect(page[0], `page ${p}`).toBe(0);
      expect(page[CODE_PAGE_INTS - CODE_SLOT_INTS], `page ${p} end marker`).toBe(99);
      expect(block.translated[p], `page ${p} translation`).toBeUndefined();
      expect(block.codePages[p]).toBe(page); // the page itself is kept for reuse
    }
  });
});

describe('RamBlock page tables', () => {
  it('takes tables made ahead of time when they cover every page, else makes its own', () => {
    const big = makePageTables(4096);
    const a = new RamBlock({ id: 'a', guestBase: 0x8000_0000, size: 4096 * 2048, tables: big });
    expect(a.codePages).toBe(big.codePages);
    expect(a.translated).toBe(big.translated);
    const small = makePageTables(16);
    const b = new RamBlock({ id: 'b', guestBase: 0x8000_0000, size: 4096 * 2048, tables: small });
    expect(b.codePages).not.toBe(small.codePages);
    expect(b.codePages.length).toBe(2048);
  });
});
