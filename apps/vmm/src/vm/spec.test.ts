import { describe, expect, it } from 'vitest';
import { VirtMap } from '../machine/virt-map.js';
import { VmmError } from '../model/vmm-error.js';
import {
  RAM_WINDOW,
  deviceWindows,
  hostArgsOf,
  normalizeSpec,
  validateBlocks,
  validateSpec,
} from './spec.js';
import type { RamBlockSpec, VmSpec } from '../model/types.js';

const MiB = 1024 * 1024;
const limits = { maxVmMemory: 256 * MiB };
const ram0: RamBlockSpec = {
  id: 'ram0',
  guestBase: VirtMap.DRAM,
  size: 64 * MiB,
  backend: 'private',
  region: '',
};

/** The VmmError a block table is refused with. */
function refusal(blocks: RamBlockSpec[]): VmmError {
  try {
    validateBlocks(blocks, limits);
  } catch (err) {
    expect(VmmError.is(err)).toBe(true);
    return err as VmmError;
  }
  throw new Error('the block table was accepted');
}

describe('the RAM block table', () => {
  it('accepts main RAM at 0x80000000 in every backend', () => {
    expect(() => validateBlocks([ram0], limits)).not.toThrow();
    expect(() => validateBlocks([{ ...ram0, backend: 'shared' }], limits)).not.toThrow();
    expect(() =>
      validateBlocks([{ ...ram0, backend: 'shared', region: 'r' }], limits),
    ).not.toThrow();
    expect(() =>
      validateBlocks([{ ...ram0, backend: 'clone', region: 't' }], limits),
    ).not.toThrow();
    expect(() => validateBlocks([{ ...ram0, size: 256 * MiB }], limits)).not.toThrow();
  });

  it.each([
    ['no block', [], 'the spec names no RAM; give one block "ram0" at 0x80000000'],
    ['a bad id', [{ ...ram0, id: 'RAM 0' }], 'block id "RAM 0" is not valid'],
    ['a size of 0 (none given)', [{ ...ram0, size: 0 }], 'RAM block "ram0" has no size; give'],
    ['a size off 4 KiB', [{ ...ram0, size: 4097 }], 'not a multiple of 4 KiB'],
    ['a fractional size', [{ ...ram0, size: 4096.5 }], 'not a whole, positive number'],
    ['a negative size', [{ ...ram0, size: -4096 }], 'not a whole, positive number'],
    ['a block over 2 GiB', [{ ...ram0, size: 2 ** 31 + 4096 }], 'over the 2 GiB'],
    ['a 2^63-byte block', [{ ...ram0, size: 2 ** 63 }], 'over the 2 GiB'],
    ['an infinite block', [{ ...ram0, size: Infinity }], 'not a whole, positive number'],
    ['an unaligned base', [{ ...ram0, guestBase: VirtMap.DRAM + 12 }], 'not 4 KiB-aligned'],
    ['a negative base', [{ ...ram0, guestBase: -4096 }], 'is not an address'],
    [
      'main RAM at base 0 (over the test finisher)',
      [{ ...ram0, guestBase: 0 }],
      "overlaps the board's test-finisher device window",
    ],
    [
      'a small block at base 0 (below the devices)',
      [{ ...ram0, guestBase: 0, size: 4096 }],
      "at 0x0 is outside the board's RAM window (0x80000000-0xffffffff); put ram0 at 0x80000000",
    ],
    [
      'a block between the devices and RAM',
      [{ ...ram0, guestBase: 0x4000_0000 }],
      "outside the board's RAM window",
    ],
    ['a base past 4 GiB', [{ ...ram0, guestBase: 2 ** 32 }], "outside the board's RAM window"],
    ['a 2^63 base', [{ ...ram0, guestBase: 2 ** 63 }], "outside the board's RAM window"],
    [
      'a block past 4 GiB',
      [{ ...ram0, guestBase: 0xffff_f000, size: 8192 }],
      "ends past the board's RAM window (0x80000000-0xffffffff); from 0xfffff000 at most 4 KiB fits",
    ],
    ['a private block with a region', [{ ...ram0, region: 'r' }], 'takes no region'],
    ['a clone without template', [{ ...ram0, backend: 'clone' as const }], 'sealed template'],
    [
      'two blocks with one id',
      [ram0, { ...ram0, guestBase: 0x9000_0000 }],
      'block id "ram0" is used twice',
    ],
    [
      'overlapping blocks',
      [ram0, { ...ram0, id: 'ram1', guestBase: VirtMap.DRAM + 32 * MiB }],
      'RAM blocks "ram0" (0x80000000+64 MiB) and "ram1" (0x82000000+64 MiB) overlap',
    ],
    [
      'a block over the UART',
      [ram0, { ...ram0, id: 'io', guestBase: VirtMap.UART0 & ~0xfff, size: 4096 }],
      "overlaps the board's uart0 device window",
    ],
    [
      'a block over the CLINT',
      [ram0, { ...ram0, id: 'low', guestBase: 0x0200_0000, size: 0x0100_0000 }],
      "overlaps the board's clint device window",
    ],
    [
      'a block over the control device',
      [ram0, { ...ram0, id: 'ctl', guestBase: VirtMap.CONTROL, size: 4096 }],
      "overlaps the board's handoff-control device window",
    ],
    ['no main RAM', [{ ...ram0, guestBase: 0x9000_0000 }], 'no RAM block starts at 0x80000000'],
    ['main RAM not called ram0', [{ ...ram0, id: 'main' }], 'must be called "ram0"'],
    [
      'a second block (the machine maps one)',
      [ram0, { ...ram0, id: 'ram1', guestBase: 0x9000_0000 }],
      'extra blocks (ram1) are not supported yet',
    ],
  ] as [string, RamBlockSpec[], string][])('refuses %s', (_what, blocks, message) => {
    const err = refusal(blocks);
    expect(err.code).toBe('VMM_INVALID_SPEC');
    expect(err.message).toContain(message);
  });

  it('refuses more RAM than --max-vm-memory with its own code', () => {
    const err = refusal([{ ...ram0, size: 512 * MiB }]);
    expect(err.code).toBe('VMM_LIMIT_EXCEEDED');
    expect(err.message).toContain('--max-vm-memory');
  });

  it('knows the board windows from the machine itself, all below the RAM window', () => {
    expect(RAM_WINDOW.base).toBe(VirtMap.DRAM);
    for (const d of deviceWindows()) expect(d.base + d.size).toBeLessThanOrEqual(RAM_WINDOW.base);
    expect(
      deviceWindows()
        .map((d) => d.name)
        .sort(),
    ).toEqual(['clint', 'handoff-control', 'plic', 'test-finisher', 'uart0'].sort());
  });
});

