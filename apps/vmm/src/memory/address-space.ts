import { assertLittleEndianHost } from './endian.js';
import { MemoryError } from './errors.js';
import type { AccessWidth, MmioDevice } from './mmio.js';
import { PAGE_SHIFT } from './pages.js';
import { RamBlock, type RamBlockOptions } from './ram-block.js';

/**
 * A VM's physical address space: RAM blocks plus an MMIO map (TinyEMU's flat range list).
 *
 * Guest accesses go through {@link AddressSpace.load} / {@link AddressSpace.store}, which never
 * throw: an access to an unmapped address sets {@link AddressSpace.faulted} and the CPU raises
 * an access fault. The CPU inlines aligned accesses to {@link AddressSpace.main} and only
 * calls in here for everything else. Misaligned accesses are performed byte by byte (as QEMU
 * does for ordinary loads and stores). Host-side helpers (`readBytes`, `writeBytes`, `fill`)
 * throw {@link MemoryError} when out of range and mark dirty/touched pages like the CPU.
 *
 * A lazy block's pages (post-copy) are tested before every guest access: a missing page is
 * never read as zero and never written; the access sets {@link AddressSpace.missingBlock}. The
 * host-side helpers do not test presence (the caller knows what it writes).
 */
export class AddressSpace {
  readonly blocks: RamBlock[] = [];
  readonly devices: MmioDevice[] = [];
  /** Set by a guest access that hit nothing; the caller clears it. */
  faulted = false;
  /**
   * Set (with {@link AddressSpace.faulted}) by a guest access that touched a page of a lazy
   * block that has not arrived: the block, and {@link AddressSpace.missingPage} the page. The
   * access did nothing (a load read nothing, a store wrote nothing). The CPU does not trap: it
   * ends its slice before the instruction and reports the wait (`Hart.missingPage`).
   */
  missingBlock: RamBlock | undefined = undefined;
  /** The block page of {@link AddressSpace.missingBlock}. */
  missingPage = 0;
  /** Lazy blocks not settled yet (see {@link AddressSpace.settleLazy}). */
  lazyBlocks = 0;
  private mainBlock: RamBlock | undefined;
  private lastDevice: MmioDevice | undefined;

  constructor() {
    assertLittleEndianHost();
  }

  /** The block the CPU inlines (the first one added). */
  get main(): RamBlock {
    if (this.mainBlock === undefined)
      throw new MemoryError('bad-block', 'the address space has no RAM block');
    return this.mainBlock;
  }

  /** Adds a RAM block; the first one becomes {@link AddressSpace.main}. */
  addRam(opts: RamBlockOptions): RamBlock {
    if (this.blocks.some((b) => b.id === opts.id)) {
      throw new MemoryError('bad-block', `RAM block id ${opts.id} is used twice`);
    }
    this.checkFree(opts.id, opts.guestBase, opts.size);
    const block = new RamBlock(opts);
    this.blocks.push(block);
    if (block.present !== undefined) this.lazyBlocks++;
    this.mainBlock ??= block;
    return block;
  }

  /**
   * Lazy blocks whose present map says Complete become ordinary blocks
   * ({@link RamBlock.settleLazy}). Call between CPU slices; cheap while none is lazy.
   */
  settleLazy(): void {
    if (this.lazyBlocks === 0) return;
    let left = 0;
    for (const b of this.blocks) if (!b.settleLazy()) left++;
    this.lazyBlocks = left;
  }

  /** Records a guest access that touched missing page `page` of `block` (sets `faulted`). */
  noteMissing(block: RamBlock, page: number): void {
    this.faulted = true;
    this.missingBlock = block;
    this.missingPage = page;
  }

  /**
   * Whether the RAM page holding `addr` may be accessed now: true unless it is a missing page of
   * a lazy block, which is then noted ({@link AddressSpace.noteMissing}).
   */
  ready(addr: number): boolean {
    const b = this.findRam(addr >>> 0);
    if (b === undefined || b.present === undefined) return true;
    const page = ((addr >>> 0) - b.guestBase) >>> PAGE_SHIFT;
    if (b.present.isPresent(page)) return true;
    this.noteMissing(b, page);
    return false;
  }

  /** Maps a device window. */
  addDevice(dev: MmioDevice): void {
    this.checkFree(dev.name, dev.base, dev.size);
    this.devices.push(dev);
  }

  /** The RAM block holding `addr`, if any. */
  findRam(addr: number): RamBlock | undefined {
    for (const b of this.blocks) if (addr >= b.guestBase && addr - b.guestBase < b.size) return b;
    return undefined;
  }

  /** The device whose window holds `addr`, if any. */
  findDevice(addr: number): MmioDevice | undefined {
    const last = this.lastDevice;
    if (last !== undefined && addr >= last.base && addr - last.base < last.size) return last;
    for (const d of this.devices) {
      if (addr >= d.base && addr - d.base < d.size) {
        this.lastDevice = d;
        return d;
      }
    }
    return undefined;
  }

  /** The RAM block with this id, if any. */
  block(id: string): RamBlock | undefined {
    return this.blocks.find((b) => b.id === id);
  }

