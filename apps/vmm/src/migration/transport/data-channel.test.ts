import { mkdtempSync, renameSync, rmSync } from 'node:fs';
import type * as net from 'node:net';
import { Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vmmStream } from '@handoff/proto';
import { FrameDecoder, frameHeader, type Logger } from '@handoff/service';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { IncomingChannel, OutgoingChannel } from './channel.js';
import {
  MAX_REQUEST_FRAME,
  connectDataChannel,
  dataChannelAlive,
  decodeRequest,
  startDataChannel,
  type DataChannelServer,
} from './data-channel.js';
import { MigrationError } from '../../model/migration-error.js';

// The real `connect`, replaceable per call: a probe that gets no answer needs a socket that never
// connects, which a real address cannot promise.
vi.mock('node:net', async (importOriginal) => {
  const real = await importOriginal<typeof net>();
  return { ...real, connect: vi.fn(real.connect) };
});

const quiet = { debug: () => undefined, warn: () => undefined } as unknown as Logger;

/** What a served connection saw: its requests, then how it ended. */
interface Served {
  requests: vmmStream.IncomingRequest[];
  end?: 'clean' | string;
}

describe('data channel', () => {
  let dir = '';
  let server: DataChannelServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  /** A server whose connections record what they read and ack each header. */
  async function serve(
    opts: { frameTimeoutMs?: number; logger?: Logger; ackMinor?: number } = {},
  ): Promise<Served[]> {
    dir = mkdtempSync(join(tmpdir(), 'dc-'));
    const seen: Served[] = [];
    server = await startDataChannel(
      `unix:${join(dir, 'data.sock')}`,
      async (ch: IncomingChannel) => {
        const s: Served = { requests: [] };
        seen.push(s);
        try {
          for (let r = await ch.next(); r !== null; r = await ch.next()) {
            s.requests.push(r);
            if (r.frame?.$case === 'header') {
              ch.write({
                reply: {
                  $case: 'headerAck',
                  value: {
                    formatMajor: 1,
                    formatMinor: opts.ackMinor ?? 0,
                    handoffSlot: '',
                    prebuilt: false,
                    leaseMove: 0,
                  },
                },
              });
            }
          }
          s.end = 'clean';
          ch.write({ reply: { $case: 'error', value: { code: 'X_DONE', message: 'bye' } } });
          ch.end();
        } catch (err) {
          s.end = (err as MigrationError).message;
        }
      },
      opts.logger ?? quiet,
      opts.frameTimeoutMs === undefined ? {} : { frameTimeoutMs: opts.frameTimeoutMs },
    );
    return seen;
  }

  it('carries requests in order, a 1 MiB page frame whole, and replies back', async () => {
    const seen = await serve();
    const replies: vmmStream.IncomingResponse[] = [];
    let broke: Error | undefined;
    // The first request goes out with the connection, the rest after it.
    const ch = await connectDataChannel(
      server!.address,
      { reply: (r) => replies.push(r), broken: (e) => (broke = e) },
      {
        frame: {
          $case: 'iteration',
          value: { iteration: 1, remainingDirtyBytes: 0n, final: false },
        },
      },
    );
    expect(ch.kind).toBe('data-channel');
    const data = new Uint8Array(1 << 20).map((_, i) => i % 251);
    ch.write({
      frame: {
        $case: 'pages',
        value: { runs: [{ block: 0, firstPage: 7n, pageCount: 256, flags: 0 }], data },
      },
    });
    await ch.drained();
    await expect.poll(() => seen[0]?.requests.length ?? 0, { timeout: 5000 }).toBe(2);
    expect(seen[0]!.requests[0]!.frame?.$case).toBe('iteration');
    const pages = seen[0]!.requests[1]!.frame;
    expect(pages?.$case).toBe('pages');
    if (pages?.$case === 'pages') {
      expect(pages.value.runs[0]!.firstPage).toBe(7n);
      expect(Buffer.from(pages.value.data).equals(Buffer.from(data))).toBe(true);
    }
    ch.close();
    await expect.poll(() => broke !== undefined, { timeout: 5000 }).toBe(true);
  });

  it('still delivers the outcome to a source that ended its side', async () => {
    const seen = await serve();
    const replies: vmmStream.IncomingResponse[] = [];
    const socket = connect(server!.address.slice('unix:'.length));
    socket.end(Buffer.concat([frameHeader(0)])); // one empty request, then end
    socket.on('data', (b: Buffer) =>
      replies.push({ reply: { $case: 'error', value: { code: String(b.length), message: '' } } }),
    );
    await expect.poll(() => seen[0]?.end, { timeout: 5000 }).toBe('clean');
    await expect.poll(() => replies.length, { timeout: 5000 }).toBeGreaterThan(0);
    socket.destroy();
  });

  it('fails only the connection that sends an oversize or undecodable frame', async () => {
    const seen = await serve();
    const big = connect(server!.address.slice('unix:'.length));
    big.write(frameHeader(MAX_REQUEST_FRAME + 1));
    const junk = connect(server!.address.slice('unix:'.length));
    junk.write(Buffer.concat([frameHeader(3), Buffer.from([0xff, 0xff, 0xff])]));
    await expect
      .poll(() => seen.filter((s) => s.end !== undefined).length, { timeout: 5000 })
      .toBe(2);
    const ends = seen.map((s) => s.end).sort();
    expect(ends[0]).toMatch(/at most 4194304 bytes per frame/);
    expect(ends[1]).toMatch(/undecodable frame/);
    big.destroy();
    junk.destroy();
    // The server still serves.
    const ok = await connectDataChannel(
      server!.address,
      { reply: () => undefined, broken: () => undefined },
      {
        frame: {
          $case: 'iteration',
          value: { iteration: 2, remainingDirtyBytes: 0n, final: true },
        },
      },
    );
    await expect.poll(() => seen[2]?.requests.length ?? 0, { timeout: 5000 }).toBe(1);
    ok.close();
  });

  it('fails and closes a connection whose source stalls mid-frame, logged; others go on', async () => {
    const warnings: string[] = [];
    const logger = {
      debug: () => undefined,
      warn: (_o: unknown, msg: string) => warnings.push(msg),
    } as unknown as Logger;
    const seen = await serve({ frameTimeoutMs: 300, logger });
    const stalled = connect(server!.address.slice('unix:'.length));
    let closedByTarget = false;
    stalled.on('close', () => (closedByTarget = true));
    stalled.on('error', () => undefined);
    stalled.write(frameHeader(3 << 20)); // announces 3 MiB ...
    stalled.write(new Uint8Array(10)); // ... and sends 10 bytes
    // A healthy stream alongside it keeps flowing.
    const ok = await connectDataChannel(
      server!.address,
      { reply: () => undefined, broken: () => undefined },
      {
        frame: {
          $case: 'iteration',
          value: { iteration: 1, remainingDirtyBytes: 0n, final: false },
        },
      },
    );
    await expect.poll(() => seen[0]?.end, { timeout: 5000 }).toMatch(/still incomplete/);
    expect(seen[0]!.end).toBe(
      'the stream broke before completion: a frame of 3145728 bytes (10 received) was still incomplete 300 ms after it began; the ' +
        'peer stalled mid-frame, so the connection is closed',
    );
    await expect.poll(() => closedByTarget, { timeout: 5000 }).toBe(true);
    expect(warnings).toEqual(['data channel: a source stalled mid-frame']);
    expect(seen[1]!.requests.length).toBe(1);
    expect(seen[1]!.end).toBeUndefined();
    ok.close();
  });

  it('fails a stream that ends in the middle of a frame, not as a clean end', async () => {
    const seen = await serve();
    const socket = connect(server!.address.slice('unix:'.length));
    socket.on('error', () => undefined);
    socket.end(Buffer.concat([frameHeader(100), new Uint8Array(10)]));
    await expect.poll(() => seen[0]?.end, { timeout: 5000 }).toMatch(/middle of a frame/);
    socket.destroy();
  });

  describe('raw page frames (format 1.3)', () => {
    const header: vmmStream.IncomingRequest = {
      frame: { $case: 'header', value: vmmStream.StreamHeader.fromPartial({ formatMajor: 1 }) },
    };
    const data = new Uint8Array(1 << 20).map((_, i) => (i % 251) | 1);
    const pages: vmmStream.IncomingRequest = {
      frame: {
        $case: 'pages',
        value: { runs: [{ block: 0, firstPage: 9n, pageCount: 256, flags: 0 }], data },
      },
    };

    /** A target that records each request payload as it arrived and acks the header. */
    async function recordingTarget(ackMinor: number): Promise<{ payloads: Uint8Array[] }> {
      dir = mkdtempSync(join(tmpdir(), 'dc-'));
      const payloads: Uint8Array[] = [];
      const ack = vmmStream.IncomingResponse.encode({
        reply: {
          $case: 'headerAck',
          value: vmmStream.HeaderAck.fromPartial({ formatMajor: 1, formatMinor: ackMinor }),
        },
      }).finish();
      const s = createServer((socket) => {
        const decoder = new FrameDecoder(MAX_REQUEST_FRAME);
        socket.on('data', (chunk: Buffer) => {
          for (const f of decoder.push(chunk)) {
            payloads.push(Uint8Array.from(f));
            if (payloads.length === 1) socket.write(Buffer.concat([frameHeader(ack.length), ack]));
          }
        });
      });
      const path = join(dir, 'data.sock');
      await new Promise<void>((resolve) => s.listen(path, resolve));
      server = {
        address: `unix:${path}`,
        close: () => new Promise<void>((resolve) => s.close(() => resolve())),
      };
      return { payloads };
    }

    /** Connects, waits for the ack, then sends `pages`; the caller closes the channel. */
    async function sendAfterAck(): Promise<OutgoingChannel> {
      let acked = false;
      const ch = await connectDataChannel(
        server!.address,
        { reply: () => (acked = true), broken: () => undefined },
        header,
      );
      await expect.poll(() => acked, { timeout: 5000 }).toBe(true);
      ch.write(pages);
      return ch;
    }

    for (const [minor, form, first] of [
      [3, 'raw', 0],
      [2, 'protobuf', 0x12],
    ] as const) {
      it(`go ${form} after a HeaderAck of format 1.${minor}, and decode to the same frame`, async () => {
        const { payloads } = await recordingTarget(minor);
        const ch = await sendAfterAck();
        await expect.poll(() => payloads.length, { timeout: 5000 }).toBe(2);
        ch.close();
        expect(payloads[0]![0]).toBe(0x0a); // the header: protobuf always
        expect(payloads[1]![0]).toBe(first);
        const back = decodeRequest(payloads[1]!).frame;
        expect(back?.$case === 'pages' && back.value.runs).toEqual(
          pages.frame?.$case === 'pages' && pages.frame.value.runs,
        );
        expect(back?.$case === 'pages' && Buffer.from(back.value.data).equals(data)).toBe(true);
      });
    }

    it('reach the receiver whole through a target, and a broken one fails only its stream', async () => {
      const seen = await serve({ ackMinor: 3 });
      const ch = await sendAfterAck();
      await expect.poll(() => seen[0]?.requests.length ?? 0, { timeout: 5000 }).toBe(2);
      ch.close();
      const got = seen[0]!.requests[1]!.frame;
      expect(got?.$case === 'pages' && Buffer.from(got.value.data).equals(data)).toBe(true);
      // Kind 0, then a reserved byte that is not zero.
      const hostile = connect(server!.address.slice('unix:'.length));
      hostile.on('error', () => undefined);
      hostile.write(Buffer.concat([frameHeader(8), Buffer.from([0, 1, 0, 0, 1, 0, 0, 0])]));
      await expect.poll(() => seen[1]?.end, { timeout: 5000 }).toMatch(/raw page frame rejected/);
      hostile.destroy();
    });
  });

  it('refuses to connect where nothing listens, saying so', async () => {
    const err = await connectDataChannel(
      'unix:/nonexistent/x.sock',
      { reply: () => undefined, broken: () => undefined },
      {
        frame: {
          $case: 'iteration',
          value: { iteration: 1, remainingDirtyBytes: 0n, final: true },
        },
      },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect((err as MigrationError).code).toBe('MIGRATION_TARGET_FAILED');
    expect((err as Error).message).toMatch(
      /cannot connect to the data channel at unix:\/nonexistent/,
    );
  });

  it('listens on TCP too and reports the bound port', async () => {
    const s = await startDataChannel('127.0.0.1:0', async () => undefined, quiet);
    try {
      expect(s.address).toMatch(/^127\.0\.0\.1:[1-9]\d*$/);
    } finally {
      await s.close();
    }
  });

  describe('dataChannelAlive (is the target still there?)', () => {
    const header: vmmStream.IncomingRequest = {
      frame: { $case: 'iteration', value: { iteration: 1, remainingDirtyBytes: 0n, final: true } },
    };

    it('says alive where a data channel listens, and the probe is a stream that ends unheard', async () => {
      const seen = await serve();
      expect(await dataChannelAlive(server!.address)).toBe(true);
      // The target sees a connection that ends before its first frame: nothing to serve.
      await expect.poll(() => seen[0]?.end, { timeout: 5000 }).toBe('clean');
      expect(seen[0]!.requests).toEqual([]);
      // And serves the next stream as usual.
      const ch = await connectDataChannel(
        server!.address,
        { reply: () => undefined, broken: () => undefined },
        header,
      );
      await expect.poll(() => seen[1]?.requests.length ?? 0, { timeout: 5000 }).toBe(1);
      expect(seen).toHaveLength(2);
      ch.close();
    });

    it('says gone where nothing listens: a missing path, a closed channel, a stale socket', async () => {
      await serve();
      expect(await dataChannelAlive(`unix:${join(dir, 'missing', 'data.sock')}`)).toBe(false);
      const address = server!.address;
      await server!.close();
      server = undefined;
      expect(await dataChannelAlive(address)).toBe(false); // its socket file went with it
      // A killed vmm leaves its socket file behind: moved aside, it outlives its server.
      const listening = join(dir, 'listening.sock');
      const stale = join(dir, 'stale.sock');
      const s = createServer();
      await new Promise<void>((resolve) => s.listen(listening, resolve));
      renameSync(listening, stale);
      expect(await dataChannelAlive(`unix:${stale}`)).toBe(true); // still the server's
      await new Promise((resolve) => s.close(resolve));
      expect(await dataChannelAlive(`unix:${stale}`)).toBe(false);
    });

    it('probes TCP channels too', async () => {
      const s = await startDataChannel('127.0.0.1:0', async () => undefined, quiet);
      const address = s.address;
      try {
        expect(await dataChannelAlive(address)).toBe(true);
      } finally {
        await s.close();
      }
      expect(await dataChannelAlive(address)).toBe(false);
    });

    it('says alive when it cannot tell: no answer within a second, or another error', async () => {
      const hanging = new Socket(); // never connects, never fails
      vi.mocked(connect).mockImplementationOnce(() => hanging);
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
      try {
        let alive: boolean | undefined;
        const probe = dataChannelAlive('unix:/run/handoff/data.sock').then((a) => (alive = a));
        await vi.advanceTimersByTimeAsync(999);
        expect(alive).toBeUndefined(); // still waiting
        await vi.advanceTimersByTimeAsync(1);
        await probe;
        expect(alive).toBe(true);
        expect(hanging.destroyed).toBe(true); // the probe does not linger
      } finally {
        vi.useRealTimers();
      }
      const refused = new Socket();
      vi.mocked(connect).mockImplementationOnce(() => refused);
      const probe = dataChannelAlive('unix:/run/handoff/data.sock');
      refused.emit('error', Object.assign(new Error('permission denied'), { code: 'EACCES' }));
      expect(await probe).toBe(true);
      expect(refused.destroyed).toBe(true);
    });
  });
});
