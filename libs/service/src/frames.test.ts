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

describe('FramedSocket frame bound', () => {
  let dir = '';
  let server: Server | undefined;
  afterEach(() => {
    server?.close();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  /** A server whose one connection is a FramedSocket with `frameTimeoutMs`; what it saw. */
  async function listen(frameTimeoutMs: number, onSocket?: (f: FramedSocket) => void) {
    dir = mkdtempSync(join(tmpdir(), 'frames-'));
    const path = join(dir, 's.sock');
    const seen = {
      frames: [] as Uint8Array[],
      closed: undefined as Error | null | undefined,
      closedAt: 0,
      socketClosed: false,
    };
    server = createServer((s) => {
      s.on('close', () => (seen.socketClosed = true));
      const f = new FramedSocket(
        s,
        4 << 20,
        {
          frame: (p) => seen.frames.push(p),
          closed: (e) => {
            seen.closed = e;
            seen.closedAt = performance.now();
          },
        },
        { frameTimeoutMs },
      );
      onSocket?.(f);
    });
    await new Promise<void>((r) => server!.listen(path, r));
    return { path, seen };
  }

  it('closes a connection whose frame announced 3 MiB and sent 10 bytes, after the bound', async () => {
    const { path, seen } = await listen(400);
    const raw = connect(path);
    let peerClosed = false;
    raw.on('close', () => (peerClosed = true));
    raw.on('error', () => undefined);
    const t0 = performance.now();
    raw.write(frameHeader(3 << 20));
    raw.write(bytes(10, 1));
    await expect.poll(() => seen.closed !== undefined, { timeout: 5000 }).toBe(true);
    const after = seen.closedAt - t0;
    expect(after).toBeGreaterThanOrEqual(390);
    expect(after).toBeLessThan(400 * 1.5 + 300); // the bound and a half, plus scheduling slack
    expect(seen.closed).toBeInstanceOf(FrameError);
    expect((seen.closed as FrameError).timedOut).toBe(true);
    expect(seen.closed!.message).toBe(
      'a frame of 3145728 bytes (10 received) was still incomplete 400 ms after it began; the ' +
        'peer stalled mid-frame, so the connection is closed',
    );
    await expect.poll(() => seen.socketClosed && peerClosed, { timeout: 5000 }).toBe(true);
    expect(seen.frames).toEqual([]);
  });

  it('also bounds a frame whose length prefix stops halfway', async () => {
    const { path, seen } = await listen(200);
    const raw = connect(path);
    raw.on('error', () => undefined);
    raw.write(Uint8Array.of(0, 0));
    await expect.poll(() => seen.closed !== undefined, { timeout: 5000 }).toBe(true);
    expect(seen.closed!.message).toMatch(/^a frame header \(2 of 4 bytes\) was still incomplete/);
    raw.destroy();
  });

  it('leaves alone a slow stream whose frames keep completing, and an idle connection', async () => {
    const { path, seen } = await listen(300);
    const raw = connect(path);
    // Eight frames, each sent in two halves 100 ms apart: 800 ms in all, always mid-frame.
    for (let k = 0; k < 8; k++) {
      const wire = framed(bytes(1000, k));
      raw.write(wire.subarray(0, 500));
      await new Promise((r) => setTimeout(r, 50));
      raw.write(wire.subarray(500));
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 700)); // idle between frames: no bound
    expect(seen.frames.length).toBe(8);
    expect(seen.closed).toBeUndefined();
    raw.end();
    await expect.poll(() => seen.closed !== undefined, { timeout: 5000 }).toBe(true);
    expect(seen.closed).toBeNull();
  });

  it('does not count the time the owner paused reading', async () => {
    let framedSocket: FramedSocket | undefined;
    const { path, seen } = await listen(200, (f) => (framedSocket = f));
    const raw = connect(path);
    const wire = framed(bytes(1 << 20, 3));
    raw.write(wire.subarray(0, 100));
    await expect.poll(() => framedSocket !== undefined).toBe(true);
    framedSocket!.pause(); // the owner is busy: the rest waits in the kernel, not the peer's fault
    raw.write(wire.subarray(100));
    await new Promise((r) => setTimeout(r, 600));
    expect(seen.closed).toBeUndefined();
    framedSocket!.resume();
    await expect.poll(() => seen.frames.length, { timeout: 5000 }).toBe(1);
    expect(seen.closed).toBeUndefined();
    raw.destroy();
  });

  it('has no bound with frameTimeoutMs 0', async () => {
    const { path, seen } = await listen(0);
    const raw = connect(path);
    raw.write(frameHeader(100));
    await new Promise((r) => setTimeout(r, 300));
    expect(seen.closed).toBeUndefined();
    raw.destroy();
    await expect.poll(() => seen.closed !== undefined).toBe(true);
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
