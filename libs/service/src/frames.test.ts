import { createServer, connect, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RecycledBuffers, FrameDecoder, FrameError, FramedSocket, frameHeader } from './frames.js';

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
      for (let at = 0; at < wire.length; at += step)
        got.push(...d.push(wire.subarray(at, at + step)));
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

  it('says to wait once queueBytes wait to go out, and resumes when half went', async () => {
    dir = mkdtempSync(join(tmpdir(), 'frames-'));
    const path = join(dir, 's.sock');
    let peer: Socket | undefined;
    server = createServer((s) => {
      peer = s;
      s.pause(); // reads nothing until told
    });
    await new Promise<void>((r) => server!.listen(path, r));
    const client = new FramedSocket(
      connect(path),
      16,
      { frame: () => undefined, closed: () => undefined },
      { queueBytes: 4 << 20 },
    );
    const sends: boolean[] = [];
    for (let k = 0; k < 6; k++) sends.push(client.send(bytes(1 << 20, k)));
    expect(sends.indexOf(false)).toBe(3); // 4 MiB and a few bytes queued after the fourth
    let resumed = false;
    const drained = client.drained().then(() => (resumed = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(resumed).toBe(false); // the peer still reads nothing
    await expect.poll(() => peer !== undefined).toBe(true);
    peer!.resume();
    await drained;
    expect(resumed).toBe(true);
    client.destroy();
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

describe('RecycledBuffers', () => {
  it('reuses a given-back buffer, never one still out, and ignores foreign views', () => {
    const pool = new RecycledBuffers(1024, 2);
    const a = pool.take(1000);
    const b = pool.take(10);
    expect(a.buffer).not.toBe(b.buffer);
    expect(a.length).toBe(1000);
    pool.give(a.subarray(5, 9)); // any view of it
    pool.give(a); // twice: one entry
    pool.give(new Uint8Array(1024)); // not the pool's
    expect(pool.freeCount).toBe(1);
    const c = pool.take(700);
    expect(c.buffer).toBe(a.buffer);
    expect(c.length).toBe(700);
    expect(pool.take(2000).buffer.byteLength).toBe(2000); // too big: fresh, never pooled
  });

  it('assembles frames that span chunks in pooled buffers', () => {
    const pool = new RecycledBuffers(64 * 1024, 4);
    const d = new FrameDecoder(1 << 20, pool);
    const wire = framed(bytes(40_000, 1), bytes(40_000, 2));
    const got = [...d.push(wire.subarray(0, 30_000)), ...d.push(wire.subarray(30_000))];
    expect(got).toHaveLength(2);
    expect(same(got[0]!, bytes(40_000, 1))).toBe(true);
    expect(got[0]!.buffer.byteLength).toBe(64 * 1024); // from the pool
    pool.give(got[0]!);
    const again = d.push(framed(bytes(50_000, 3)).subarray(0, 20_000));
    expect(again).toHaveLength(0);
    const last = d.push(framed(bytes(50_000, 3)).subarray(20_000));
    expect(last[0]!.buffer).toBe(got[0]!.buffer);
    expect(same(last[0]!, bytes(50_000, 3))).toBe(true);
  });
});
