import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { vmmStream } from '@handoff/proto';
import { frameHeader, type Logger } from '@handoff/service';
import { afterEach, describe, expect, it } from 'vitest';
import type { IncomingChannel } from './channel.js';
import {
  MAX_REQUEST_FRAME,
  connectDataChannel,
  startDataChannel,
  type DataChannelServer,
} from './data-channel.js';
import { MigrationError } from './errors.js';

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
  async function serve(): Promise<Served[]> {
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
                  value: { formatMajor: 1, formatMinor: 0, handoffSlot: '' },
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
      quiet,
    );
    return seen;
  }

  it('carries requests in order, a 1 MiB page frame whole, and replies back', async () => {
    const seen = await serve();
    const replies: vmmStream.IncomingResponse[] = [];
    let broke: Error | undefined;
    const ch = await connectDataChannel(server!.address, {
      reply: (r) => replies.push(r),
      broken: (e) => (broke = e),
    });
    expect(ch.kind).toBe('data-channel');
    const data = new Uint8Array(1 << 20).map((_, i) => i % 251);
    ch.write({
      frame: { $case: 'iteration', value: { iteration: 1, remainingDirtyBytes: 0n, final: false } },
    });
    ch.write({
      frame: {
        $case: 'pages',
        value: { runs: [{ block: 0, firstPage: 7n, pageCount: 256, flags: 0 }], data },
      },
    });
    await ch.drained();
    await expect.poll(() => seen[0]?.requests.length ?? 0, { timeout: 5000 }).toBe(2);
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
    const ok = await connectDataChannel(server!.address, {
      reply: () => undefined,
      broken: () => undefined,
    });
    ok.write({
      frame: { $case: 'iteration', value: { iteration: 2, remainingDirtyBytes: 0n, final: true } },
    });
    await expect.poll(() => seen[2]?.requests.length ?? 0, { timeout: 5000 }).toBe(1);
    ok.close();
  });

  it('refuses to connect where nothing listens, saying so', async () => {
    const err = await connectDataChannel('unix:/nonexistent/x.sock', {
      reply: () => undefined,
      broken: () => undefined,
    }).catch((e: unknown) => e);
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
});
