import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { MAX_BITS, PageBitmap } from './page-bitmap.js';
import { expectBitmapError, withFixedChecksum } from './testing/support.js';
import {
  WIRE_HEADER_BYTES,
  decode,
  decodeInto,
  encode,
  encodeInto,
  encodedByteLength,
  wordsFromLittleEndian,
  wordsToLittleEndian,
} from './wire.js';

/** Parse a `.hex` fixture: hex byte pairs, `#` comments. */
function readHexFixture(name: string): Uint8Array {
  const text = readFileSync(new URL(`../fixtures/${name}`, import.meta.url), 'utf8');
  const hex = text
    .split('\n')
    .map((l) => l.replace(/#.*/, ''))
    .join('')
    .replace(/\s+/g, '');
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function sample(): PageBitmap {
  return PageBitmap.fromIndices(100, [0, 1, 63, 64, 99]);
}

describe('golden files (format 1.0)', () => {
  it('decodes the 1.0 fixture written by an independent encoder', () => {
    const bytes = readHexFixture('wire-v1.0-100bits.hex');
    const b = decode(bytes);
    expect(b.size).toBe(100);
    expect(b.toIndices()).toEqual([0, 1, 63, 64, 99]);
  });

  it('encodes byte-for-byte the same as the fixture', () => {
    expect(encode(sample())).toEqual(readHexFixture('wire-v1.0-100bits.hex'));
  });

  it('encodes the empty bitmap as header + sentinel (32 bytes)', () => {
    const bytes = encode(new PageBitmap(0));
    expect(bytes.length).toBe(32);
    expect(Buffer.from(bytes).toString('hex')).toBe(
      '48424d50' +
        '01000000' +
        '0000000000000000' +
        'b814c7b7' /* crc32 0xb7c714b8, from Python zlib */ +
        '00000000' +
        Buffer.from('BITS-END').toString('hex'),
    );
    expect(decode(bytes).size).toBe(0);
  });
});

describe('encodeInto', () => {
  it('writes at an offset into caller memory and reports the length', () => {
    const out = new Uint8Array(100).fill(0xaa);
    const n = encodeInto(sample(), out, 4);
    expect(n).toBe(encodedByteLength(100));
    expect(out[3]).toBe(0xaa);
    expect(out[4 + n]).toBe(0xaa);
    expect(decode(out.subarray(4, 4 + n)).equals(sample())).toBe(true);
  });

  it('refuses a buffer that is too small', () => {
    expectBitmapError(() => encodeInto(sample(), new Uint8Array(47)), 'BITMAP_INVALID_ARGUMENT');
    expectBitmapError(() => encodeInto(sample(), new Uint8Array(48), 1), 'BITMAP_INVALID_ARGUMENT');
  });
});

describe('decode rejects malformed input', () => {
  const good = encode(sample()); // 48 bytes: header 24, words 16, sentinel 8

  function edit(at: number, bytes: number[], fix = true): Uint8Array {
    const out = good.slice();
    out.set(bytes, at);
    return fix ? withFixedChecksum(out) : out;
  }

  it('wrong magic', () => {
    const e = expectBitmapError(
      () => decode(edit(0, [0x48, 0x42, 0x4d, 0x51])),
      'BITMAP_MALFORMED',
    );
    expect(e.message).toMatch(/magic/);
  });

  it('unknown major version, newer minor version', () => {
    expectBitmapError(() => decode(edit(4, [2, 0])), 'BITMAP_UNSUPPORTED_VERSION');
    expectBitmapError(() => decode(edit(4, [0, 0])), 'BITMAP_UNSUPPORTED_VERSION');
    const e = expectBitmapError(() => decode(edit(6, [1, 0])), 'BITMAP_UNSUPPORTED_VERSION');
    expect(e.message).toMatch(/1\.1/);
  });

  it('non-zero reserved field', () => {
    expectBitmapError(() => decode(edit(20, [1])), 'BITMAP_MALFORMED');
  });

  it('bit length overflowing 32 bits or exceeding maxBits / MAX_BITS', () => {
    expectBitmapError(() => decode(edit(12, [1])), 'BITMAP_TOO_LARGE');
    expectBitmapError(
      () => decode(edit(8, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])),
      'BITMAP_TOO_LARGE',
    );
    expectBitmapError(() => decode(good, { maxBits: 99 }), 'BITMAP_TOO_LARGE');
    const over = new DataView(new ArrayBuffer(4));
    over.setUint32(0, MAX_BITS + 1, true);
    expectBitmapError(() => decode(edit(8, [...new Uint8Array(over.buffer)])), 'BITMAP_TOO_LARGE');
    expect(decode(good, { maxBits: 100 }).size).toBe(100);
  });

  it('a huge declared length with a tiny body fails before allocating', () => {
    const huge = new DataView(new ArrayBuffer(4));
    huge.setUint32(0, MAX_BITS, true);
    const t0 = performance.now();
    const e = expectBitmapError(
      () => decode(edit(8, [...new Uint8Array(huge.buffer)])),
      'BITMAP_MALFORMED',
    );
    expect(e.message).toMatch(/truncated/);
    expect(performance.now() - t0).toBeLessThan(50);
  });

  it('size other than expectedBits', () => {
    const e = expectBitmapError(() => decode(good, { expectedBits: 101 }), 'BITMAP_SIZE_MISMATCH');
    expect(e.message).toMatch(/100 bits but 101/);
    expectBitmapError(() => decodeInto(good, new PageBitmap(64)), 'BITMAP_SIZE_MISMATCH');
  });

  it('truncated header, truncated body, missing sentinel', () => {
    for (const n of [0, 1, 23, 24, 31, 39, 40, 47]) {
      expectBitmapError(() => decode(good.subarray(0, n)), 'BITMAP_MALFORMED');
    }
    // A length that claims one more word than present: the sentinel lands where words should be.
    const longer = edit(8, [0x81]);
    expectBitmapError(() => decode(longer), 'BITMAP_MALFORMED');
  });

  it('wrong sentinel', () => {
    const e = expectBitmapError(() => decode(edit(40, [0x43])), 'BITMAP_MALFORMED');
    expect(e.message).toMatch(/sentinel/);
  });

  it('trailing garbage after the sentinel', () => {
    for (const extra of [1, 7, 8, 64]) {
      const padded = new Uint8Array(good.length + extra);
      padded.set(good);
      const e = expectBitmapError(() => decode(padded), 'BITMAP_MALFORMED');
      expect(e.message).toMatch(/trailing/);
    }
  });

  it('checksum mismatch (any flipped word bit)', () => {
    for (let byte = 24; byte < 40; byte++) {
      const e = expectBitmapError(
        () => decode(edit(byte, [good[byte]! ^ 0x10], false)),
        'BITMAP_MALFORMED',
      );
      expect(e.message).toMatch(/checksum/);
    }
  });

  it('bits set beyond the bit length in the last word', () => {
    for (const [bits, bit] of [
      [100, 100],
      [100, 127],
      [96, 96],
      [80, 127],
      [64 + 32, 64 + 32],
      [64 + 31, 64 + 31],
      [1, 1],
      [1, 63],
    ] as const) {
      const b = new PageBitmap(bits);
      const bytes = encode(b);
      const at = WIRE_HEADER_BYTES + Math.floor(bit / 8);
      bytes[at] = bytes[at]! | (1 << (bit % 8));
      const e = expectBitmapError(() => decode(withFixedChecksum(bytes)), 'BITMAP_MALFORMED');
      expect(e.message).toMatch(/beyond the bit length/);
    }
  });

  it('non-Uint8Array input and bad options are BITMAP_INVALID_ARGUMENT', () => {
    expectBitmapError(() => decode('HBMP' as unknown as Uint8Array), 'BITMAP_INVALID_ARGUMENT');
    expectBitmapError(() => decode(good, { maxBits: -1 }), 'BITMAP_INVALID_ARGUMENT');
    expectBitmapError(() => decode(good, { maxBits: MAX_BITS + 1 }), 'BITMAP_INVALID_ARGUMENT');
    expectBitmapError(() => decode(good, { expectedBits: 1.5 }), 'BITMAP_INVALID_ARGUMENT');
  });

  it('decodeInto leaves the target unchanged when the input is bad', () => {
    const target = PageBitmap.fromIndices(100, [5, 6, 7]);
    expectBitmapError(() => decodeInto(edit(40, [0], false), target), 'BITMAP_MALFORMED');
    const stray = encode(new PageBitmap(100));
    stray[WIRE_HEADER_BYTES + 15] = 0x80;
    expectBitmapError(() => decodeInto(withFixedChecksum(stray), target), 'BITMAP_MALFORMED');
    expect(target.toIndices()).toEqual([5, 6, 7]);
  });
});

describe('byte order', () => {
  it('the big-endian host path produces and reads the same little-endian bytes', () => {
    const b = PageBitmap.fromIndices(200, [0, 7, 8, 31, 32, 63, 64, 150, 199]);
    const le = new Uint8Array(b.words.length * 4);
    const be = new Uint8Array(b.words.length * 4);
    wordsToLittleEndian(b.words, le, 0, true);
    wordsToLittleEndian(b.words, be, 0, false);
    expect(be).toEqual(le);
    const back = new PageBitmap(200);
    wordsFromLittleEndian(le, 0, back.words, false);
    expect(back.equals(b)).toBe(true);
  });
});
