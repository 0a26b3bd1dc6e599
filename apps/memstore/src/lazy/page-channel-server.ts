import {
  parseSideChannelAddress,
  peerOfRole,
  sideChannelServerTls,
  type Logger,
  type TlsMaterial,
} from '@handoff/service';
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import * as tls from 'node:tls';
import { MemstoreError } from '../errors.js';
import { pageServeDelayMs } from '../failpoints.js';
import type { LiveSourceHandle, PageSources, ServedSource } from './page-sources.js';
import {
  errorFrame,
  FRAME_PREFIX,
  FrameType,
  MAX_READER_FRAME,
  MAX_REQUEST_PAGES,
  PAGE_BYTES,
  PAGE_CHANNEL_VERSION,
  pagesHeader,
  parseHello,
  readPage,
  welcomeFrame,
  WireError,
} from './wire.js';

/**
 * The page channel's listener on the source host (wire.ts has the format). A connection says
 * HELLO with a page source's id and token; then each REQUEST is answered, in order, by a PAGES
 * frame whose bytes come straight from the region's shared mapping (no copy on a plain socket).
 * Every request is bounds-checked; anything malformed or out of range gets an ERROR frame and
 * closes that connection only. Over TCP the channel is mutual TLS with the cluster's
 * certificates: only a memstore-role certificate the CA issued gets through, and its id must be
 * the page source's reader. A unix socket (plaintext clusters) lives in the memstore's private
 * volatile directory, mode 0600.
 */

/** Bytes queued on a connection before its requests wait for the socket to drain. */
const WRITE_QUEUE_BYTES = 8 * 1024 * 1024;
/**
 * The same over TLS, where a write is encrypted at once on this thread: a short queue lets the
 * other connections (a page request's) in between.
 */
const TLS_WRITE_QUEUE_BYTES = 1024 * 1024;

/**
 * TLS 1.3 suites, fastest first: page bytes are bulk data and the crypto bounds the channel's
 * rate (AES-128-GCM is about 15% faster than AES-256-GCM here).
 */
export const PAGE_CHANNEL_CIPHERS =
  'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

/** A listening page channel. */
export interface PageChannelServer {
  /** `host:port` or `unix:/path`, as OpenPageSource answers it. */
  readonly address: string;
  /** Open connections (tests). */
  readonly connections: number;
  close(): Promise<void>;
}

/** `unix:/path` → the path; `host:port` → host and port. */
export function parsePageAddress(
  address: string,
): { path: string } | { host: string; port: number } {
  const where = parseSideChannelAddress(address);
  if (where === null) {
    throw new MemstoreError(
      'REGION_INVALID_ARGUMENT',
      `page channel address ${JSON.stringify(address.slice(0, 100))} is neither unix:/path nor host:port`,
    );
  }
  return where;
}

/** Starts listening on `listen` (`unix:/path` or `host:port`, port 0 for any). */
export async function startPageChannel(deps: {
  listen: string;
  sources: PageSources;
  tls: TlsMaterial | null;
  logger: Logger;
}): Promise<PageChannelServer> {
  const logger = deps.logger.child({ component: 'page-channel' });
  const where = parsePageAddress(deps.listen);
  const open = new Set<Socket>();
  const accept = (socket: Socket, peer: string | null): void => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
    serveConnection(socket, peer, deps.sources, logger);
  };
  const material = deps.tls;
  const server: Server =
    material !== null && !('path' in where)
      ? tls
          .createServer(
            {
              ...sideChannelServerTls(material),
              ciphers: PAGE_CHANNEL_CIPHERS,
              honorCipherOrder: true,
            },
            (socket) => {
              const peer = peerOfRole(socket, 'memstore');
              if (peer === null) {
                logger.warn('page channel: refused a connection without a memstore certificate');
                socket.destroy();
                return;
              }
              accept(socket, peer);
            },
          )
          .on('tlsClientError', (err) =>
            logger.info({ error: err.message }, 'page channel: a TLS handshake failed'),
          )
      : createServer((socket) => accept(socket, null));
  if ('path' in where) rmSync(where.path, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('path' in where) server.listen(where.path, resolve);
    else server.listen(where.port, where.host, resolve);
  });
  server.on('error', (err) => logger.warn({ error: err.message }, 'page channel error'));
  let address: string;
  if ('path' in where) {
    chmodSync(where.path, 0o600);
    address = `unix:${where.path}`;
  } else {
    const a = server.address();
    const port = typeof a === 'object' && a !== null ? a.port : where.port;
    address = `${where.host.includes(':') ? `[${where.host}]` : where.host}:${port}`;
  }
  logger.info({ address, tls: material !== null && !('path' in where) }, 'page channel listening');
  let closing: Promise<void> | undefined;
  return {
    address,
    get connections() {
      return open.size;
    },
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of open) s.destroy();
        if ('path' in where) rmSync(where.path, { force: true });
      });
      return closing;
    },
  };
}