  /**
   * Guest load of `width` bytes at `addr` (unsigned 32-bit number); returns the value
   * zero-extended (width 4: as an int32). Sets {@link AddressSpace.faulted} when unmapped.
   */
  load(addr: number, width: AccessWidth): number {
    addr = addr >>> 0;
    if ((addr & (width - 1)) !== 0) return this.loadBytes(addr, width);
    const b = this.findRam(addr);
    if (b !== undefined && addr - b.guestBase + width <= b.size) {
      const off = addr - b.guestBase;
      if (b.present !== undefined && !b.present.isPresent(off >>> PAGE_SHIFT)) {
        this.noteMissing(b, off >>> PAGE_SHIFT);
        return 0;
      }
      if (width === 4) return b.i32[off >>> 2]!;
      if (width === 2) return b.u16[off >>> 1]!;
      return b.u8[off]!;
    }
    const d = this.findDevice(addr);
    if (
      d !== undefined &&
      addr - d.base + width <= d.size &&
      (width === 4 || d.wordOnly !== true)
    ) {
      const v = d.read(addr - d.base, width);
      return width === 4 ? v | 0 : v & (width === 2 ? 0xffff : 0xff);
    }
    this.faulted = true;
    return 0;
  }

  /** Guest store of the low `width` bytes of `value` at `addr`. Sets {@link AddressSpace.faulted} when unmapped. */
  store(addr: number, width: AccessWidth, value: number): void {
    addr = addr >>> 0;
    if ((addr & (width - 1)) !== 0) {
      this.storeBytes(addr, width, value);
      return;
    }
    const b = this.findRam(addr);
    if (b !== undefined && addr - b.guestBase + width <= b.size) {
      const off = addr - b.guestBase;
      if (b.present !== undefined && !b.present.isPresent(off >>> PAGE_SHIFT)) {
        this.noteMissing(b, off >>> PAGE_SHIFT);
        return;
      }
      if (width === 4) b.i32[off >>> 2] = value;
      else if (width === 2) b.u16[off >>> 1] = value;
      else b.u8[off] = value;
      b.noteWrite(off, width);
      return;
    }
    const d = this.findDevice(addr);
    if (
      d !== undefined &&
      addr - d.base + width <= d.size &&
      (width === 4 || d.wordOnly !== true)
    ) {
      d.write(
        addr - d.base,
        width,
        width === 4 ? value | 0 : value & (width === 2 ? 0xffff : 0xff),
      );
      return;
    }
    this.faulted = true;
  }

  private mapped(addr: number): boolean {
    return this.findRam(addr) !== undefined || this.findDevice(addr) !== undefined;
  }

  private loadBytes(addr: number, width: AccessWidth): number {
    let v = 0;
    for (let i = 0; i < width; i++) {
      const a = (addr + i) >>> 0;
      if (!this.mapped(a)) {
        this.faulted = true;
        return 0;
      }
      v |= this.load(a, 1) << (8 * i);
      if (this.faulted) return 0; // a missing page of a lazy block
    }
    return width === 4 ? v | 0 : v;
  }

  private storeBytes(addr: number, width: AccessWidth, value: number): void {
    // Every byte's page is checked before the first is written: all or nothing.
    for (let i = 0; i < width; i++) {
      const a = (addr + i) >>> 0;
      if (!this.mapped(a)) {
        this.faulted = true;
        return;
      }
      if (!this.ready(a)) return;
    }
    for (let i = 0; i < width; i++) this.store((addr + i) >>> 0, 1, (value >>> (8 * i)) & 0xff);
  }

  /** Resolves a host-side RAM range to its block and offset. @throws MemoryError when not inside one block. */
  resolve(addr: number, len: number): { block: RamBlock; offset: number } {
    const block = this.findRam(addr);
    if (block === undefined || !block.contains(addr, len)) {
      throw new MemoryError(
        'out-of-range',
        `guest range 0x${addr.toString(16)}+${len} is not inside one RAM block`,
      );
    }
    return { block, offset: addr - block.guestBase };
  }

  /** Copies `len` bytes of guest RAM at `addr`. */
  readBytes(addr: number, len: number): Uint8Array {
    const { block, offset } = this.resolve(addr, len);
    return block.u8.slice(offset, offset + len);
  }

  /** Host-side write into guest RAM (loader, devices): marks pages dirty and touched, invalidates code. */
  writeBytes(addr: number, data: Uint8Array): void {
    const { block, offset } = this.resolve(addr, data.length);
    block.u8.set(data, offset);
    block.noteWrite(offset, data.length);
  }

  /** Host-side fill of guest RAM; like {@link AddressSpace.writeBytes}. */
  fill(addr: number, len: number, value: number): void {
    const { block, offset } = this.resolve(addr, len);
    block.u8.fill(value, offset, offset + len);
    block.noteWrite(offset, len);
  }

  private checkFree(name: string, base: number, size: number): void {
    const end = base + size;
    for (const b of this.blocks) {
      if (base < b.guestBase + b.size && b.guestBase < end) {
        throw new MemoryError('overlap', `${name} overlaps RAM block ${b.id}`);
      }
    }
    for (const d of this.devices) {
      if (base < d.base + d.size && d.base < end) {
        throw new MemoryError('overlap', `${name} overlaps device ${d.name}`);
      }
    }
  }
}
