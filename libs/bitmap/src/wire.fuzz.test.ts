/**
 * Fuzzing the decoder: mutated, truncated, extended and random inputs must either decode to a
 * bitmap that re-encodes to exactly the same bytes, or throw a BitmapError — never another
 * exception, never a hang.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { isBitmapError } from './errors.js';
import { PageBitmap } from './page-bitmap.js';
import { bitmapArb, withFixedChecksum } from './testing/support.js';
import { decode, encode } from './wire.js';

/** Decode; a result must round-trip to the same bytes, a failure must be a BitmapError. */
function decodeOrReject(bytes: Uint8Array, maxBits?: number): 'ok' | string {
  const t0 = performance.now();
  try {
    const b = decode(bytes, maxBits === undefined ? {} : { maxBits });
    expect(encode(b)).toEqual(bytes);
    return 'ok';
  } catch (e) {
    if (!isBitmapError(e))
      throw new Error(`decode threw a non-BitmapError: ${String(e)}`, { cause: e });
    return e.code;
  } finally {
    // Linear in the input; a few ms even for the largest inputs generated here.
    expect(performance.now() - t0).toBeLessThan(200);
  }
}

type Mutation =
  | { kind: 'flip'; at: number; mask: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'truncate'; to: number }
  | { kind: 'append'; bytes: number[] }
  | { kind: 'splice'; at: number; count: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    kind: fc.constant('flip' as const),
    at: fc.nat(),
    mask: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({
    kind: fc.constant('set' as const),
    at: fc.nat(),
    value: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({ kind: fc.constant('truncate' as const), to: fc.nat() }),
  fc.record({
    kind: fc.constant('append' as const),
    bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 16 }),
  }),
  fc.record({
    kind: fc.constant('splice' as const),
    at: fc.nat(),
    count: fc.integer({ min: 1, max: 9 }),
  }),
);

function mutate(input: Uint8Array, m: Mutation): Uint8Array {
  const n = input.length;
  if (n === 0 && m.kind !== 'append') return input;
  switch (m.kind) {
    case 'flip': {
      const out = input.slice();
      out[m.at % n] = out[m.at % n]! ^ m.mask;
      return out;
    }
    case 'set': {
      const out = input.slice();
      out[m.at % n] = m.value;
      return out;
    }
    case 'truncate':
      return input.slice(0, m.to % n);
    case 'append': {
      const out = new Uint8Array(n + m.bytes.length);
      out.set(input);
      out.set(m.bytes, n);
      return out;
    }
    case 'splice': {
      const at = m.at % n;
      const count = Math.min(m.count, n - at);
      const out = new Uint8Array(n - count);
      out.set(input.subarray(0, at));
      out.set(input.subarray(at + count), at);
      return out;
    }
  }
}

describe('decode fuzzing', () => {
  it('mutated encodings are rejected with a BitmapError or round-trip exactly', () => {
    const codes = new Map<string, number>();
    fc.assert(
      fc.property(
        bitmapArb,
        fc.array(mutationArb, { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        ({ size, indices }, mutations, fixChecksum) => {
          let bytes = encode(PageBitmap.fromIndices(size, indices));
          for (const m of mutations) bytes = mutate(bytes, m);
          if (fixChecksum) bytes = withFixedChecksum(bytes);
          const r = decodeOrReject(bytes);
          codes.set(r, (codes.get(r) ?? 0) + 1);
        },
      ),
      { numRuns: 3000 },
    );
    // The fuzzer reached the structural checks, not only the checksum.
    expect(codes.get('BITMAP_MALFORMED')).toBeGreaterThan(0);
    expect(codes.get('BITMAP_UNSUPPORTED_VERSION')).toBeGreaterThan(0);
    expect(codes.get('BITMAP_TOO_LARGE')).toBeGreaterThan(0);
  });

  it('random bytes, with or without a valid magic and version, never escape as other errors', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 200 }),
        fc.constantFrom('raw', 'magic', 'magic+version'),
        fc.option(fc.integer({ min: 0, max: 4096 }), { nil: undefined }),
        (body, prefix, maxBits) => {
          const head =
            prefix === 'raw'
              ? []
              : prefix === 'magic'
                ? [0x48, 0x42, 0x4d, 0x50]
                : [0x48, 0x42, 0x4d, 0x50, 1, 0, 0, 0];
          const bytes = new Uint8Array(head.length + body.length);
          bytes.set(head);
          bytes.set(body, head.length);
          decodeOrReject(bytes, maxBits);
          decodeOrReject(withFixedChecksum(bytes), maxBits);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('every prefix of a valid encoding is rejected as malformed', () => {
    fc.assert(
      fc.property(bitmapArb, ({ size, indices }) => {
        const bytes = encode(PageBitmap.fromIndices(size, indices));
        for (let n = 0; n < bytes.length; n++) {
          expect(decodeOrReject(bytes.subarray(0, n))).toBe('BITMAP_MALFORMED');
        }
      }),
      { numRuns: 50 },
    );
  });
});
