import { closeSync, openSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

import { afterAll, describe, expect, it } from 'vitest';

import { PAGE_SIZE, mapFile } from './index.js';
import {
  expectSameBytes,
  expectShmError,
  readFileBytes,
  removeScratchFiles,
  scratchFile,
} from './testing/helpers.js';

afterAll(removeScratchFiles);

const PAGES = 8;
const SIZE = PAGES * PAGE_SIZE;

/** A base file whose bytes are 0x10 + page, and a layer file whose bytes are 0xa0 + page. */
function baseAndLayer(tag: string) {
  const base = scratchFile(`${tag}-base`, SIZE, (i) => 0x10 + Math.floor(i / PAGE_SIZE));
  const layer = scratchFile(`${tag}-layer`, SIZE, (i) => 0xa0 + Math.floor(i / PAGE_SIZE));
  return { base, layer };
}

/** The first byte of each page of `ram`. */
function pageMarks(ram: Uint8Array): number[] {
  return Array.from({ length: ram.length / PAGE_SIZE }, (_, p) => ram[p * PAGE_SIZE]!);
}

/** How many lines of /proc/self/maps map `path`. */
function vmasOf(path: string): number {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.endsWith(` ${path}`)).length;
}

describe('overlay', () => {
  it('shows the overlaid file in its range and the base elsewhere, through the same buffer', () => {
    const { base, layer } = baseAndLayer('ov-contents');
    const m = mapFile(base, { sharing: 'private' });
    const buffer = m.buffer;
    const ram = new Uint8Array(buffer); // a view made before the overlay
    const address = m.address;

    m.overlay(layer, 2 * PAGE_SIZE, 2 * PAGE_SIZE);
    m.overlay(layer, 6 * PAGE_SIZE, PAGE_SIZE);

    expect(m.buffer).toBe(buffer);
    expect(m.address).toBe(address);
    expect(pageMarks(ram)).toEqual([0x10, 0x11, 0xa2, 0xa3, 0x14, 0x15, 0xa6, 0x17]);
    // whole pages, not just their first bytes
    expectSameBytes(
      ram.subarray(3 * PAGE_SIZE, 4 * PAGE_SIZE),
      readFileBytes(layer, 3 * PAGE_SIZE, PAGE_SIZE),
    );
    expect(vmasOf(layer)).toBe(2);
    m.close();
    expect(vmasOf(layer)).toBe(0);
    expect(vmasOf(base)).toBe(0);
  });

  it('keeps writes private: neither file changes, and a second mapper sees neither write', () => {
    const { base, layer } = baseAndLayer('ov-private');
    const baseBefore = readFileBytes(base, 0, SIZE);
    const layerBefore = readFileBytes(layer, 0, SIZE);
    const m = mapFile(base, { sharing: 'private' });
    m.overlay(layer, PAGE_SIZE, PAGE_SIZE);
    const ram = new Uint8Array(m.buffer);
    ram[PAGE_SIZE + 7] = 0xee; // in the overlay
    ram[3 * PAGE_SIZE + 7] = 0xdd; // in the base
    expect(ram[PAGE_SIZE + 7]).toBe(0xee);
    expect(ram[3 * PAGE_SIZE + 7]).toBe(0xdd);
    expectSameBytes(readFileBytes(base, 0, SIZE), baseBefore);
    expectSameBytes(readFileBytes(layer, 0, SIZE), layerBefore);
    const other = mapFile(base, { sharing: 'private' });
    other.overlay(layer, PAGE_SIZE, PAGE_SIZE);
    expect(other.bytes(PAGE_SIZE + 7, 1)[0]).toBe(0xa1);
    expect(other.bytes(3 * PAGE_SIZE + 7, 1)[0]).toBe(0x13);
    other.close();
    expect(m.usage().anonymous).toBeGreaterThanOrEqual(2 * PAGE_SIZE); // the two copies
    m.close();
  });

  it('drops copies made in its range before, takes an fd and a file offset', () => {
    const { base, layer } = baseAndLayer('ov-fd');
    const m = mapFile(base, { sharing: 'private' });
    const ram = new Uint8Array(m.buffer);
    ram[4 * PAGE_SIZE] = 0x01; // a copy the overlay replaces
    const fd = openSync(layer, 'r');
    try {
      m.overlay(fd, 4 * PAGE_SIZE, PAGE_SIZE, { fileOffset: 7 * PAGE_SIZE });
      expect(ram[4 * PAGE_SIZE]).toBe(0xa7);
      // the fd stays the caller's
      expect(() => readFileBytes(layer, 0, 1)).not.toThrow();
    } finally {
      closeSync(fd);
    }
    expect(pageMarks(ram)).toEqual([0x10, 0x11, 0x12, 0x13, 0xa7, 0x15, 0x16, 0x17]);
    m.close();
  });

  it('is seen by a worker holding the buffer', async () => {
    const { base, layer } = baseAndLayer('ov-worker');
    const m = mapFile(base, { sharing: 'private' });
    const worker = new Worker(
      `const { parentPort } = require('node:worker_threads');
       parentPort.on('message', (msg) => {
         if (msg.buffer) { globalThis.ram = new Uint8Array(msg.buffer); parentPort.postMessage('held'); return; }
         parentPort.postMessage(globalThis.ram[msg.at]);
       });`,
      { eval: true },
    );
    try {
      worker.postMessage({ buffer: m.buffer });
      expect((await once(worker, 'message'))[0]).toBe('held');
      m.overlay(layer, 5 * PAGE_SIZE, PAGE_SIZE);
      worker.postMessage({ at: 5 * PAGE_SIZE + 1 });
      expect((await once(worker, 'message'))[0]).toBe(0xa5);
    } finally {
      await worker.terminate();
      m.close();
    }
  });

  it('refuses bad ranges, short files, shared mappings and a remap afterwards, leaving the mapping as it was', () => {
    const { base, layer } = baseAndLayer('ov-refuse');
    const short = scratchFile('ov-short', 2 * PAGE_SIZE);
    const m = mapFile(base, { sharing: 'private' });
    const before = m.bytes().slice();
    expectShmError(() => m.overlay(layer, 1, PAGE_SIZE), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => m.overlay(layer, 0, PAGE_SIZE + 1), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => m.overlay(layer, 0, 0), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => m.overlay(layer, -PAGE_SIZE, PAGE_SIZE), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => m.overlay(layer, 0, PAGE_SIZE, { fileOffset: 3 }), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => m.overlay(layer, 7 * PAGE_SIZE, 2 * PAGE_SIZE), 'SHM_OUT_OF_RANGE');
    expectShmError(() => m.overlay(short, 0, 3 * PAGE_SIZE), 'SHM_OUT_OF_RANGE');
    expectShmError(
      () => m.overlay(layer, 0, 2 * PAGE_SIZE, { fileOffset: 7 * PAGE_SIZE }),
      'SHM_OUT_OF_RANGE',
    );
    expectShmError(() => m.overlay('/dev/shm/handoff-no-such-file', 0, PAGE_SIZE), 'SHM_NOT_FOUND');
    expectShmError(() => m.overlay('/dev/shm', 0, PAGE_SIZE), 'SHM_INVALID_ARGUMENT');
    expectSameBytes(m.bytes(), before);

    m.overlay(layer, 0, PAGE_SIZE);
    expectShmError(() => m.remap('shared'), 'SHM_INVALID_ARGUMENT');
    expect(m.bytes(0, 1)[0]).toBe(0xa0);
    m.close();
    expectShmError(() => m.overlay(layer, 0, PAGE_SIZE), 'SHM_CLOSED');

    const shared = mapFile(base);
    expectShmError(() => shared.overlay(layer, 0, PAGE_SIZE), 'SHM_INVALID_ARGUMENT');
    shared.close();
  });

  it('overlays many ranges of one file in one call, all checked before any is mapped', () => {
    const { base, layer } = baseAndLayer('ov-ranges');
    const m = mapFile(base, { sharing: 'private' });
    const ram = new Uint8Array(m.buffer);
    const before = m.bytes().slice();
    expectShmError(
      () =>
        m.overlayRanges(layer, [
          [0, PAGE_SIZE],
          [3 * PAGE_SIZE, PAGE_SIZE + 1],
        ]),
      'SHM_INVALID_ARGUMENT',
    );
    expectShmError(
      () =>
        m.overlayRanges(layer, [
          [0, PAGE_SIZE],
          [7 * PAGE_SIZE, 2 * PAGE_SIZE],
        ]),
      'SHM_OUT_OF_RANGE',
    );
    expectShmError(
      () => m.overlayRanges(layer, [[0, PAGE_SIZE], 5 as unknown as [number, number]]),
      'SHM_INVALID_ARGUMENT',
    );
    expectSameBytes(m.bytes(), before); // nothing was mapped
    m.overlayRanges(layer, []);
    m.overlayRanges(layer, [
      [PAGE_SIZE, 2 * PAGE_SIZE],
      [5 * PAGE_SIZE, PAGE_SIZE],
      [7 * PAGE_SIZE, PAGE_SIZE],
    ]);
    expect(pageMarks(ram)).toEqual([0x10, 0xa1, 0xa2, 0x13, 0x14, 0xa5, 0x16, 0xa7]);
    expectShmError(() => m.remap('shared'), 'SHM_INVALID_ARGUMENT');
    m.close();
  });
});
