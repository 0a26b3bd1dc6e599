import { sideChannelClientTls, type TlsMaterial } from '@handoff/service';
import { connect, type Socket } from 'node:net';
import * as tls from 'node:tls';
import { MemstoreError } from '../errors.js';
import { PAGE_CHANNEL_CIPHERS, parsePageAddress } from './page-channel-server.js';
import {
  FRAME_PREFIX,
  FrameType,
  helloFrame,
  MAX_CONTROL_FRAME,
  MAX_REQUEST_PAGES,
  PAGE_BYTES,
  PAGE_CHANNEL_VERSION,
  readPage,
  readString,
  REQUEST_FRAME,
  writeRequest,
} from './wire.js';

/** Where a connection's page bytes go, as they arrive. */
export interface PageSink {
  /**
   * `chunk` holds bytes `[offset, offset + chunk.length)` of the PAGES frame for pages starting
   * at `first` (offset 0 is the first page's first byte). Called as the bytes arrive; `chunk`
   * is only valid during the call.
   */
  data(first: number, offset: number, chunk: Buffer): void;
  /** Every byte of the frame `[first, first + count)` arrived. */
  done(first: number, count: number): void;
}

/** Bytes a plain socket reads at once into its reused buffer. */
const READ_BUFFER_BYTES = 1024 * 1024;

/** Bytes a connection handles per turn of the event loop before it lets other work in. */
const TURN_BYTES = 256 * 1024;

/** How long connecting and the hello may take. */
export const CONNECT_TIMEOUT_MS = 3000;

/**
 * A reader's connection to a page channel (wire.ts): says HELLO, then sends REQUESTs and feeds
 * the PAGES frames to its sink as the bytes arrive (no frame is assembled: each socket chunk is
 * handed over as it is). Answers come in request order. The source is hostile too: a frame that
 * does not answer the oldest outstanding request closes the connection.
 */
export class PageConnection {
  private readonly outstanding: { first: number; count: number }[] = [];
  private head = 0;
  private closedBy: Error | null = null;
  /** Paused by its owner ({@link pause}). */
  private paused = false;
  /** Paused until the next turn of the event loop (its read budget is spent). */
  private yielding = false;
  private onClosed: ((err: Error | null) => void) | null = null;

  private constructor(
    private readonly socket: Socket,
    readonly pages: number,
  ) {}

  /**
   * Connects to `address`, says hello with `sourceId` and `token`, and waits for the welcome.
   * Over TCP with `material`, mutual TLS trusting only the cluster CA and a server certificate
   * of a memstore naming the host.
   *
   * @throws MemstoreError LAZY_SOURCE_UNAVAILABLE when it cannot connect; the source's refusal
   *   code (e.g. PAGE_SOURCE_NOT_FOUND, LEASE_NOT_HELD) when it refuses the hello
   */
  static connect(opts: {
    address: string;
    tls: TlsMaterial | null;
    sourceId: string;
    token: string;
    pages: number;
    sink: PageSink;
  }): Promise<PageConnection> {
    const where = parsePageAddress(opts.address);
    const material = opts.tls;
    // Plain sockets read straight into one reused buffer (no allocation per chunk); TLS
    // sockets hand over their decrypted chunks.
    let feed: ((chunk: Buffer) => void) | null = null;
    const onread = {
      buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
      callback: (n: number, buf: Uint8Array): boolean => {
        feed?.(Buffer.from(buf.buffer, buf.byteOffset, n));
        return true;
      },
    };
    const socket: Socket =
      'path' in where
        ? connect({ path: where.path, onread })
        : material === null
          ? connect({ port: where.port, host: where.host, onread })
          : tls.connect({
              host: where.host,
              port: where.port,
              ...sideChannelClientTls(material, 'memstore', 'page channel'),
              ciphers: PAGE_CHANNEL_CIPHERS,
            });
    socket.setNoDelay(true);
    const conn = new PageConnection(socket, opts.pages);
    return new Promise<PageConnection>((resolve, reject) => {
      const timer = setTimeout(
        () => socket.destroy(new Error(`no welcome within ${CONNECT_TIMEOUT_MS} ms`)),
        CONNECT_TIMEOUT_MS,
      );
      let welcomed = false;
      conn.onClosed = (err) => {
        clearTimeout(timer);
        if (!welcomed) {
          reject(
            MemstoreError.is(err)
              ? err
              : new MemstoreError(
                  'LAZY_SOURCE_UNAVAILABLE',
                  `cannot reach the page channel at ${opts.address}: ${err?.message ?? 'closed'}`,
                  { cause: err },
                ),
          );
        }
      };
      feed = conn.read(opts.sink, (pages) => {
        clearTimeout(timer);
        if (pages !== opts.pages) {
          conn.close(
            new MemstoreError(
              'REGION_IDENTITY_MISMATCH',
              `the page source serves ${pages} pages; the region has ${opts.pages}`,
            ),
          );
          return;
        }
        welcomed = true;
        conn.onClosed = null;
        resolve(conn);
      });
      socket.write(helloFrame(opts.sourceId, opts.token));
    });
  }

  /** Called once when the connection ends: null when {@link close}d without an error. */
  set closed(fn: (err: Error | null) => void) {
    if (this.socket.destroyed) fn(this.closedBy);
    else this.onClosed = fn;
  }

  /** False once the connection ended (closed, refused, or the source went away). */
  get open(): boolean {
    return !this.socket.destroyed;
  }

  /** Requests outstanding (asked, not fully answered). */
  get inFlight(): number {
    return this.outstanding.length - this.head;
  }

