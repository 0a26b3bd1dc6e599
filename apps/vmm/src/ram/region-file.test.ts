import { mapFile } from '@handoff/shm';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openRegionFile } from './region-file.js';

const PAGE = 4096;
const dir = mkdtempSync(join(tmpdir(), 'handoff-region-file-test-'));
const shm = mkdtempSync('/dev/shm/handoff-region-file-test-');
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(shm, { recursive: true, force: true });
});

/** An empty region file of `pages` pages on disk. */
function regionFile(tag: string, pages: number): string {
  const path = join(dir, tag);
  writeFileSync(path, new Uint8Array(0));
  writeFileSync(path, new Uint8Array(pages * PAGE));
  return path;
}

describe('a region file', () => {
  it('takes whole pages of a mapping O_DIRECT, two writes at once, and holds them after sync', async () => {
    const ram = mapFile(join(shm, 'ram'), { create: true, size: 64 * PAGE });
    const bytes = new Uint8Array(ram.buffer);
    for (let k = 0; k < bytes.length; k += 97) bytes[k] = ((k / 97) & 0xff) | 1;
    const path = regionFile('direct', 64);
    const file = await openRegionFile(path);
    await Promise.all([
      file.write(0, new Uint8Array(ram.buffer, 0, 32 * PAGE)),
      file.write(32 * PAGE, new Uint8Array(ram.buffer, 32 * PAGE, 32 * PAGE)),
    ]);
    await file.sync();
    await file.close();
    await file.close(); // again: nothing
    expect(file.written()).toEqual({ direct: 64 * PAGE, buffered: 0 });
    expect(new Uint8Array(readFileSync(path))).toEqual(bytes);
    ram.close();
  });

  it('writes what O_DIRECT cannot take (a range not page-aligned) through the page cache', async () => {
    const path = regionFile('buffered', 4);
    const file = await openRegionFile(path);
    const data = new Uint8Array(100).fill(0x5c);
    await file.write(PAGE + 7, data);
    const ram = mapFile(join(shm, 'page'), { create: true, size: PAGE });
    new Uint8Array(ram.buffer).fill(0x3d);
    await file.write(2 * PAGE, new Uint8Array(ram.buffer)); // aligned: direct again
    await file.sync();
    await file.close();
    ram.close();
    expect(file.written()).toEqual({ direct: PAGE, buffered: 100 });
    const got = readFileSync(path);
    expect(got.subarray(PAGE + 7, PAGE + 107).every((x) => x === 0x5c)).toBe(true);
    expect(got[PAGE + 6]).toBe(0);
    expect(got.subarray(2 * PAGE, 3 * PAGE).every((x) => x === 0x3d)).toBe(true);
  });
});