/**
 * Serves one connection: HELLO first, then REQUESTs answered in order. Writes wait for the
 * socket to drain (the reader's window bounds what it asks for; a reader that asks and never
 * reads only stalls its own connection).
 */
function serveConnection(
  socket: Socket,
  peer: string | null,
  sources: PageSources,
  logger: Logger,
): void {
  socket.setNoDelay(true);
  const queueBytes = socket instanceof tls.TLSSocket ? TLS_WRITE_QUEUE_BYTES : WRITE_QUEUE_BYTES;
  let served: (ServedSource & LiveSourceHandle) | null = null;
  let untrack: (() => void) | null = null;
  let pending: Buffer = Buffer.alloc(0);
  let dead = false;

  const fail = (code: string, message: string): void => {
    if (dead) return;
    dead = true;
    logger.info({ code, error: message, peer }, 'page channel: connection refused');
    socket.end(errorFrame(code, message));
    setTimeout(() => socket.destroy(), 1000).unref();
  };

  const onFrame = (type: number, body: Buffer): boolean => {
    if (served === null) {
      if (type !== FrameType.Hello) {
        fail('SERVICE_UNAUTHENTICATED', 'the first frame must be a HELLO with a page source token');
        return false;
      }
      const hello = parseHello(body);
      if (hello.version !== PAGE_CHANNEL_VERSION) {
        fail(
          'SERVICE_INVALID_ARGUMENT',
          `page channel version ${hello.version} is not served; this memstore speaks ${PAGE_CHANNEL_VERSION}`,
        );
        return false;
      }
      try {
        served = sources.admit(hello.sourceId, hello.token, peer);
      } catch (err) {
        const coded = MemstoreError.is(err) ? err : null;
        fail(coded?.code ?? 'SERVICE_INTERNAL', (err as Error).message);
        return false;
      }
      untrack = served.track(socket);
      socket.write(welcomeFrame(served.pages));
      return true;
    }
    if (type !== FrameType.Request || body.length !== 12) {
      fail('SERVICE_BAD_FRAME', `unexpected frame type ${type} (${body.length} bytes)`);
      return false;
    }
    const first = readPage(body, 0);
    const count = body.readUInt32BE(8);
    if (count === 0 || count > MAX_REQUEST_PAGES || first + count > served.pages) {
      fail(
        'REGION_OUT_OF_RANGE',
        `pages ${first}+${count} are outside the region's ${served.pages} pages (or more than ` +
          `${MAX_REQUEST_PAGES} at once)`,
      );
      return false;
    }
    const bytes = served.served();
    if (bytes === null) {
      fail(
        'LEASE_NOT_HELD',
        'the page source has not claimed its region (ClaimPageSource): the source VM may still ' +
          'write it, so nothing is served',
      );
      return false;
    }
    const off = first * PAGE_BYTES;
    socket.cork();
    socket.write(pagesHeader(first, count));
    socket.write(Buffer.from(bytes.buffer, bytes.byteOffset + off, count * PAGE_BYTES));
    socket.uncork();
    // Keep the kernel's buffer full: wait for a drain only past a bounded queue.
    return socket.writableLength < queueBytes;
  };

  /** Parses what is buffered; stops at a frame whose answer filled the socket's buffer. */
  const pump = (): void => {
    while (!dead) {
      if (pending.length < FRAME_PREFIX) return;
      const len = pending.readUInt32BE(0);
      if (len < 1 || len + 4 > MAX_READER_FRAME) {
        fail('SERVICE_BAD_FRAME', `a frame of ${len} bytes breaks the page channel's framing`);
        return;
      }
      if (pending.length < 4 + len) return;
      const type = pending[4]!;
      const body = pending.subarray(5, 4 + len);
      pending = pending.subarray(4 + len);
      let ok: boolean;
      try {
        ok = onFrame(type, body);
      } catch (err) {
        if (!(err instanceof WireError) && !(err instanceof RangeError)) throw err;
        fail('SERVICE_BAD_FRAME', err.message);
        return;
      }
      if (!ok && !dead) {
        socket.pause();
        if (!socket.writableNeedDrain) {
          setImmediate(() => {
            socket.resume();
            pump();
          });
          return;
        }
        socket.once('drain', () => {
          socket.resume();
          pump();
        });
        return;
      }
      if (pageServeDelayMs > 0 && served !== null && type === FrameType.Request && !dead) {
        socket.pause();
        setTimeout(() => {
          socket.resume();
          pump();
        }, pageServeDelayMs);
        return;
      }
    }
  };

  socket.on('data', (chunk: Buffer) => {
    if (dead) return;
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    if (pending.length > 64 * MAX_READER_FRAME && socket.writableLength >= queueBytes) {
      // A reader that keeps asking without reading: its requests pile up here.
      fail('SERVICE_BAD_FRAME', 'too many requests outstanding; read the answers');
      return;
    }
    if (socket.writableLength < queueBytes) pump();
  });
  socket.on('error', (err) =>
    logger.debug({ error: err.message }, 'page channel connection error'),
  );
  socket.once('close', () => untrack?.());
}
