/**
 * The raw data channel: the migration stream over a plain socket (a unix socket by default,
 * or TCP), beside the gRPC MigrationService.Incoming call that carries the same stream.
 *
 * Why: one gRPC stream moves ≈0.4–0.5 GB/s here and a grpc-js message to an idle process costs
 * about a millisecond on each side, while a socket moves 1–1.5 GB/s and wakes its peer in
 * ≈0.15 ms. Bulk pages and the hand-off at the end of a bypass migration both pay for that.
 *
 * Wire: length-prefixed frames (libs/service frames.ts); each source → target frame is one
 * `IncomingRequest`, each target → source frame one `IncomingResponse`, in exactly the order
 * and with exactly the rules of the gRPC stream (PROTOCOL.md). The first frame must be the
 * header carrying the one-time token from PrepareIncoming, so the channel is authorised the
 * same way. PrepareIncoming returns the channel's address as `data_address`; a source that
 * cannot connect to it uses the gRPC stream instead. Once the target's HeaderAck says format
 * ≥ 1.3, page frames go in their raw form instead (raw-pages.ts: a run table, then the page
 * bytes written from guest memory), and a plain socket's target reads every frame in place
 * (in-place.ts).
 *
 * Who may connect: a unix socket is mode 0600 (in a folder only this user can enter, for
 * `--data-channel auto`), so only processes of this user reach it; they could read the vmm's
 * key as well, so the token is its only check. Over TCP with TLS material both ends use mutual
 * TLS with the cluster's certificates: only a vmm-role certificate the CA issued connects, and
 * its id is the stream's peer, which the token must have been issued for.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { chmodSync, rmSync } from 'node:fs';
import * as tls from 'node:tls';
import { vmmStream } from '@handoff/proto';
import {
  DEFAULT_FRAME_TIMEOUT_MS,
  FrameError,
  FramedSocket,
  RecycledBuffers,
  frameHeader,
  parseSideChannelAddress,
  peerOfRole,
  sideChannelClientTls,
  sideChannelServerTls,
  type Logger,
  type TlsMaterial,
} from '@handoff/service';
import type { IncomingChannel, OutgoingChannel, OutgoingEvents } from './channel.js';
import { RequestQueue } from './channel.js';
import { MigrationError } from '../../model/migration-error.js';
import { encodeIncomingRequestParts } from './encode.js';
import { failpointAction } from '../../failpoints.js';
import { STREAM_FORMAT } from '../format.js';
import { InPlaceSocket } from './in-place.js';
import {
  decodeRawPages,
  encodeRawPages,
  fitsRawPages,
  isRawPages,
  RAW_PAGES_MINOR,
} from './raw-pages.js';

/**
 * Largest request frame a target accepts: a page frame is at most 1 MiB of data plus 4096 runs
 * (≈100 KiB); headers and device state are far smaller. Anything bigger is hostile.
 */
export const MAX_REQUEST_FRAME = 4 * 1024 * 1024;
/** Pooled assembly buffers: a page frame (1 MiB of data and its runs) fits one. */
const POOLED_FRAME_BYTES = 1280 * 1024;
/**
 * Pooled buffers kept per connection: enough for the frames in flight (read ahead, and the
 * receiver's queue of writes, 8 MiB).
 */
const POOLED_FRAMES = 40;
/** Largest reply frame a source accepts (replies are acks and errors). */
export const MAX_REPLY_FRAME = 64 * 1024;
/** Bytes a source queues on the socket before it waits for them to drain. */
const WRITE_QUEUE_BYTES = 8 * 1024 * 1024;
/** How long a source waits to connect before it falls back to the gRPC stream. */
export const CONNECT_TIMEOUT_MS = 2000;

/** `unix:/path` → the path; `host:port` → host and port. @throws MigrationError otherwise */
function parseAddress(address: string): { path: string } | { host: string; port: number } {
  const where = parseSideChannelAddress(address);
  if (where === null) {
    throw new MigrationError(
      'MIGRATION_FAILED',
      `data channel address ${address} is neither unix:/path nor host:port`,
    );
  }
  return where;
}

