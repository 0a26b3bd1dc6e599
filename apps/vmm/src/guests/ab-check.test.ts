import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createMachine } from '../machine/machine.js';
import {
  AbInconsistentError,
  assertAbConsistent,
  checkAbConsistency,
  parseAbBanner,
} from './ab-check.js';

const PAGE = 4096;

/** A range of `values.length` pages whose first bytes are `values` (the rest of each page is noise). */
function pages(values: readonly number[], pageSize = PAGE): Uint8Array {
  const ram = new Uint8Array(values.length * pageSize);
  for (let k = 0; k < ram.length; k++) ram[k] = (k * 7 + 3) & 0xff;
  values.forEach((v, i) => (ram[i * pageSize] = v));
  return ram;
}

/** What a paused guest leaves: pages before `edge` at `newer`, the rest one less. */
function paused(count: number, newer: number, edge: number): number[] {
  return Array.from({ length: count }, (_, i) => (i < edge ? newer : (newer + 255) & 0xff));
}

describe('checkAbConsistency', () => {
  it('accepts a range paused between passes (all equal)', () => {
    const r = checkAbConsistency(pages([7, 7, 7, 7]));
    expect(r).toMatchObject({ consistent: true, pages: 4, newer: 7, edge: null, badPage: null });
    expect(r.description).toBe('consistent: all 4 pages hold 0x07 (paused between passes)');
  });

  it('accepts one drop by one and reports where the pass was', () => {
    const r = checkAbConsistency(pages([9, 9, 9, 8, 8]), { baseAddress: 0x80013000 });
    expect(r).toMatchObject({ consistent: true, newer: 9, edge: 3 });
    expect(r.description).toContain('page 3 (0x80016000)');
  });

  it('accepts the wrap-around edge 0x00 -> 0xff', () => {
    expect(checkAbConsistency(pages([0, 0, 0xff, 0xff]))).toMatchObject({
      consistent: true,
      newer: 0,
      edge: 2,
    });
    expect(checkAbConsistency(pages([0, 0xff]))).toMatchObject({ consistent: true, edge: 1 });
  });

  it('accepts fresh RAM (all zero), a single page and an edge at the last page', () => {
    expect(checkAbConsistency(new Uint8Array(3 * PAGE)).consistent).toBe(true);
    expect(checkAbConsistency(pages([42])).consistent).toBe(true);
    expect(checkAbConsistency(pages([5, 5, 5, 4])).edge).toBe(3);
  });

  it('looks only at the first byte of each page', () => {
    const ram = pages([1, 1, 0]);
    ram.fill(0xee, 1, PAGE); // the rest of page 0 is not the guest's counter
    expect(checkAbConsistency(ram).consistent).toBe(true);
  });

  it('honours another page size', () => {
    expect(checkAbConsistency(pages([3, 3, 2], 64), { pageSize: 64 }).edge).toBe(2);
  });

  it('rejects a rise (a page from a later pass) with a clear description', () => {
    const r = checkAbConsistency(pages([4, 4, 5, 4]));
    expect(r).toMatchObject({ consistent: false, badPage: 2, edge: null });
    expect(r.description).toBe(
      'inconsistent: page 2 (offset 0x2000) holds 0x05 after 0x04; expected 0x04 or a drop by one to 0x03',
    );
  });

  it('rejects a drop by two (a page two passes behind)', () => {
    const r = checkAbConsistency(pages([4, 4, 2, 2]));
    expect(r).toMatchObject({ consistent: false, badPage: 2 });
  });

  it('rejects two edges', () => {
    const r = checkAbConsistency(pages([6, 5, 5, 4]), { baseAddress: 0x80000000 });
    expect(r).toMatchObject({ consistent: false, badPage: 3 });
    expect(r.description).toBe(
      'inconsistent: a second edge at page 3 (0x80003000) (0x05 -> 0x04) after the edge at page 1 (0x80001000)',
    );
  });

  it('rejects a page that went back up after the edge (lost write / stale copy)', () => {
    const r = checkAbConsistency(pages([6, 5, 6, 5]));
    expect(r).toMatchObject({ consistent: false, badPage: 2 });
    expect(r.description).toBe(
      'inconsistent: page 2 (offset 0x2000) holds 0x06 after the edge at page 1 (offset 0x1000); expected 0x05',
    );
  });

  it('rejects a zeroed page inside a counted range (a page that was never copied)', () => {
    const values = paused(100, 200, 40);
    values[77] = 0;
    expect(checkAbConsistency(pages(values))).toMatchObject({ consistent: false, badPage: 77 });
  });

  it('refuses unusable input', () => {
    expect(() => checkAbConsistency(new Uint8Array(0))).toThrow(RangeError);
    expect(() => checkAbConsistency(new Uint8Array(PAGE + 1))).toThrow(/whole pages/);
    expect(() => checkAbConsistency(new Uint8Array(PAGE), { pageSize: 0 })).toThrow(RangeError);
  });

  it('assertAbConsistent throws AbInconsistentError carrying the result', () => {
    expect(assertAbConsistent(pages([1, 0])).edge).toBe(1);
    let err: unknown;
    try {
      assertAbConsistent(pages([1, 3]));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AbInconsistentError);
    expect((err as AbInconsistentError).code).toBe('AB_INCONSISTENT');
    expect((err as AbInconsistentError).result.badPage).toBe(1);
    expect((err as AbInconsistentError).message).toMatch(/^inconsistent: page 1/);
  });

  it('property: every pause point of every pass is consistent, with the edge where the pass was', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 0, max: 255 }),
        fc.nat(),
        (count, newer, e) => {
          const edge = e % (count + 1);
          const r = checkAbConsistency(pages(paused(count, newer, edge), 16), { pageSize: 16 });
          expect(r.consistent).toBe(true);
          expect(r.edge).toBe(edge === 0 || edge === count ? null : edge);
        },
      ),
    );
  });

  it('property: changing one counter by anything but what a pass could do is caught', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 3, max: 64 }),
        fc.integer({ min: 0, max: 255 }),
        fc.nat(),
        fc.nat(),
        fc.integer({ min: 2, max: 254 }),
        (count, newer, e, p, delta) => {
          const edge = e % (count + 1);
          const values = paused(count, newer, edge);
          const page = 1 + (p % (count - 2)); // an inner page: its neighbours pin it
          values[page] = (values[page]! + delta) & 0xff;
          expect(checkAbConsistency(pages(values, 16), { pageSize: 16 }).consistent).toBe(false);
        },
      ),
    );
  });
});

