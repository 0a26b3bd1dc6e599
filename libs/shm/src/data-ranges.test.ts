import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';

import { afterAll, describe, expect, it } from 'vitest';

import { PAGE_SIZE, createMemfd, dataRanges, fallocate, fileDataRanges, mapFd } from './index.js';
import { expectShmError, removeScratchFiles, scratchPath } from './testing/helpers.js';

afterAll(removeScratchFiles);

const PAGES = 64;
const SIZE = PAGES * PAGE_SIZE;

describe('dataRanges (SEEK_DATA / SEEK_HOLE)', () => {
  it('reports a sized, never-written memfd as all hole', () => {
    const fd = createMemfd('holes-empty', { size: SIZE });
    try {
      expect(dataRanges(fd)).toEqual([]);
    } finally {
      closeSync(fd);
    }
  });

  it('reports exactly the pages written through a mapping, merged when adjacent', () => {
    const fd = createMemfd('holes-written', { size: SIZE });
    const m = mapFd(fd, { sharing: 'shared', length: SIZE });
    try {
      const b = new Uint8Array(m.buffer);
      b[3 * PAGE_SIZE + 5] = 1;
      b[4 * PAGE_SIZE] = 1;
      b[10 * PAGE_SIZE + PAGE_SIZE - 1] = 1;
      b[63 * PAGE_SIZE] = 1;
      expect(dataRanges(fd)).toEqual([
        [3 * PAGE_SIZE, 5 * PAGE_SIZE],
        [10 * PAGE_SIZE, 11 * PAGE_SIZE],
        [63 * PAGE_SIZE, 64 * PAGE_SIZE],
      ]);
      // Clipped to the asked window.
      expect(dataRanges(fd, 4 * PAGE_SIZE, 7 * PAGE_SIZE)).toEqual([
        [4 * PAGE_SIZE, 5 * PAGE_SIZE],
        [10 * PAGE_SIZE, 11 * PAGE_SIZE],
      ]);
      expect(dataRanges(fd, 5 * PAGE_SIZE, 5 * PAGE_SIZE)).toEqual([]);
      expect(dataRanges(fd, 0, 0)).toEqual([]);
    } finally {
      m.close();
      closeSync(fd);
    }
  });

  it('reports a punched page as a hole again', () => {
    const fd = createMemfd('holes-punch', { size: SIZE });
    const m = mapFd(fd, { sharing: 'shared', length: SIZE });
    try {
      const b = new Uint8Array(m.buffer);
      b.fill(9, 8 * PAGE_SIZE, 12 * PAGE_SIZE);
      fallocate(fd, 9 * PAGE_SIZE, PAGE_SIZE, { punchHole: true });
      expect(dataRanges(fd)).toEqual([
        [8 * PAGE_SIZE, 9 * PAGE_SIZE],
        [10 * PAGE_SIZE, 12 * PAGE_SIZE],
      ]);
      expect(b[9 * PAGE_SIZE]).toBe(0);
    } finally {
      m.close();
      closeSync(fd);
    }
  });

  it('reads a file by path, with write() data and ftruncate holes', () => {
    const path = scratchPath('holes');
    const fd = openSync(path, 'w', 0o600);
    try {
      ftruncateSync(fd, SIZE);
      writeSync(fd, new Uint8Array(2 * PAGE_SIZE).fill(1), 0, 2 * PAGE_SIZE, 20 * PAGE_SIZE);
    } finally {
      closeSync(fd);
    }
    expect(fileDataRanges(path)).toEqual([[20 * PAGE_SIZE, 22 * PAGE_SIZE]]);
    expect(fileDataRanges(path, 21 * PAGE_SIZE)).toEqual([[21 * PAGE_SIZE, 22 * PAGE_SIZE]]);
  });

  it('rejects bad arguments and missing files with ShmErrors', () => {
    expectShmError(() => dataRanges(-1), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => dataRanges(0, -4), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => dataRanges(123456), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => fileDataRanges(scratchPath('missing')), 'SHM_NOT_FOUND');
  });
});