/**
 * Starts connecting to `address`; over TCP with `material`, as mutual TLS that trusts only the
 * cluster CA and a server certificate of a vmm naming the host.
 *
 * @throws MigrationError when it is malformed
 */
function dial(address: string, material: TlsMaterial | null = null): Socket {
  const where = parseAddress(address);
  if ('path' in where) return connect(where.path);
  if (material === null) return connect(where.port, where.host);
  return tls.connect({
    host: where.host,
    port: where.port,
    ...sideChannelClientTls(material, 'vmm', 'data channel'),
  });
}

/** How a target's data channel treats its connections. */
export interface DataChannelOptions {
  /**
   * How long a begun frame from a source may take to arrive in full (default
   * {@link DEFAULT_FRAME_TIMEOUT_MS}): a source that stalls mid-frame fails its migration and
   * its connection is closed, instead of holding the connection and the frame's buffer.
   */
  readonly frameTimeoutMs?: number;
  /**
   * This vmm's TLS material: with it, TCP connections are mutual TLS and only a vmm whose
   * certificate the CA issued gets through (a unix socket stays plain: see the top of this
   * file). Null or absent: plaintext.
   */
  readonly tls?: TlsMaterial | null;
}

/** A listening data channel. */
export interface DataChannelServer {
  /** The address sources connect to (`unix:/path` or `host:port`). */
  readonly address: string;
  /** Stops listening and drops open connections (their migrations fail as broken). */
  close(): Promise<void>;
}

/**
 * Listens on `listen` (`unix:/path` or `host:port`, port 0 for any) and hands every connection
 * to `serve` as an {@link IncomingChannel}. With `material`, TCP connections are mutual TLS:
 * only a vmm whose certificate the CA issued gets through (a unix socket stays plain: see the
 * header of this file).
 */
export async function startDataChannel(
  listen: string,
  serve: (channel: IncomingChannel) => Promise<void>,
  logger: Logger,
  opts: DataChannelOptions = {},
): Promise<DataChannelServer> {
  const frameTimeoutMs = opts.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS;
  const where = parseAddress(listen);
  const open = new Set<Socket>();
  const material = opts.tls ?? null;
  const accept = (accepted: Socket, peer: string | null): void => {
    const { channel, socket } = socketIncoming(accepted, peer, frameTimeoutMs, logger);
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    serve(channel).catch((err: unknown) =>
      logger.warn({ error: (err as Error).message }, 'data channel: a migration failed'),
    );
  };
  // Half-open: a source that ended its side still gets the outcome (e.g. an error for a
  // truncated stream); the receiver ends ours.
  const server: Server =
    material !== null && !('path' in where)
      ? tls
          .createServer(
            {
              allowHalfOpen: true,
              ...sideChannelServerTls(material),
            },
            (socket) => {
              const peer = peerOfRole(socket, 'vmm');
              if (peer === null) {
                logger.warn('data channel: refused a connection without a vmm certificate');
                socket.destroy();
                return;
              }
              accept(socket, peer);
            },
          )
          .on('tlsClientError', (err) =>
            logger.info({ error: err.message }, 'data channel: a TLS handshake failed'),
          )
      : // Accepted paused: the target reads the connection in place (in-place.ts) from the start.
        createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) =>
          accept(socket, null),
        );
  if ('path' in where) rmSync(where.path, { force: true }); // a socket left by a killed vmm
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('path' in where) server.listen(where.path, resolve);
    else server.listen(where.port, where.host, resolve);
  });
  server.on('error', (err) => logger.warn({ error: err.message }, 'data channel error'));
  let address: string;
  if ('path' in where) {
    chmodSync(where.path, 0o600); // same host, same user as the other vmms
    address = `unix:${where.path}`;
  } else {
    const a = server.address();
    const port = typeof a === 'object' && a !== null ? a.port : where.port;
    address = `${where.host.includes(':') ? `[${where.host}]` : where.host}:${port}`;
  }
  logger.debug({ address }, 'data channel listening');
  return {
    address,
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if ('path' in where) rmSync(where.path, { force: true });
    },
  };
}

