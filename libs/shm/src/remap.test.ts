import { chmodSync, closeSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

import { afterAll, describe, expect, it } from 'vitest';

import { PAGE_SIZE, createMemfd, mapFd, mapFile } from './index.js';
import {
  expectSameBytes,
  expectShmError,
  readFileBytes,
  removeScratchFiles,
  scratchFile,
  scratchPath,
} from './testing/helpers.js';

afterAll(removeScratchFiles);

const PAGES = 8;
const SIZE = PAGES * PAGE_SIZE;

/** The permission field (`rw-s` / `rw-p`) of the /proc/self/maps line that maps `path`. */
function mappedAs(path: string): string | undefined {
  const line = readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .find((l) => l.endsWith(` ${path}`));
  return line?.split(/\s+/)[1];
}

/** The /proc/self/maps lines that map `path`: [start address, permissions]. */
function mappingsOf(path: string): [bigint, string][] {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.endsWith(` ${path}`))
    .map((l) => {
      const [range, perms] = l.split(/\s+/) as [string, string];
      return [BigInt(`0x${range.split('-')[0]!}`), perms];
    });
}

/** A shared mapping of a new scratch file whose pages hold a recognisable pattern. */
function patterned(tag: string) {
  const path = scratchPath(tag);
  const m = mapFile(path, { create: true, exclusive: true, size: SIZE });
  const ram = new Uint8Array(m.buffer);
  for (let k = 0; k < SIZE; k += 97) ram[k] = (k / 97) & 0xff;
  return { path, m, ram };
}

