import { FrameError, RecycledBuffers, frameHeader } from '@handoff/service';
import { describe, expect, it } from 'vitest';
import { InPlaceDecoder } from './in-place.js';

/**
 * Feeds `wire` to `d` as a socket would: each read fills at most `readMax(k)` bytes of the
 * buffer the decoder offers. Returns the frames in order.
 */
function feed(d: InPlaceDecoder, wire: Uint8Array, readMax: (k: number) => number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  for (let k = 0; at < wire.length; k++) {
    const into = d.buffer();
    if (into.length === 0) throw new Error('the decoder offered an empty buffer');
    const n = Math.min(into.length, readMax(k), wire.length - at);
    into.set(wire.subarray(at, at + n));
    at += n;
    const f = d.landed(n);
    if (f !== null) out.push(Uint8Array.from(f));
  }
  return out;
}

const framed = (payloads: Uint8Array[]): Uint8Array =>
  Buffer.concat(payloads.flatMap((p) => [frameHeader(p.length), p]));

describe('InPlaceDecoder', () => {
  const payloads = [
    new Uint8Array(100).fill(1),
    new Uint8Array(0),
    new Uint8Array(30_000).map((_, i) => i % 253),
    new Uint8Array(3).fill(9),
  ];

  it('cuts the same frames whatever the reads, prefixes and payloads split anywhere', () => {
    for (const readMax of [
      () => 1,
      () => 3,
      () => 1 << 20,
      (k: number) => ((k * 7919) % 5000) + 1,
    ]) {
      const d = new InPlaceDecoder(1 << 20, new RecycledBuffers(128 * 1024, 4));
      const got = feed(d, framed(payloads), readMax);
      expect(got).toEqual(payloads);
      expect(d.idle).toBe(true);
      expect(d.completed).toBe(payloads.length);
    }
  });

  it('reads a payload straight into a pooled buffer, and reuses it once given back', () => {
    const pool = new RecycledBuffers(128 * 1024, 4);
    const d = new InPlaceDecoder(1 << 20, pool);
    const payload = new Uint8Array(100_000).fill(7);
    const wire = framed([payload, payload]);
    d.buffer().set(wire.subarray(0, 4));
    expect(d.landed(4)).toBeNull();
    const into = d.buffer();
    expect(into.buffer.byteLength).toBe(128 * 1024); // the pool's, not a fresh chunk
    into.set(payload);
    const first = d.landed(payload.length)!;
    expect(first.buffer).toBe(into.buffer);
    pool.give(first);
    d.buffer().set(wire.subarray(4 + payload.length, 8 + payload.length));
    d.landed(4);
    expect(d.buffer().buffer).toBe(first.buffer);
  });

  it('reports a partial frame and refuses a length over the limit', () => {
    const d = new InPlaceDecoder(1000, new RecycledBuffers(4096, 1));
    d.buffer().set([0, 0]);
    d.landed(2);
    expect(d.partial).toEqual({ length: -1, received: 2 });
    d.buffer().set([0x03, 0xe8]); // 1000: the limit itself is fine
    d.landed(2);
    d.buffer().set([1, 2, 3]);
    d.landed(3);
    expect(d.partial).toEqual({ length: 1000, received: 3 });
    const big = new InPlaceDecoder(1000, new RecycledBuffers(4096, 1));
    big.buffer().set(frameHeader(1001));
    expect(() => big.landed(4)).toThrow(FrameError);
  });
});
