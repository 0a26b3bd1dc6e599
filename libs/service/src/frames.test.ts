import { createServer, connect, type Server } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FrameDecoder, FrameError, FramedSocket, frameHeader } from './frames.js';

function framed(...payloads: Uint8Array[]): Uint8Array {
  const parts = payloads.flatMap((p) => [frameHeader(p.length), p]);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

describe('FrameDecoder', () => {
  it('cuts frames however the stream is split', () => {
    const payloads = [bytes(0, 1), bytes(5, 2), bytes(70_000, 3), bytes(3, 4)];
    const wire = framed(...payloads);
    for (const step of [1, 2, 3, 5, 4096, wire.length]) {
      const d = new FrameDecoder(1 << 20);
      const got: Uint8Array[] = [];
      for (let at = 0; at < wire.length; at += step) got.push(...d.push(wire.subarray(at, at + step)));
      expect(got.length).toBe(payloads.length);
      got.forEach((g, k) => expect(same(g, payloads[k]!)).toBe(true));
      expect(d.idle).toBe(true);
    }
  });

  it('refuses a length over the limit before buffering it', () => {
    const d = new FrameDecoder(1000);
    expect(() => d.push(frameHeader(1001))).toThrow(FrameError);
    expect(() => new FrameDecoder(1000).push(frameHeader(0xffffffff))).toThrow(/4294967295 bytes/);
  });

  it('knows a stream that stops inside a frame', () => {
    const d = new FrameDecoder(100);
    d.push(framed(bytes(10, 0)).subarray(0, 7));
    expect(d.idle).toBe(false);
  });
});

describe('FramedSocket', () => {
  let dir = '';
  let server: Server | undefined;
  afterEach(() => {
    server?.close();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('carries frames both ways over a unix socket and reports a clean end', async () => {
    dir = mkdtempSync(join(tmpdir(), 'frames-'));
    const path = join(dir, 's.sock');
    server = createServer((s) => {
      const peer: FramedSocket = new FramedSocket(s, 1 << 21, {
        frame: (f) => peer.send(f, Uint8Array.of(f.length & 0xff)), // echo plus a byte
        closed: () => peer.end(),
      });
    });
    await new Promise<void>((r) => server!.listen(path, r));
    const got: Uint8Array[] = [];
    let ended: Error | null | undefined;
    const client = new FramedSocket(connect(path), 1 << 21, {
      frame: (f) => got.push(f),
      closed: (e) => (ended = e),
    });
    const big = bytes(1 << 20, 9);
    client.send(bytes(3, 1));
    client.send(big);
    await client.drained();
    await expect.poll(() => got.length, { timeout: 5000 }).toBe(2);
    expect([...got[0]!]).toEqual([...bytes(3, 1), 3]);
    expect(got[1]!.length).toBe(big.length + 1);
    expect(same(got[1]!.subarray(0, big.length), big)).toBe(true);
    client.end();
    await expect.poll(() => ended !== undefined, { timeout: 5000 }).toBe(true);
    expect(ended).toBeNull();
  });

  it('fails the stream on an oversize frame', async () => {
    dir = mkdtempSync(join(tmpdir(), 'frames-'));
    const path = join(dir, 's.sock');
    let failure: Error | null | undefined;
    server = createServer((s) => {
      new FramedSocket(s, 16, { frame: () => undefined, closed: (e) => (failure = e) });
    });
    await new Promise<void>((r) => server!.listen(path, r));
    const raw = connect(path);
    raw.write(frameHeader(17));
    await expect.poll(() => failure !== undefined, { timeout: 5000 }).toBe(true);
    expect(failure).toBeInstanceOf(FrameError);
    raw.destroy();
  });
});