describe('remap', () => {
  it('turns a shared mapping private at the same address: same bytes, same buffer, nothing reaches the file', () => {
    const { path, m, ram } = patterned('remap-private');
    const buffer = m.buffer;
    const address = m.address;
    const before = ram.slice();
    expect(mappedAs(path)).toBe('rw-s');

    m.remap('private');

    expect(m.sharing).toBe('private');
    expect(m.buffer).toBe(buffer);
    expect(m.address).toBe(address);
    expect(mappedAs(path)).toBe('rw-p');
    expectSameBytes(ram, before); // the old view reads the same memory
    ram[5] = 0xee;
    ram[SIZE - 1] = 0xdd;
    expect(ram[5]).toBe(0xee);
    expectSameBytes(readFileBytes(path, 0, SIZE), before); // the file never saw the writes
    // and a second mapper of the file neither
    const other = mapFile(path);
    expect(other.bytes(5, 1)[0]).toBe(before[5]);
    other.close();
    m.close();
  });

  it('maps shared again: writes reach the file, and the private copies are dropped', () => {
    const { path, m, ram } = patterned('remap-back');
    const before = ram.slice();
    m.remap('private');
    ram[0] = 0x77; // a copy-on-write copy, dropped by the remap back
    m.remap('shared');
    expect(m.sharing).toBe('shared');
    expect(mappedAs(path)).toBe('rw-s');
    expect(ram[0]).toBe(before[0]);
    ram[PAGE_SIZE + 3] = 0x55;
    expect(readFileBytes(path, PAGE_SIZE + 3, 1)[0]).toBe(0x55);
    // a write made through the file shows in the mapping: shared again
    const fd = openSync(path, 'r+');
    writeSync(fd, Uint8Array.of(0x66), 0, 1, 2 * PAGE_SIZE);
    closeSync(fd);
    expect(ram[2 * PAGE_SIZE]).toBe(0x66);
    m.close();
  });

  it('keeps a worker thread that holds the buffer on the same memory', async () => {
    const { path, m, ram } = patterned('remap-worker');
    const worker = new Worker(
      `const { parentPort } = require('node:worker_threads');
       let u8;
       parentPort.on('message', (msg) => {
         if (msg.buffer) { u8 = new Uint8Array(msg.buffer); parentPort.postMessage('ok'); }
         else { u8[msg.write] = 0x99; parentPort.postMessage(u8[msg.read]); }
       });`,
      { eval: true, execArgv: [] },
    );
    try {
      worker.postMessage({ buffer: m.buffer });
      await once(worker, 'message');
      m.remap('private');
      ram[10] = 0x31;
      worker.postMessage({ write: 11, read: 10 });
      const [seen] = (await once(worker, 'message')) as [number];
      expect(seen).toBe(0x31); // the worker reads the main thread's private copy
      expect(ram[11]).toBe(0x99); // and the main thread sees the worker's write
      expect(readFileBytes(path, 10, 2)).toEqual(Uint8Array.of(0, 0)); // the file neither
    } finally {
      await worker.terminate();
      m.close();
    }
  });

  it('maps a read-only file private (a sealed template), and a no-op for the current sharing', () => {
    const path = scratchFile('remap-sealed', SIZE, () => 0x21);
    const m = mapFile(path);
    chmodSync(path, 0o444);
    m.remap('shared'); // already shared: nothing happens
    expect(mappedAs(path)).toBe('rw-s');
    m.remap('private');
    expect(m.bytes(0, 1)[0]).toBe(0x21);
    m.close();
  });

  it('refuses a file that is not the one mapped any more, and leaves the mapping as it was', () => {
    const { path, m, ram } = patterned('remap-replaced');
    const stranger = scratchFile('remap-stranger', SIZE);
    renameSync(stranger, path); // the path now names another file
    expectShmError(() => m.remap('private'), 'SHM_INVALID_ARGUMENT');
    expect(m.sharing).toBe('shared');
    ram[1] = 0x42;
    expect(ram[1]).toBe(0x42);
    m.close();
  });

  it('needs the fd again for a memfd mapping, and refuses a closed mapping', () => {
    const fd = createMemfd('remap-memfd', { size: SIZE });
    try {
      const m = mapFd(fd);
      new Uint8Array(m.buffer)[0] = 9;
      expectShmError(() => m.remap('private'), 'SHM_INVALID_ARGUMENT');
      const otherFd = createMemfd('remap-other', { size: SIZE });
      expectShmError(() => m.remap('private', { fd: otherFd }), 'SHM_INVALID_ARGUMENT');
      closeSync(otherFd);
      m.remap('private', { fd });
      const view = new Uint8Array(m.buffer);
      expect(view[0]).toBe(9);
      view[0] = 10;
      m.remap('shared', { fd });
      expect(view[0]).toBe(9);
      m.close();
      expectShmError(() => m.remap('private', { fd }), 'SHM_CLOSED');
    } finally {
      closeSync(fd);
    }
  });

  it("defers the old mapping's unmap: moved aside, the buffer on the new mapping, unmapped later", async () => {
    const { path, m, ram } = patterned('remap-defer');
    const buffer = m.buffer;
    const before = ram.slice();

    const retired = m.remap('private', { deferUnmap: true });

    expect(retired).not.toBeNull();
    expect(m.sharing).toBe('private');
    expect(m.buffer).toBe(buffer);
    const aside = retired!.address!;
    expect(aside).not.toBe(m.address);
    expect(retired!.length).toBe(SIZE);
    // the buffer's address now maps the file private; the old shared mapping sits elsewhere
    expect(mappingsOf(path).sort((a, b) => (a[0] < b[0] ? -1 : 1))).toEqual(
      [
        [m.address, 'rw-p'],
        [aside, 'rw-s'],
      ].sort((a, b) => ((a[0] as bigint) < (b[0] as bigint) ? -1 : 1)),
    );
    expectSameBytes(ram, before);
    ram[7] = 0xab; // copy-on-write: the file keeps the remap point
    expect(ram[7]).toBe(0xab);
    expectSameBytes(readFileBytes(path, 0, SIZE), before);

    await retired!.unmap();
    expect(retired!.address).toBeNull();
    expect(mappingsOf(path)).toEqual([[m.address, 'rw-p']]);
    await retired!.unmap(); // again: nothing more
    expect(ram[7]).toBe(0xab);
    expectSameBytes(readFileBytes(path, 0, SIZE), before);
    m.close();
  });

  it('remaps a mapping the kernel split in two, whether it can move both parts aside or not', async () => {
    const { path, m, ram } = patterned('remap-defer-split');
    const before = ram.slice();
    m.advise('dontfork', 0, PAGE_SIZE); // two kernel mappings now (Linux 6.17 moves both at once)
    expect(mappingsOf(path)).toHaveLength(2);

    const retired = m.remap('private', { deferUnmap: true }); // null: done the plain way

    expect(m.sharing).toBe('private');
    ram[3] = 0x5a;
    ram[SIZE - 2] = 0x5b;
    expectSameBytes(readFileBytes(path, 0, SIZE), before);
    await retired?.unmap();
    const at = mappingsOf(path);
    expect(at.every(([, perms]) => perms === 'rw-p')).toBe(true);
    expect(at[0]![0]).toBe(m.address);
    expect(ram[3]).toBe(0x5a);
    m.close();
  });

  it('checks its arguments', () => {
    const { m } = patterned('remap-args');
    expectShmError(() => m.remap('copy' as 'shared'), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => m.remap('private', { fd: -1 }), 'SHM_INVALID_ARGUMENT');
    expectShmError(
      () => m.remap('private', { deferUnmap: 'yes' as unknown as boolean }),
      'SHM_INVALID_ARGUMENT',
    );
    m.close();
  });
});
