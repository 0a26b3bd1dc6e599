import { afterAll, describe, expect, it } from 'vitest';

import { PAGE_SIZE, mapFile, readSmapsRollup, type Mapping } from './index.js';
import { removeScratchFiles, scratchFile } from './testing/helpers.js';

afterAll(removeScratchFiles);

const MiB = 2 ** 20;
const TEMPLATE = 256 * MiB;
const CLONES = 10;

/** Read one byte of every page, as a booting clone would touch its RAM. */
function touchEveryPage(ram: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < ram.length; i += PAGE_SIZE) sum += ram[i] as number;
  return sum;
}

const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;

describe('PSS of clones', () => {
  it(`${CLONES} private mappings of one ${TEMPLATE / MiB} MiB template cost ~1 template in PSS, ~${CLONES} in RSS`, () => {
    const path = scratchFile('template', TEMPLATE, (i) => (i >>> 12) & 0xff);
    const before = readSmapsRollup();
    const clones: Mapping[] = [];
    let checksum = 0;
    for (let c = 0; c < CLONES; c++) {
      const clone = mapFile(path, { sharing: 'private' });
      clones.push(clone);
      checksum += touchEveryPage(new Uint8Array(clone.buffer));
    }
    const after = readSmapsRollup();
    const rss = after.rss - before.rss;
    const pss = after.pss - before.pss;
    const one = clones[0]?.usage();

    // Clone 0 writes 100 pages: those, and only those, become its own copies.
    new Uint8Array(clones[0]?.buffer ?? new SharedArrayBuffer(0)).fill(1, 0, 100 * PAGE_SIZE);
    const written = clones[0]?.usage();
    const afterWrite = readSmapsRollup();

    console.info(
      `[shm pss] ${CLONES} clones of ${mib(TEMPLATE)}: RSS +${mib(rss)} (${(rss / TEMPLATE).toFixed(2)}x), ` +
        `PSS +${mib(pss)} (${(pss / TEMPLATE).toFixed(2)}x); one clone: RSS ${mib(one?.rss ?? 0)}, ` +
        `PSS ${mib(one?.pss ?? 0)}; after it wrote 100 pages: anonymous ${mib(written?.anonymous ?? 0)}, ` +
        `process PSS +${mib(afterWrite.pss - after.pss)}`,
    );
    expect(checksum).toBeGreaterThan(0);
    expect(rss).toBeGreaterThan(0.95 * CLONES * TEMPLATE);
    expect(rss).toBeLessThan(1.05 * CLONES * TEMPLATE);
    expect(pss).toBeLessThan(2 * TEMPLATE);
    expect(pss).toBeGreaterThan(0.9 * TEMPLATE);
    expect(one?.rss).toBe(TEMPLATE);
    expect(one?.pss).toBeLessThan((1.1 * TEMPLATE) / CLONES);
    expect(written?.anonymous).toBe(100 * PAGE_SIZE);

    for (const clone of clones) clone.close();
    const closed = readSmapsRollup();
    expect(closed.rss).toBeLessThan(before.rss + 0.1 * TEMPLATE);
  }, 120_000);
});