describe('parseAbBanner', () => {
  it('reads the range line the guest prints before its A', () => {
    expect(
      parseAbBanner('ab: range 0x80013000..0x87e00000, 32237 pages, every 16 passes\nABBB'),
    ).toEqual({
      start: 0x80013000,
      end: 0x87e00000,
      pages: 32237,
      every: 16,
    });
    expect(parseAbBanner('hello')).toBeNull();
  });
});

describe('the ab guest on the Handoff machine', () => {
  const elf = readFileSync(fileURLToPath(new URL('../../../../guests/ab/ab.elf', import.meta.url)));

  it('stays consistent at every pause point, and prints A then B', () => {
    let console = '';
    const machine = createMachine({
      ramSize: 1 << 20,
      elf,
      timeMode: 'deterministic',
      uartSink: (b) => (console += String.fromCharCode(b)),
    });
    machine.run(200_000); // boot and print the banner
    const banner = parseAbBanner(console);
    expect(banner).not.toBeNull();
    const { start, end } = banner!;
    expect(end - start).toBe(banner!.pages * PAGE);
    const edges = new Set<number | null>();
    // Odd budgets stop the hart at many different places in the pass.
    for (let k = 0; k < 60; k++) {
      machine.run(1_000 + k * 997);
      const r = assertAbConsistent(machine.memory.readBytes(start, end - start), {
        baseAddress: start,
      });
      edges.add(r.edge);
    }
    expect(edges.size).toBeGreaterThan(10); // it really paused mid-pass, at different pages
    expect(console).toMatch(/passes\nAB+$/);
    // A lost page write is caught on the same RAM.
    machine.memory.store(start + 3 * PAGE, 1, machine.memory.load(start + 3 * PAGE, 1) + 2);
    expect(checkAbConsistency(machine.memory.readBytes(start, end - start)).consistent).toBe(false);
  });
});