  /** Asks for `[first, first + count)`; count at most {@link MAX_REQUEST_PAGES}. */
  request(first: number, count: number): void {
    if (count < 1 || count > MAX_REQUEST_PAGES || first + count > this.pages) {
      throw new Error(`internal: page request ${first}+${count} of ${this.pages}`);
    }
    this.outstanding.push({ first, count });
    this.socket.write(requestFrameOf(first, count));
  }

  /** Stops reading (what the source sends waits in the kernel, then at the source). */
  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  /** Reads again after {@link pause}. */
  resume(): void {
    this.paused = false;
    if (!this.yielding) this.socket.resume();
  }

  /** Ends the connection (its outstanding requests are dropped). */
  close(err: Error | null = null): void {
    this.closedBy ??= err;
    this.socket.destroy();
  }

  /** Parses the source's frames; PAGES bytes go to `sink` chunk by chunk. */
  private read(sink: PageSink, welcome: (pages: number) => void): (chunk: Buffer) => void {
    let header = Buffer.alloc(0);
    /** Inside a PAGES frame: its pages and how many of its bytes are still to come. */
    let first = 0;
    let count = 0;
    let offset = 0;
    let remaining = 0;
    const fail = (message: string): void =>
      this.close(new MemstoreError('LAZY_SOURCE_UNAVAILABLE', `page channel: ${message}`));

    let turnBytes = 0;
    const feed = (chunk: Buffer): void => {
      try {
        parse(chunk);
      } catch (err) {
        fail((err as Error).message);
        return;
      }
      // Bounded work per turn of the event loop: past the budget, reading stops until the next
      // turn, so a page request (the lease channel, the demand connection) is not kept waiting
      // behind a burst of background pages.
      turnBytes += chunk.length;
      if (turnBytes >= TURN_BYTES && !this.yielding) {
        this.yielding = true;
        this.socket.pause();
        setImmediate(() => {
          this.yielding = false;
          turnBytes = 0;
          if (!this.paused && !this.socket.destroyed) this.socket.resume();
        });
      }
    };
    this.socket.on('data', feed);
    const parse = (chunk: Buffer): void => {
      let at = 0;
      while (at < chunk.length && !this.socket.destroyed) {
        if (remaining > 0) {
          const n = Math.min(remaining, chunk.length - at);
          sink.data(first, offset, chunk.subarray(at, at + n));
          offset += n;
          remaining -= n;
          at += n;
          if (remaining === 0) {
            this.head++;
            if (this.head > 1024 && this.head * 2 > this.outstanding.length) {
              this.outstanding.splice(0, this.head);
              this.head = 0;
            }
            sink.done(first, count);
          }
          continue;
        }
        // A frame's prefix (and, for PAGES, its 12-byte header) may straddle chunks.
        const need = header.length < FRAME_PREFIX ? FRAME_PREFIX : frameHeaderBytes(header);
        const take = Math.min(need - header.length, chunk.length - at);
        header = Buffer.concat([header, chunk.subarray(at, at + take)]);
        at += take;
        if (header.length < need) continue;
        if (need === FRAME_PREFIX) {
          const len = header.readUInt32BE(0);
          const type = header[4]!;
          if (len < 1 || (type !== FrameType.Pages && len + 4 > MAX_CONTROL_FRAME)) {
            fail(`a frame of ${len} bytes breaks the framing`);
            return;
          }
          if (frameHeaderBytes(header) > FRAME_PREFIX) continue;
        }
        const type = header[4]!;
        const len = header.readUInt32BE(0);
        if (type === FrameType.Pages) {
          first = readPage(header, 5);
          count = header.readUInt32BE(13);
          const want = this.outstanding[this.head];
          if (want === undefined || want.first !== first || want.count !== count) {
            fail(`pages ${first}+${count} answer no outstanding request`);
            return;
          }
          if (len !== 13 + count * PAGE_BYTES) {
            fail(`a PAGES frame of ${len} bytes for ${count} pages`);
            return;
          }
          offset = 0;
          remaining = count * PAGE_BYTES;
          header = Buffer.alloc(0);
          continue;
        }
        const body = header.subarray(FRAME_PREFIX);
        header = Buffer.alloc(0);
        if (type === FrameType.Welcome && body.length === 14) {
          if (
            body.readUInt16BE(0) !== PAGE_CHANNEL_VERSION ||
            body.readUInt32BE(2) !== PAGE_BYTES
          ) {
            fail('the source speaks another version of the page channel');
            return;
          }
          welcome(readPage(body, 6));
          continue;
        }
        if (type === FrameType.Error) {
          const [code, o] = readString(body, 0, 'ERROR code');
          const [message] = readString(body, o, 'ERROR message');
          const known = /^[A-Z_]{1,64}$/.test(code) ? code : 'LAZY_SOURCE_UNAVAILABLE';
          this.close(
            new MemstoreError(
              MemstoreError.isCode(known) ? known : 'LAZY_SOURCE_UNAVAILABLE',
              `the page source refused: ${code}: ${message}`,
            ),
          );
          return;
        }
        fail(`unexpected frame type ${type}`);
        return;
      }
    };
    this.socket.on('error', (err) => {
      this.closedBy ??= err;
    });
    this.socket.once('close', () => {
      const fn = this.onClosed;
      this.onClosed = null;
      fn?.(this.closedBy ?? new Error('the page channel closed'));
    });
    return feed;
  }
}

/**
 * Bytes of a control frame's prefix and body, or of a PAGES frame's prefix and 12-byte header
 * (its pages are streamed), once the 5-byte prefix is known.
 */
function frameHeaderBytes(prefix: Buffer): number {
  const len = prefix.readUInt32BE(0);
  return prefix[4] === FrameType.Pages ? FRAME_PREFIX + 12 : 4 + len;
}

function requestFrameOf(first: number, count: number): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_FRAME);
  writeRequest(b, 0, first, count);
  return b;
}
