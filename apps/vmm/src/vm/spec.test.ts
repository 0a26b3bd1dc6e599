import { describe, expect, it } from 'vitest';
import { VirtMap } from '../machine/virt-map.js';
import { VmmError } from '../model/vmm-error.js';
import { deviceWindows, hostArgsOf, normalizeSpec, validateBlocks, validateSpec } from './spec.js';
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
    ['no block', [], 'no RAM block'],
    ['a bad id', [{ ...ram0, id: 'RAM 0' }], 'block id "RAM 0" is not valid'],
    ['a size of 0', [{ ...ram0, size: 0 }], 'not a positive multiple of 4 KiB'],
    ['a size off 4 KiB', [{ ...ram0, size: 4097 }], 'not a positive multiple of 4 KiB'],
    ['a fractional size', [{ ...ram0, size: 4096.5 }], 'not a positive multiple of 4 KiB'],
    ['a block over 2 GiB', [{ ...ram0, size: 2 ** 31 + 4096 }], 'over the 2 GiB'],
    ['an unaligned base', [{ ...ram0, guestBase: VirtMap.DRAM + 12 }], 'not 4 KiB-aligned'],
    ['a block past 4 GiB', [{ ...ram0, guestBase: 0xffff_f000, size: 8192 }], 'past the 32-bit'],
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
      'overlap',
    ],
    [
      'a block over the UART',
      [ram0, { ...ram0, id: 'io', guestBase: VirtMap.UART0 & ~0xfff, size: 4096 }],
      'overlaps the uart0 window',
    ],
    [
      'a block over the CLINT',
      [ram0, { ...ram0, id: 'low', guestBase: 0, size: 0x0300_0000 }],
      'window',
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

  it('knows the board windows from the machine itself', () => {
    expect(
      deviceWindows()
        .map((d) => d.name)
        .sort(),
    ).toEqual(['clint', 'handoff-control', 'test-finisher', 'uart0'].sort());
  });
});

describe('a VM spec', () => {
  const spec: VmSpec = { name: 'vm1', guest: 'hello', ram: [], args: {} };

  it('defaults to one private 128 MiB ram0 at 0x80000000', () => {
    expect(normalizeSpec(spec).ram).toEqual([
      { id: 'ram0', guestBase: VirtMap.DRAM, size: 128 * MiB, backend: 'private', region: '' },
    ]);
    const filled = normalizeSpec({ ...spec, ram: [{ ...ram0, id: '', guestBase: 0 }] });
    expect(filled.ram[0]).toMatchObject({ id: 'ram0', guestBase: VirtMap.DRAM });
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