/**
 * One request frame's payload as a request: a raw page frame (raw-pages.ts) or a protobuf
 * `IncomingRequest`.
 *
 * @throws MigrationError `MIGRATION_BAD_STREAM` for a broken raw page frame; Error when the
 *   protobuf does not decode
 */
export function decodeRequest(payload: Uint8Array): vmmStream.IncomingRequest {
  if (isRawPages(payload)) return { frame: { $case: 'pages', value: decodeRawPages(payload) } };
  return vmmStream.IncomingRequest.decode(payload);
}

/**
 * The target's end over one accepted socket whose source the transport names `peer`, and the
 * socket that carries it from now on: a plain socket is taken over to be read in place
 * (in-place.ts); a TLS one is read as it is.
 */
function socketIncoming(
  accepted: Socket,
  peer: string | null,
  frameTimeoutMs: number,
  logger: Logger,
): { channel: IncomingChannel; socket: Socket } {
  let gone = false; // the socket closed: nothing reaches the source any more
  // (flow control reaches `framed` only once frames arrive, after it exists)
  const q = new RequestQueue({ pause: () => framed.pause(), resume: () => framed.resume() });
  // Page frames span socket reads: assemble them in reused buffers, given back once written.
  const pool = new RecycledBuffers(POOLED_FRAME_BYTES, POOLED_FRAMES);
  const handlers = {
    frame: (payload: Uint8Array): void => {
      let req: vmmStream.IncomingRequest;
      try {
        req = decodeRequest(payload);
      } catch (err) {
        q.fail(
          err instanceof MigrationError
            ? err
            : new Error(`an undecodable frame arrived (${(err as Error).message})`),
        );
        framed.destroy();
        return;
      }
      q.push(req);
    },
    closed: (error: Error | null): void => {
      if (error instanceof FrameError && error.timedOut) {
        logger.warn({ error: error.message }, 'data channel: a source stalled mid-frame');
      }
      if (error === null)
        q.end(); // the source ended its side; replies still go out
      else q.fail(error);
    },
  };
  const inPlace =
    accepted instanceof tls.TLSSocket
      ? null
      : InPlaceSocket.open(accepted, MAX_REQUEST_FRAME, handlers, { pool, frameTimeoutMs });
  const framed: InPlaceSocket | FramedSocket =
    inPlace ?? new FramedSocket(accepted, MAX_REQUEST_FRAME, handlers, { pool, frameTimeoutMs });
  const socket = framed.socket;
  if (inPlace === null) socket.resume(); // a plain socket was accepted paused
  socket.on('close', () => (gone = true));
  const channel: IncomingChannel = {
    next: () => q.next(),
    write: (reply) => {
      if (!gone) framed.send(vmmStream.IncomingResponse.encode(reply).finish());
    },
    end: () => framed.end(),
    get gone() {
      return gone;
    },
    peer,
    release: (frame) => pool.give(frame.data),
  };
  return { channel, socket };
}

/**
 * Whether a target's data channel still accepts connections: false when nothing listens there
 * any more (the target process is gone), true otherwise (also when it cannot tell within a
 * second). The probe sends nothing; the target ignores such a connection.
 */
export async function dataChannelAlive(address: string): Promise<boolean> {
  let socket: Socket;
  try {
    socket = dial(address);
  } catch {
    return true; // not an address it can look at
  }
  return new Promise<boolean>((resolve) => {
    const done = (alive: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(alive);
    };
    const timer = setTimeout(() => done(true), 1000);
    socket.once('connect', () => done(true));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      done(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'),
    );
  });
}

/**
 * The `data-channel-mid-frame` failpoint: writes a frame's header and the first half of its
 * bytes, then, once they are on the wire, SIGSTOPs this process when armed with `:stop`
 * (a frozen source); the rest of the frame is never sent.
 */
