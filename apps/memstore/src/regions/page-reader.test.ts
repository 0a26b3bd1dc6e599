import { writeFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Memstore } from '../memstore.js';
import { makeTempDirs, openTestMemstore, type TempDirs } from '../testing/fixtures.js';
import { checkPageRange, PageReader } from './page-reader.js';

let dirs: TempDirs;
let m: Memstore;

beforeEach(() => {
  dirs = makeTempDirs();
  m = openTestMemstore(dirs).memstore;
});

afterEach(() => {
  m.close();
  dirs.cleanup();
});

describe('checkPageRange', () => {
  it('accepts ranges inside the region and refuses the rest with what is allowed', () => {
    m.regions.create({ name: 'r', size: 4n * 4096n, kind: 'volatile' });
    const row = m.catalog.getByName('r')!;
    expect(checkPageRange(row, 0n, 4n)).toEqual({ firstPage: 0, pageCount: 4 });
    expect(checkPageRange(row, 3n, 1n)).toEqual({ firstPage: 3, pageCount: 1 });
    expect(() => checkPageRange(row, 3n, 2n)).toThrow(
      expect.objectContaining({
        code: 'REGION_OUT_OF_RANGE',
        message: expect.stringContaining('4 pages'),
      }),
    );
    expect(() => checkPageRange(row, 2n ** 63n, 1n)).toThrow(
      expect.objectContaining({ code: 'REGION_OUT_OF_RANGE' }),
    );
    expect(() => checkPageRange(row, 0n, 0n)).toThrow(
      expect.objectContaining({ code: 'REGION_INVALID_ARGUMENT' }),
    );
  });
});

describe('PageReader', () => {
  it('reads the pages asked for into the caller buffer', async () => {
    const r = m.regions.create({ name: 'r', size: 4n * 4096n, kind: 'volatile' });
    const content = Buffer.alloc(4 * 4096);
    for (let p = 0; p < 4; p++) content.fill(p + 1, p * 4096, (p + 1) * 4096);
    writeFileSync(r.path, content);
    const reader = await PageReader.open(r.path);
    try {
      const out = await reader.read(Buffer.alloc(8192), 2, 2);
      expect(out.length).toBe(8192);
      expect(out[0]).toBe(3);
      expect(out[8191]).toBe(4);
    } finally {
      await reader.close();
    }
  });
});
