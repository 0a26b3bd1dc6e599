import { closeSync, openSync, readSync, writeSync } from 'node:fs';

import { afterAll, beforeEach, describe, expect, it } from 'vitest';

import {
  PAGE_SIZE,
  addSeals,
  createMemfd,
  fallocate,
  getSeals,
  mapFd,
  mapFile,
  mappingStats,
  type Mapping,
} from './index.js';
import {
  collectUntil,
  expectSameBytes,
  expectShmError,
  mapsContain,
  readFileBytes,
  removeScratchFiles,
  scratchFile,
  scratchPath,
} from './testing/helpers.js';

afterAll(removeScratchFiles);

const PAGES = 16;
const SIZE = PAGES * PAGE_SIZE;

describe('shared mappings', () => {
  it('create a sized file and expose it as a SharedArrayBuffer whose writes reach the file', () => {
    const path = scratchPath('create');
    const m = mapFile(path, { create: true, exclusive: true, size: SIZE });
    expect(m.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(m.buffer.byteLength).toBe(SIZE);
    expect(m.length).toBe(SIZE);
    expect(m.sharing).toBe('shared');
    expect(m.bufferKind).toBe('shared');
    expect(typeof m.address).toBe('bigint');

    const ram = new Uint8Array(m.buffer);
    expect(ram.every((b) => b === 0)).toBe(true);
    ram[0] = 0xaa;
    ram[SIZE - 1] = 0xbb;
    m.sync();
    const file = readFileBytes(path, 0, SIZE);
    expect(file[0]).toBe(0xaa);
    expect(file[SIZE - 1]).toBe(0xbb);
    m.close();
  });

  it('see writes made through the file descriptor, and map a window at a page offset', () => {
    const path = scratchFile('window', SIZE);
    const m = mapFile(path, { offset: 2 * PAGE_SIZE, length: 3 * PAGE_SIZE });
    expect(m.fileOffset).toBe(2 * PAGE_SIZE);
    const view = m.bytes();
    expect(view.length).toBe(3 * PAGE_SIZE);
    expect(view[0]).toBe(readFileBytes(path, 2 * PAGE_SIZE, 1)[0]);
    const fd = openSync(path, 'r+');
    writeSync(fd, Uint8Array.of(0x5a), 0, 1, 2 * PAGE_SIZE + 7);
    closeSync(fd);
    expect(view[7]).toBe(0x5a);
    m.close();
  });

  it('map a length that is not a page multiple', () => {
    const path = scratchFile('odd', PAGE_SIZE + 100);
    const m = mapFile(path);
    expect(m.length).toBe(PAGE_SIZE + 100);
    expect(m.bytes(PAGE_SIZE, 100)[99]).toBe(readFileBytes(path, PAGE_SIZE + 99, 1)[0]);
    const tail = readFileBytes(path, PAGE_SIZE, 100);
    m.advise('dontneed', PAGE_SIZE, 100); // reaches the end: a partial last page is fine
    // On a shared mapping the pages live in the file: dropping them keeps every byte.
    expectSameBytes(m.bytes(PAGE_SIZE, 100), tail);
    m.close();
  });

  it("'remove' frees the file's pages: every mapper reads zeros and residency drops", () => {
    const path = scratchFile('remove', SIZE);
    const m = mapFile(path);
    expect(m.residentPages()).toBe(PAGES);
    m.advise('remove', 4 * PAGE_SIZE, 2 * PAGE_SIZE);
    expect(m.residentPages()).toBe(PAGES - 2);
    expect(readFileBytes(path, 4 * PAGE_SIZE, 2 * PAGE_SIZE).every((b) => b === 0)).toBe(true);
    expect(m.bytes(3 * PAGE_SIZE, 1)[0]).not.toBe(0);
    m.close();
  });

  it('accept willneed, sequential, random and normal advice, which change no byte and drop no page', () => {
    const path = scratchFile('advice', SIZE);
    const m = mapFile(path);
    const before = readFileBytes(path, 0, SIZE);
    expect(m.residentPages()).toBe(PAGES);
    for (const advice of ['willneed', 'sequential', 'random', 'normal'] as const) {
      m.advise(advice);
      expect(m.residentPages(), advice).toBe(PAGES);
      expectSameBytes(m.bytes(), before);
    }
    m.bytes()[0] = before[0]! ^ 0xff;
    m.sync(0, PAGE_SIZE, { async: true, invalidate: true });
    // Invalidating asks other mappings of the file to see new values; it never discards ours.
    expect(m.bytes(0, 1)[0]).toBe(before[0]! ^ 0xff);
    expect(readFileBytes(path, 0, 1)[0]).toBe(before[0]! ^ 0xff);
    m.close();
  });
});

describe('private (copy-on-write) mappings', () => {
  it('keep writes private: the file and a shared mapping of it are unchanged', () => {
    const path = scratchFile('private', SIZE);
    const original = readFileBytes(path, 0, SIZE);
    const shared = mapFile(path);
    const clone = mapFile(path, { sharing: 'private' });
    const cloneRam = new Uint8Array(clone.buffer);
    expectSameBytes(cloneRam, original);

    cloneRam.fill(0xee, 0, 2 * PAGE_SIZE);
    expect(cloneRam[0]).toBe(0xee);
    expectSameBytes(readFileBytes(path, 0, SIZE), original);
    expectSameBytes(new Uint8Array(shared.buffer), original);
    expect(clone.usage().anonymous).toBe(2 * PAGE_SIZE); // the copies

    // A kernel fact the memory model rests on: pages the clone has not written still follow the
    // file, pages it wrote do not. Templates must therefore never change once sealed.
    const sharedRam = new Uint8Array(shared.buffer);
    sharedRam[5 * PAGE_SIZE] = 0x11;
    sharedRam[0] = 0x22;
    expect(cloneRam[5 * PAGE_SIZE]).toBe(0x11);
    expect(cloneRam[0]).toBe(0xee);
    shared.close();
    clone.close();
  });

  it("'dontneed' drops private changes and reads back the file's content", () => {
    const path = scratchFile('dontneed', SIZE);
    const original = readFileBytes(path, 0, SIZE);
    const clone = mapFile(path, { sharing: 'private' });
    const ram = new Uint8Array(clone.buffer);
    ram.fill(0x77);
    expect(ram[PAGE_SIZE]).toBe(0x77);
    clone.advise('dontneed', 0, 4 * PAGE_SIZE);
    expectSameBytes(ram.subarray(0, 4 * PAGE_SIZE), original.subarray(0, 4 * PAGE_SIZE));
    expect(ram[4 * PAGE_SIZE]).toBe(0x77); // outside the advised range: still private
    clone.close();
  });

  it("refuse 'remove' with SHM_UNSUPPORTED and leave the mapping intact", () => {
    const path = scratchFile('private-remove', SIZE);
    const clone = mapFile(path, { sharing: 'private' });
    const err = expectShmError(() => clone.advise('remove'), 'SHM_UNSUPPORTED');
    expect(err.errno).toMatch(/^E[A-Z]+$/); // EACCES on Linux 6.x, EINVAL on older kernels
    expect(err.syscall).toBe('madvise');
    expect(err.message).toMatch(/dontneed/);
    expect(clone.bytes(0, 1)[0]).toBe(1);
    clone.close();
  });

  it("pre-fault with 'populate-read' without copying pages", () => {
    const path = scratchFile('populate', SIZE);
    const clone = mapFile(path, { sharing: 'private' });
    clone.advise('populate-read');
    const usage = clone.usage();
    expect(usage.rss).toBe(SIZE);
    expect(usage.anonymous).toBe(0);
    clone.close();
  });
});

describe('residency (mincore)', () => {
  it('changes after touching pages of a sparse file', () => {
    const path = scratchPath('mincore');
    const m = mapFile(path, { create: true, size: SIZE });
    expect(m.residentPages()).toBe(0);
    const ram = new Uint8Array(m.buffer);
    ram[0] = 1;
    ram[3 * PAGE_SIZE + 10] = 1;
    ram[SIZE - 1] = 1;
    expect(m.residentPages()).toBe(3);
    expect(m.residentPages(PAGE_SIZE, 2 * PAGE_SIZE)).toBe(0);
    const expected = new Uint8Array(PAGES);
    expected[0] = expected[3] = expected[PAGES - 1] = 1;
    expect(m.residency()).toEqual(expected);

    const out = new Uint8Array(PAGES + 8).fill(9);
    const vec = m.residency(2 * PAGE_SIZE, 2 * PAGE_SIZE, out);
    expect(vec.buffer).toBe(out.buffer);
    expect(Array.from(vec)).toEqual([0, 1]);

    m.advise('remove');
    expect(m.residentPages()).toBe(0);
    m.close();
  });

  it('usage() reports this mapping from /proc/self/smaps', () => {
    const path = scratchPath('usage');
    const m = mapFile(path, { create: true, size: SIZE });
    expect(m.usage().rss).toBe(0);
    new Uint8Array(m.buffer).fill(3, 0, 5 * PAGE_SIZE);
    const usage = m.usage();
    expect(usage.rss).toBe(5 * PAGE_SIZE);
    expect(usage.pss).toBe(5 * PAGE_SIZE);
    m.close();
  });
});

describe('close()', { timeout: 30_000 }, () => {
  // Start from a process with no mapping left over from earlier tests, so counts are exact.
  beforeEach(() => collectUntil(() => mappingStats().regions === 0));

  it('detaches a detachable buffer, unmaps, and a second close is harmless', () => {
    const path = scratchFile('detach', SIZE);
    const m: Mapping<ArrayBuffer> = mapFile(path, { bufferKind: 'detachable' });
    const buffer = m.buffer;
    expect(buffer).toBeInstanceOf(ArrayBuffer);
    const view = new Uint8Array(buffer);
    expect(view[0]).toBe(1);
    expect(mapsContain(path)).toBe(true);

    m.close();
    expect(m.closed).toBe(true);
    expect(buffer.byteLength).toBe(0);
    expect(view.length).toBe(0);
    expect(view[0]).toBeUndefined();
    expect(() => view.fill(1)).toThrow(TypeError);
    expect(mapsContain(path)).toBe(false);

    m.close();
    expectShmError(() => m.buffer, 'SHM_CLOSED');
    expectShmError(() => m.bytes(), 'SHM_CLOSED');
    expectShmError(() => m.advise('dontneed'), 'SHM_CLOSED');
    expectShmError(() => m.sync(), 'SHM_CLOSED');
    expectShmError(() => m.residentPages(), 'SHM_CLOSED');
    expectShmError(() => m.residency(), 'SHM_CLOSED');
    expectShmError(() => m.usage(), 'SHM_CLOSED');
  });

  it('revokes a shared buffer: the file is released, stale views read zeros and cannot write', async () => {
    const path = scratchFile('revoke', SIZE);
    const before = 0;
    // In a plain function, so that no suspended async frame keeps the view alive afterwards.
    (() => {
      const m = mapFile(path);
      const stale = new Uint8Array(m.buffer);
      expect(stale[0]).toBe(1);
      expect(mappingStats().regions).toBe(before + 1);

      m.close();
      m.close();
      expect(mapsContain(path)).toBe(false);
      expectShmError(() => m.buffer, 'SHM_CLOSED');
      expect(stale.length).toBe(SIZE); // a SharedArrayBuffer cannot be detached ...
      expect(stale[0]).toBe(0); // ... but it no longer shows the file
      stale.fill(0x42);
      expect(readFileBytes(path, 0, 4)).toEqual(Uint8Array.of(1, 2, 3, 4));
      expect(mappingStats().regions).toBe(before + 1); // the range stays reserved for the view
    })();
    await collectUntil(() => mappingStats().regions === before);
  });

  it.each(['shared', 'detachable'] as const)(
    'is not needed for safety: dropping a mapping and its %s buffer unmaps it after GC',
    async (bufferKind) => {
      const path = scratchFile(`gc-${bufferKind}`, SIZE);
      (() => {
        const m = mapFile(path, { bufferKind });
        expect(new Uint8Array(m.buffer)[0]).toBe(1);
      })();
      expect(mapsContain(path)).toBe(true);
      await collectUntil(() => mappingStats().regions === 0 && !mapsContain(path));
    },
  );

  it('keeps the memory valid while a view outlives its dropped Mapping', async () => {
    const path = scratchFile('outlive', SIZE);
    const view = (() => new Uint8Array(mapFile(path).buffer))();
    await collectUntil(() => true);
    for (let i = 0; i < 5; i++) {
      await collectUntil(() => true);
      expect(view[PAGE_SIZE]).toBe(readFileBytes(path, PAGE_SIZE, 1)[0]);
    }
    view[0] = 0x99;
    expect(readFileBytes(path, 0, 1)[0]).toBe(0x99);
  });
});

describe('memfd', () => {
  it('maps a memfd shared, and seals it into an immutable template', () => {
    const fd = createMemfd('handoff-test-template', { size: SIZE, allowSealing: true });
    try {
      const writer = mapFd(fd);
      new Uint8Array(writer.buffer).fill(0x3c);
      // A writable shared mapping blocks the write seal.
      expectShmError(() => addSeals(fd, ['write']), 'SHM_PERMISSION_DENIED');
      writer.close();
      addSeals(fd, ['shrink', 'grow', 'write', 'seal']);
      expect(getSeals(fd).sort()).toEqual(['grow', 'seal', 'shrink', 'write']);

      const err = expectShmError(() => mapFd(fd), 'SHM_PERMISSION_DENIED');
      expect(err.errno).toBe('EPERM');
      const clone = mapFd(fd, { sharing: 'private' });
      const ram = new Uint8Array(clone.buffer);
      expect(ram[SIZE - 1]).toBe(0x3c);
      ram[0] = 1; // copy-on-write still works on a sealed template
      expect(ram[0]).toBe(1);
      clone.close();
      expectShmError(() => addSeals(fd, ['future-write']), 'SHM_PERMISSION_DENIED');
    } finally {
      closeSync(fd);
    }
  });

  it('stays mapped after its fd is closed', () => {
    const fd = createMemfd('handoff-test-closed-fd', { size: SIZE });
    const m = mapFd(fd);
    closeSync(fd);
    const ram = new Uint8Array(m.buffer);
    ram[10] = 10;
    expect(ram[10]).toBe(10);
    m.close();
  });

  it('fallocate punches holes that read back as zeros', () => {
    const fd = createMemfd('handoff-test-punch', { size: SIZE });
    try {
      const m = mapFd(fd, { allocate: true });
      new Uint8Array(m.buffer).fill(0x10);
      fallocate(fd, PAGE_SIZE, PAGE_SIZE, { punchHole: true });
      const page = new Uint8Array(PAGE_SIZE);
      readSync(fd, page, 0, PAGE_SIZE, PAGE_SIZE);
      expect(page.every((b) => b === 0)).toBe(true);
      expect(m.bytes(PAGE_SIZE, PAGE_SIZE).every((b) => b === 0)).toBe(true);
      expect(m.bytes(0, 1)[0]).toBe(0x10);
      m.close();
    } finally {
      closeSync(fd);
    }
  });
});
