import { describe, expect, it } from 'vitest';
import { CODE_CHUNK_PAGES, CODE_PAGE_INTS, CODE_SLOT_INTS } from './code-pages.js';
import { RamBlock } from './ram-block.js';

const blank = (): Int32Array => {
  const page = new Int32Array(CODE_PAGE_INTS);
  page[CODE_PAGE_INTS - CODE_SLOT_INTS] = 99; // the end marker past the last slot stays
  return page;
};

/** Gives `block` a code entry at `p` with one decoded slot and a translation, as the CPU does. */
function decode(block: RamBlock, p: number): Int32Array {
  const entry = block.openCode(p, blank);
  entry.code[0] = 7;
  entry.translated = () => 0;
  return entry.code;
}

const block = (pages: number, shareCode = false) =>
  new RamBlock({ id: 'ram0', guestBase: 0x8000_0000, size: 4096 * pages, shareCode });

describe('RamBlock.flushCode', () => {
  it('forgets every decoded private page and translation, whatever their bit position', () => {
    const b = block(2048);
    const pages = [0, 1, 31, 32, 63, 1000, 2047].map((p) => [p, decode(b, p)] as const);
    b.flushCode();
    for (const [p, page] of pages) {
      expect(page[0], `page ${p}`).toBe(0);
      expect(page[CODE_PAGE_INTS - CODE_SLOT_INTS], `page ${p} end marker`).toBe(99);
      expect(b.code(p)!.translated, `page ${p} translation`).toBeUndefined();
      expect(b.code(p)!.code).toBe(page); // the page itself is kept for reuse
    }
    expect(b.codePageCount).toBe(pages.length);
  });

  it('lets shared pages go: the next run attaches again', () => {
    const b = block(64, true);
    b.u8[5 * 4096] = 0x13;
    const page = decode(b, 5);
    expect(b.code(5)!.shared).toBeDefined();
    b.flushCode();
    expect(b.code(5)).toBeUndefined();
    expect(b.codePageCount).toBe(0);
    expect(b.codeBits[0]! & (1 << 5)).toBe(0);
    expect(page[0]).toBe(7); // the shared slots are never cleared
  });
});

describe('RamBlock code table', () => {
  it('is sparse: no entry until a page runs code, chunks made on first use', () => {
    const b = block(1 << 19); // 2 GiB of pages (no RAM touched: the buffer is never written)
    for (const p of [0, CODE_CHUNK_PAGES - 1, CODE_CHUNK_PAGES, (1 << 19) - 1]) {
      expect(b.code(p)).toBeUndefined();
      const entry = b.openCode(p, blank);
      expect(b.code(p)).toBe(entry);
      expect(b.openCode(p, blank)).toBe(entry);
      expect((b.codeBits[p >>> 5]! >>> (p & 31)) & 1).toBe(1);
    }
    expect(b.code(1)).toBeUndefined();
    expect(b.codePageCount).toBe(4);
  });

  it('a write into a page with shared slots gives it a private copy and leaves the shared ones', () => {
    const a = block(16, true);
    const c = block(16, true);
    for (const b of [a, c]) b.u8.set([0x93, 0, 0x10, 0], 3 * 4096); // the same bytes in both
    const ea = a.openCode(3, blank);
    const ec = c.openCode(3, blank);
    expect(ea.shared).toBeDefined();
    expect(ec.code).toBe(ea.code);
    ea.code[0] = 7; // decoded by one, seen by both
    ea.translated = () => 0;
    a.u8[3 * 4096] = 0x13;
    a.noteWrite(3 * 4096, 1);
    expect(ea.shared).toBeUndefined();
    expect(ea.code).not.toBe(ec.code);
    expect(ea.code[0]).toBe(0); // the written slot is forgotten in the private copy
    expect(ea.translated).toBeUndefined();
    expect(ec.code[0]).toBe(7); // the other block's slots are untouched
  });

  it('attaches only to a shared page with the same bytes', () => {
    const a = block(16, true);
    const c = block(16, true);
    a.u8[4096 * 2] = 1;
    c.u8[4096 * 2] = 2;
    const ea = a.openCode(2, blank);
    const ec = c.openCode(2, blank);
    expect(ea.code).not.toBe(ec.code);
    const d = new RamBlock({
      id: 'ram0',
      guestBase: 0x8000_0000,
      size: 4096 * 32,
      shareCode: true,
    });
    d.u8[4096 * 2] = 1;
    expect(d.openCode(2, blank).code).not.toBe(ea.code); // another geometry: another key
  });
});
