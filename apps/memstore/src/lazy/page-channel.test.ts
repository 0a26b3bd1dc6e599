import { createLogger } from '@handoff/service';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemstoreError } from '../errors.js';
import { startPageChannel, type PageChannelServer } from './page-channel-server.js';
import { PageConnection, type PageSink } from './page-connection.js';
import type { PageSources } from './page-sources.js';
import { pagesHeader, welcomeFrame } from './wire.js';

const PAGES = 64;
const PAGE = 4096;
const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });

let dir: string;
let server: PageChannelServer | null = null;
let rogue: Server | null = null;
const region = new Uint8Array(new SharedArrayBuffer(PAGES * PAGE));
for (let i = 0; i < region.length; i++) region[i] = (i * 7 + (i >>> 12)) & 0xff;

/** Page sources that admit token `good` for source `s1` (the checks are page-sources.test.ts's). */
const sources = {
  admit: (id: string, token: string) => {
    if (id !== 's1' || token !== 'good') {
      throw new MemstoreError('PAGE_SOURCE_NOT_FOUND', 'no such page source');
    }
    return { id, pages: PAGES, served: () => region, track: () => () => {} };
  },
} as unknown as PageSources;

/** A sink collecting the pages into a copy of the region. */
function collector(): PageSink & {
  got: Uint8Array;
  done: (f: number, c: number) => void;
  frames: number[][];
} {
  const got = new Uint8Array(PAGES * PAGE);
  const frames: number[][] = [];
  return {
    got,
    frames,
    data: (first, offset, chunk) => got.set(chunk, first * PAGE + offset),
    done: (first, count) => frames.push([first, count]),
  };
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'page-channel-'));
});

afterEach(async () => {
  await server?.close();
  server = null;
  await new Promise<void>((r) => (rogue === null ? r() : rogue.close(() => r())));
  rogue = null;
  rmSync(dir, { recursive: true, force: true });
});

async function errorOf(p: Promise<unknown>): Promise<MemstoreError> {
  try {
    await p;
  } catch (err) {
    return err as MemstoreError;
  }
  throw new Error('resolved');
}

describe('the page channel', () => {
  it('answers requests in order with the region bytes; refuses a bad token at the hello', async () => {
    server = await startPageChannel({
      listen: `unix:${join(dir, 'p.sock')}`,
      sources,
      tls: null,
      logger,
    });
    const sink = collector();
    const conn = await PageConnection.connect({
      address: server.address,
      tls: null,
      sourceId: 's1',
      token: 'good',
      pages: PAGES,
      sink,
    });
    conn.request(8, 4);
    conn.request(0, 8);
    conn.request(63, 1);
    while (sink.frames.length < 3) await new Promise((r) => setTimeout(r, 5));
    expect(sink.frames).toEqual([
      [8, 4],
      [0, 8],
      [63, 1],
    ]);
    expect(
      Buffer.from(sink.got.subarray(0, 12 * PAGE)).equals(
        Buffer.from(region.subarray(0, 12 * PAGE)),
      ),
    ).toBe(true);
    expect(
      Buffer.from(sink.got.subarray(63 * PAGE)).equals(Buffer.from(region.subarray(63 * PAGE))),
    ).toBe(true);
    conn.close();

    const bad = await errorOf(
      PageConnection.connect({
        address: server.address,
        tls: null,
        sourceId: 's1',
        token: 'bad',
        pages: PAGES,
        sink: collector(),
      }),
    );
    expect(bad.code).toBe('PAGE_SOURCE_NOT_FOUND');
    const wrongSize = await errorOf(
      PageConnection.connect({
        address: server.address,
        tls: null,
        sourceId: 's1',
        token: 'good',
        pages: PAGES + 1,
        sink: collector(),
      }),
    );
    expect(wrongSize.code).toBe('REGION_IDENTITY_MISMATCH');
  });

  it('closes the connection to a source that answers pages nobody asked for', async () => {
    const path = join(dir, 'rogue.sock');
    rogue = createServer((socket) => {
      socket.once('data', () => {
        socket.write(welcomeFrame(PAGES));
        // PAGES for 5+1, never requested.
        socket.write(pagesHeader(5, 1));
        socket.write(Buffer.alloc(PAGE, 9));
      });
    });
    await new Promise<void>((r) => rogue!.listen(path, r));
    const sink = collector();
    const conn = await PageConnection.connect({
      address: `unix:${path}`,
      tls: null,
      sourceId: 's1',
      token: 'good',
      pages: PAGES,
      sink,
    });
    const closed = new Promise<Error | null>((r) => (conn.closed = r));
    const err = (await closed) as MemstoreError;
    expect(err.code).toBe('LAZY_SOURCE_UNAVAILABLE');
    expect(err.message).toContain('answer no outstanding request');
    expect(sink.frames).toEqual([]);
  });
});
