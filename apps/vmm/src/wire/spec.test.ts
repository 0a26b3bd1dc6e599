import { vmm as pb } from '@handoff/proto';
import { describe, expect, it } from 'vitest';
import { VmmError } from '../model/vmm-error.js';
import { specFromPb, specToPb } from './spec.js';

const ram0: pb.RamBlockSpec = {
  id: 'ram0',
  guestBase: 0x8000_0000n,
  size: 64n << 20n,
  backend: pb.RamBackend.RAM_BACKEND_PRIVATE,
  region: '',
};
const spec = (block: Partial<pb.RamBlockSpec>): pb.VmSpec => ({
  name: 'vm1',
  guest: 'hello',
  ram: [{ ...ram0, ...block }],
  args: {},
});

/** The VmmError `specFromPb` refuses `s` with. */
function refusal(s: pb.VmSpec): VmmError {
  try {
    specFromPb(s);
  } catch (err) {
    if (VmmError.is(err)) return err;
    throw err;
  }
  throw new Error('the spec was accepted');
}

describe('a spec from the wire', () => {
  it('round-trips a block table', () => {
    const s = spec({});
    expect(specToPb(specFromPb(s))).toEqual(s);
  });

  it.each([
    ['a 2^63-byte block', { size: 1n << 63n }, 'size 9223372036854775808 bytes is over the 2 GiB'],
    ['the largest uint64 size', { size: (1n << 64n) - 1n }, 'is over the 2 GiB'],
    ['a block one page over 2 GiB', { size: (2n << 30n) + 4096n }, 'is over the 2 GiB'],
    [
      'a base past the 32-bit board',
      { guestBase: 1n << 40n },
      "at 0x10000000000 is outside the board's RAM window (0x80000000-0xffffffff)",
    ],
  ])('refuses %s as a number before anything else sees it', (_what, block, message) => {
    const err = refusal(spec(block));
    expect(err.code).toBe('VMM_INVALID_SPEC');
    expect(err.message).toContain('RAM block "ram0"');
    expect(err.message).toContain(message);
  });

  it('refuses a lazy block until post-copy', () => {
    expect(refusal(spec({ backend: pb.RamBackend.RAM_BACKEND_LAZY })).message).toContain(
      'post-copy',
    );
  });
});
