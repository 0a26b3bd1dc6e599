import type { AddressSpace } from '../memory/address-space.js';
import { PAGE_SHIFT } from '../memory/pages.js';

/** Stable codes of {@link LoaderError}. */
export type LoaderErrorCode =
  | 'not-elf' // no ELF magic, or the file is shorter than its headers
  | 'unsupported' // not ELF32 / little-endian / RISC-V / executable
  | 'bad-header' // program header table or a segment lies outside the file or is inconsistent
  | 'out-of-ram'; // a segment does not fit inside one RAM block

/** Raised when an ELF image cannot be loaded; the message says which check failed. */
export class LoaderError extends Error {
  override readonly name = 'LoaderError';
  constructor(
    readonly code: LoaderErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** One PT_LOAD segment. */
export interface ElfSegment {
  /** Physical load address (QEMU loads -kernel ELFs at p_paddr). */
  readonly paddr: number;
  readonly offset: number;
  readonly filesz: number;
  readonly memsz: number;
  /** p_flags: 1 X, 2 W, 4 R. */
  readonly flags: number;
}

/** A parsed ELF32 RISC-V executable. */
export interface ElfImage {
  readonly entry: number;
  readonly segments: readonly ElfSegment[];
}

const EM_RISCV = 243;
const ET_EXEC = 2;
const PT_LOAD = 1;
const EHDR_SIZE = 52;
const PHDR_SIZE = 32;

/**
 * Parses and validates an ELF32 little-endian RISC-V executable. Treats the file as hostile:
 * every offset and size is checked against the file before use.
 *
 * @throws LoaderError with what is wrong.
 */
export function parseElf(file: Uint8Array): ElfImage {
  if (
    file.length < EHDR_SIZE ||
    file[0] !== 0x7f ||
    file[1] !== 0x45 ||
    file[2] !== 0x4c ||
    file[3] !== 0x46
  ) {
    throw new LoaderError('not-elf', 'not an ELF file (bad magic or shorter than an ELF header)');
  }
  if (file[4] !== 1)
    throw new LoaderError(
      'unsupported',
      'not a 32-bit ELF (EI_CLASS is not ELFCLASS32); build for rv32',
    );
  if (file[5] !== 1) throw new LoaderError('unsupported', 'not a little-endian ELF');
  const dv = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const type = dv.getUint16(16, true);
  const machine = dv.getUint16(18, true);
  if (machine !== EM_RISCV)
    throw new LoaderError('unsupported', `ELF machine is ${machine}, not RISC-V (243)`);
  if (type !== ET_EXEC)
    throw new LoaderError('unsupported', `ELF type is ${type}, not an executable (ET_EXEC)`);
  const entry = dv.getUint32(24, true);
  const phoff = dv.getUint32(28, true);
  const phentsize = dv.getUint16(42, true);
  const phnum = dv.getUint16(44, true);
  if (phnum === 0) throw new LoaderError('bad-header', 'ELF has no program headers');
  if (phentsize < PHDR_SIZE)
    throw new LoaderError('bad-header', `ELF program header size ${phentsize} is too small`);
  if (phoff + phnum * phentsize > file.length) {
    throw new LoaderError('bad-header', 'ELF program header table runs past the end of the file');
  }
  const segments: ElfSegment[] = [];
  for (let k = 0; k < phnum; k++) {
    const at = phoff + k * phentsize;
    if (dv.getUint32(at, true) !== PT_LOAD) continue;
    const seg: ElfSegment = {
      offset: dv.getUint32(at + 4, true),
      paddr: dv.getUint32(at + 12, true),
      filesz: dv.getUint32(at + 16, true),
      memsz: dv.getUint32(at + 20, true),
      flags: dv.getUint32(at + 24, true),
    };
    if (seg.filesz > seg.memsz) {
      throw new LoaderError(
        'bad-header',
        `segment ${k}: file size ${seg.filesz} exceeds memory size ${seg.memsz}`,
      );
    }
    if (seg.offset + seg.filesz > file.length) {
      throw new LoaderError('bad-header', `segment ${k}: file bytes run past the end of the file`);
    }
    if (seg.paddr + seg.memsz > 2 ** 32) {
      throw new LoaderError('bad-header', `segment ${k}: it wraps the 32-bit address space`);
    }
    if (seg.memsz > 0) segments.push(seg);
  }
  if (segments.length === 0)
    throw new LoaderError('bad-header', 'ELF has no loadable (PT_LOAD) segment');
  return { entry, segments };
}

/**
 * Loads an ELF into guest RAM: copies each PT_LOAD segment and zeroes its tail (bss); every
 * written page is marked dirty and touched (untouched pages are already zero and stay
 * untouched). Every segment must lie inside one RAM block; nothing is written unless all do.
 *
 * @returns the parsed image (its entry is the reset pc).
 * @throws LoaderError when the file is malformed or a segment falls outside RAM.
 */
export function loadElf(memory: AddressSpace, file: Uint8Array): ElfImage {
  const image = parseElf(file);
  for (const seg of image.segments) {
    const block = memory.findRam(seg.paddr);
    if (block === undefined || !block.contains(seg.paddr, seg.memsz)) {
      throw new LoaderError(
        'out-of-ram',
        `segment at 0x${seg.paddr.toString(16)} (+${seg.memsz} bytes) is not inside guest RAM; link it into RAM (0x80000000 on virt) or give the VM more memory`,
      );
    }
  }
  for (const seg of image.segments) {
    if (seg.filesz > 0)
      memory.writeBytes(seg.paddr, file.subarray(seg.offset, seg.offset + seg.filesz));
    const bssStart = seg.paddr + seg.filesz;
    const bssLen = seg.memsz - seg.filesz;
    if (bssLen > 0) zeroTouched(memory, bssStart, bssLen);
  }
  return image;
}

/** Zeroes the touched pages of a range; untouched pages are zero already and stay clean. */
function zeroTouched(memory: AddressSpace, addr: number, len: number): void {
  const { block, offset } = memory.resolve(addr, len);
  const end = offset + len;
  let at = offset;
  while (at < end) {
    const page = at >>> PAGE_SHIFT;
    const pageEnd = Math.min(end, (page + 1) << PAGE_SHIFT);
    if ((block.touched[page >>> 5]! & (1 << (page & 31))) !== 0) {
      block.u8.fill(0, at, pageEnd);
      block.noteWrite(at, pageEnd - at);
    }
    at = pageEnd;
  }
}