function stallMidFrame(socket: Socket, parts: Uint8Array[], stopOnStall: boolean): void {
  const whole = Buffer.concat(parts);
  socket.write(frameHeader(whole.length));
  socket.write(whole.subarray(0, whole.length >> 1), () => {
    if (stopOnStall) process.kill(process.pid, 'SIGSTOP');
  });
}

/**
 * Connects to a target's data channel (over TCP with `material`, as mutual TLS). `first` (the
 * header) is queued on the socket at once, so it leaves with the connection instead of a turn
 * of the event loop later.
 *
 * @throws MigrationError `MIGRATION_TARGET_FAILED` when it cannot connect within
 *   {@link CONNECT_TIMEOUT_MS} (nothing reached the target: the caller may use the gRPC stream)
 */
export async function connectDataChannel(
  address: string,
  events: OutgoingEvents,
  first: vmmStream.IncomingRequest,
  material: TlsMaterial | null = null,
): Promise<OutgoingChannel> {
  const socket = dial(address, material);
  const connected = socket instanceof tls.TLSSocket ? 'secureConnect' : 'connect';
  const parts = encodeIncomingRequestParts(first);
  socket.write(frameHeader(parts.reduce((n, p) => n + p.length, 0)));
  for (const p of parts) socket.write(p);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no connection within ${CONNECT_TIMEOUT_MS} ms`));
    }, CONNECT_TIMEOUT_MS);
    socket.once(connected, () => {
      clearTimeout(timer);
      socket.off('error', reject);
      resolve();
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  }).catch((err: unknown) => {
    throw new MigrationError(
      'MIGRATION_TARGET_FAILED',
      `cannot connect to the data channel at ${address}: ${(err as Error).message}`,
    );
  });
  let broken = false;
  /** Page frames go in the raw form (raw-pages.ts): the target's HeaderAck said it reads it. */
  let rawPages = false;
  // Several frames may wait to go out, so the next frame is read from RAM while earlier ones
  // are still being written.
  const framed = new FramedSocket(
    socket,
    MAX_REPLY_FRAME,
    {
      frame: (payload) => {
        let reply: vmmStream.IncomingResponse;
        try {
          reply = vmmStream.IncomingResponse.decode(payload);
        } catch (err) {
          fail(new Error(`an undecodable reply arrived (${(err as Error).message})`));
          socket.destroy();
          return;
        }
        const r = reply.reply;
        if (r?.$case === 'headerAck' && r.value.formatMajor === STREAM_FORMAT.major) {
          rawPages = r.value.formatMinor >= RAW_PAGES_MINOR; // the target reads them
        }
        events.reply(reply);
      },
      closed: (error) => fail(error ?? new Error('the target ended the stream')),
    },
    { queueBytes: WRITE_QUEUE_BYTES },
  );
  function fail(e: Error): void {
    if (broken) return;
    broken = true;
    events.broken(e);
  }
  // Set by the `data-channel-mid-frame` failpoint: nothing more is sent, and the sender waits
  // (as on a full socket) until the stream breaks.
  let stalled: Promise<void> | undefined;
  return {
    kind: 'data-channel',
    write: (req) => {
      if (broken) return true;
      if (stalled !== undefined) return false;
      if (req.frame?.$case === 'pages') {
        const fault = failpointAction('data-channel-mid-frame');
        if (fault !== undefined) {
          stalled = new Promise((resolve) => socket.once('close', () => resolve()));
          stallMidFrame(socket, encodeIncomingRequestParts(req), fault === 'stop');
          return false;
        }
      }
      if (rawPages && req.frame?.$case === 'pages' && fitsRawPages(req.frame.value)) {
        return framed.send(...encodeRawPages(req.frame.value));
      }
      return framed.send(...encodeIncomingRequestParts(req));
    },
    drained: () => stalled ?? framed.drained(),
    close: () => framed.destroy(),
  };
}
