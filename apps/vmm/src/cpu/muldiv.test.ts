import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { div, divu, mulh, mulhsu, mulhu, rem, remu } from './muldiv.js';

const i32 = fc.oneof(
  fc.integer({ min: -0x80000000, max: 0x7fffffff }),
  fc.constantFrom(0, 1, -1, 0x7fffffff, -0x80000000, 0xffff, -0x10000),
);
const s = (v: number) => BigInt(v | 0);
const u = (v: number) => BigInt(v >>> 0);
const toI32 = (v: bigint) => Number(BigInt.asIntN(32, v));

describe('M extension arithmetic against BigInt', () => {
  it('mulh, mulhsu, mulhu', () => {
    fc.assert(
      fc.property(i32, i32, (a, b) => {
        expect(mulh(a, b)).toBe(toI32((s(a) * s(b)) >> 32n));
        expect(mulhsu(a, b)).toBe(toI32((s(a) * u(b)) >> 32n));
        expect(mulhu(a, b)).toBe(toI32((u(a) * u(b)) >> 32n));
      }),
      { numRuns: 5000 },
    );
  });

  it('div, divu, rem, remu with the spec edge cases', () => {
    fc.assert(
      fc.property(i32, i32, (a, b) => {
        if (b === 0) {
          expect([div(a, b), divu(a, b), rem(a, b), remu(a, b)]).toEqual([-1, -1, a, a]);
        } else if (a === -0x80000000 && b === -1) {
          expect([div(a, b), rem(a, b)]).toEqual([a, 0]);
        } else {
          expect(div(a, b)).toBe(toI32(s(a) / s(b)));
          expect(rem(a, b)).toBe(toI32(s(a) % s(b)));
          expect(divu(a, b)).toBe(toI32(u(a) / u(b)));
          expect(remu(a, b)).toBe(toI32(u(a) % u(b)));
        }
      }),
      { numRuns: 5000 },
    );
  });
});
