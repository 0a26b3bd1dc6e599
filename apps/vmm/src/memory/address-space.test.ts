import { describe, expect, it } from 'vitest';
import { AddressSpace } from './address-space.js';
import { isMemoryError } from './errors.js';
import type { AccessWidth, MmioDevice } from './mmio.js';
import { listPages } from './pages.js';

const BASE = 0x80000000;

function space(): AddressSpace {
  const s = new AddressSpace();
  s.addRam({ id: 'ram0', guestBase: BASE, size: 0x10000 });
  return s;
}

class Recorder implements MmioDevice {
  readonly name = 'rec';
  readonly size = 0x100;
  writes: [number, AccessWidth, number][] = [];
  constructor(readonly base: number) {}
  read(offset: number, width: AccessWidth): number {
    return 0xa0 + offset + width;
  }
  write(offset: number, width: AccessWidth, value: number): void {
    this.writes.push([offset, width, value]);
  }
}

describe('AddressSpace', () => {
  it('rejects bad blocks and overlaps with a stable code', () => {
    const s = space();
    const codeOf = (f: () => void): string | undefined => {
      try {
        f();
      } catch (e) {
        return isMemoryError(e) ? e.code : 'other';
      }
      return undefined;
    };
    expect(codeOf(() => s.addRam({ id: 'x', guestBase: BASE + 0x8000, size: 0x1000 }))).toBe(
      'overlap',
    );
    expect(codeOf(() => s.addRam({ id: 'ram0', guestBase: 0x1000, size: 0x1000 }))).toBe(
      'bad-block',
    );
    expect(codeOf(() => s.addRam({ id: 'y', guestBase: 0x1001, size: 0x1000 }))).toBe('bad-block');
    expect(codeOf(() => s.addRam({ id: 'y', guestBase: 0, size: 100 }))).toBe('bad-block');
    expect(
      codeOf(() =>
        s.addRam({ id: 'y', guestBase: 0, size: 0x2000, bytes: new ArrayBuffer(0x1000) }),
      ),
    ).toBe('bad-block');
    expect(codeOf(() => s.addDevice(new Recorder(BASE + 0xff00)))).toBe('overlap');
    expect(codeOf(() => s.readBytes(BASE + 0xfff0, 0x20))).toBe('out-of-range');
  });

  it('faults on unmapped guest accesses without throwing', () => {
    const s = space();
    expect(s.load(0x1000, 4)).toBe(0);
    expect(s.faulted).toBe(true);
    s.faulted = false;
    s.store(0x1000, 4, 1);
    expect(s.faulted).toBe(true);
  });

  it('routes device accesses with offsets and widths', () => {
    const s = space();
    const dev = new Recorder(0x10000000);
    s.addDevice(dev);
    expect(s.load(0x10000004, 1)).toBe(0xa5);
    s.store(0x10000008, 2, 0x12345);
    expect(dev.writes).toEqual([[8, 2, 0x2345]]);
  });

  it('does misaligned accesses byte by byte, little-endian', () => {
    const s = space();
    s.store(BASE + 3, 4, 0x11223344);
    expect(Array.from(s.readBytes(BASE + 3, 4))).toEqual([0x44, 0x33, 0x22, 0x11]);
    expect(s.load(BASE + 3, 4)).toBe(0x11223344);
    expect(s.load(BASE + 4, 2)).toBe(0x2233);
    expect(s.faulted).toBe(false);
  });

  it('marks dirty and touched pages on every write path and swaps the dirty bitmap', () => {
    const dirty = new Uint32Array(1);
    const touched = new Uint32Array(1);
    const s = new AddressSpace();
    const block = s.addRam({ id: 'ram0', guestBase: BASE, size: 0x10000, dirty, touched });
    s.writeBytes(BASE + 0x0ffe, new Uint8Array(4)); // pages 0 and 1
    s.store(BASE + 0x5000, 4, 1);
    s.fill(BASE + 0x9000, 1, 0);
    expect(listPages(dirty, 16)).toEqual([0, 1, 5, 9]);
    const old = block.swapDirty(new Uint32Array(1));
    expect(old).toBe(dirty);
    s.store(BASE + 0x2000, 1, 1);
    expect(listPages(block.dirtyWords, 16)).toEqual([2]);
    expect(listPages(touched, 16)).toEqual([0, 1, 2, 5, 9]);
  });
});
