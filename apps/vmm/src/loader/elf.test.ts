import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AddressSpace } from '../memory/address-space.js';
import { listPages } from '../memory/pages.js';
import { LoaderError, loadElf, parseElf } from './elf.js';

const ELF = readFileSync(
  fileURLToPath(new URL('../../../../guests/conformance/prebuilt/rv32i-alu.elf', import.meta.url)),
);

/** A minimal valid ELF32 RISC-V executable with one PT_LOAD segment. */
function tinyElf(paddr: number, payload: number[], memsz = payload.length): Uint8Array {
  const file = new Uint8Array(52 + 32 + payload.length);
  const dv = new DataView(file.buffer);
  file.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]);
  dv.setUint16(16, 2, true); // ET_EXEC
  dv.setUint16(18, 243, true); // EM_RISCV
  dv.setUint32(24, paddr, true); // entry
  dv.setUint32(28, 52, true); // phoff
  dv.setUint16(42, 32, true);
  dv.setUint16(44, 1, true);
  dv.setUint32(52, 1, true); // PT_LOAD
  dv.setUint32(56, 84, true); // offset
  dv.setUint32(60, paddr, true);
  dv.setUint32(64, paddr, true);
  dv.setUint32(68, payload.length, true);
  dv.setUint32(72, memsz, true);
  dv.setUint32(76, 5, true);
  file.set(payload, 84);
  return file;
}

function ram(): AddressSpace {
  const s = new AddressSpace();
  s.addRam({ id: 'ram0', guestBase: 0x80000000, size: 0x100000 });
  return s;
}

function loaderCode(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof LoaderError) return e.code;
    throw e;
  }
  return 'loaded';
}

describe('ELF loader', () => {
  it('loads the conformance guests at their physical addresses and marks the pages', () => {
    const mem = ram();
    const image = loadElf(mem, ELF);
    expect(image.entry).toBe(0x80000000);
    expect(mem.load(0x80000000, 4)).not.toBe(0);
    expect(listPages(mem.main.dirtyWords, mem.main.pages)).toEqual(
      listPages(mem.main.touchedWords, mem.main.pages),
    );
    expect(listPages(mem.main.dirtyWords, mem.main.pages)[0]).toBe(0);
  });

  it('zeroes bss only where the page was written before', () => {
    const mem = ram();
    mem.store(0x80002004, 4, 0x1234);
    loadElf(mem, tinyElf(0x80002000, [1, 2, 3, 4], 0x3000));
    expect(mem.load(0x80002004, 4)).toBe(0);
    expect(listPages(mem.main.touchedWords, mem.main.pages)).toEqual([2]);
  });

  it('rejects hostile or foreign files with a clear error and writes nothing', () => {
    expect(loaderCode(() => parseElf(new Uint8Array(10)))).toBe('not-elf');
    const elf64 = tinyElf(0x80000000, [0]);
    elf64[4] = 2;
    expect(loaderCode(() => parseElf(elf64))).toBe('unsupported');
    const arm = tinyElf(0x80000000, [0]);
    arm[18] = 40;
    expect(loaderCode(() => parseElf(arm))).toBe('unsupported');
    const big = tinyElf(0x80000000, [0]);
    new DataView(big.buffer).setUint16(44, 1000, true); // phnum past the end
    expect(loaderCode(() => parseElf(big))).toBe('bad-header');
    const past = tinyElf(0x80000000, [0]);
    new DataView(past.buffer).setUint32(68, 0x1000, true); // filesz past the end (and > memsz)
    expect(loaderCode(() => parseElf(past))).toBe('bad-header');
    const wrap = tinyElf(0xfffff000, [0], 0x2000);
    expect(loaderCode(() => parseElf(wrap))).toBe('bad-header');
    const mem = ram();
    expect(loaderCode(() => loadElf(mem, tinyElf(0x10000000, [1, 2, 3])))).toBe('out-of-ram');
    expect(loaderCode(() => loadElf(mem, tinyElf(0x800fff00, [1], 0x200)))).toBe('out-of-ram');
    expect(listPages(mem.main.touchedWords, mem.main.pages)).toEqual([]);
  });
});