describe('a VM spec', () => {
  const spec: VmSpec = { name: 'vm1', guest: 'hello', ram: [], args: {} };

  it('fills in no RAM: a spec without blocks is refused, saying what fits', () => {
    expect(normalizeSpec(spec).ram).toEqual([]);
    const err = (() => {
      try {
        validateSpec(normalizeSpec(spec), limits);
      } catch (e) {
        return e as VmmError;
      }
      throw new Error('a spec without RAM was accepted');
    })();
    expect(err.code).toBe('VMM_INVALID_SPEC');
    expect(err.message).toContain(
      'the spec names no RAM; give one block "ram0" at 0x80000000, its size a multiple of ' +
        '4 KiB up to 256 MiB',
    );
  });

  it('names the first block ram0 when it has no id, and keeps its base as given', () => {
    const filled = normalizeSpec({ ...spec, ram: [{ ...ram0, id: '', guestBase: 0 }] });
    expect(filled.ram[0]).toMatchObject({ id: 'ram0', guestBase: 0 });
    expect(() => validateSpec(filled, limits)).toThrow('device window');
  });

  it.each([
    ['', 'VM name "" is not valid'],
    ['Upper', 'is not valid'],
    ['-dash', 'is not valid'],
    ['a'.repeat(49), 'is not valid'],
  ])('refuses the name %j', (name, message) => {
    expect(() => validateSpec(normalizeSpec({ ...spec, name }), limits)).toThrow(message);
  });

  it('needs a guest', () => {
    expect(() => validateSpec(normalizeSpec({ ...spec, guest: ' ' }), limits)).toThrow('no guest');
  });

  it('turns args into sorted key=value host args within 256 bytes', () => {
    expect(new TextDecoder().decode(hostArgsOf({ 'kv.work': '4', 'ab.pages': '16' }))).toBe(
      'ab.pages=16 kv.work=4',
    );
    expect(() => hostArgsOf({ 'a b': '1' })).toThrow('key "a b" is not valid');
    expect(() => hostArgsOf({ a: 'x y' })).toThrow('whitespace');
    expect(() => hostArgsOf({ a: 'x'.repeat(300) })).toThrow('over the control device');
  });
});
