import { memstore as pb } from '@handoff/proto';
import {
  FrameError,
  FramedSocket,
  ServiceError,
  statusForCode,
  type Logger,
} from '@handoff/service';
import * as grpc from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, renameSync, unlinkSync, type Stats } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { peerCredentials } from '@handoff/shm';
import { MemstoreError } from '../errors.js';
import type { LeaseCaller } from '../leases/ownership.js';
import type { PeerCredentials, SessionBinding } from '../leases/sessions.js';
import type { Memstore } from '../memstore.js';
import { guarded, leaseCalls } from './memstore-service.js';

/**
 * The lease channel: a unix-socket side channel serving TransferLease, GetRegion,
 * ValidateLease, ArmTransfer, ResolveTransfer, FetchPages and StartLazyFill without gRPC, for the vmms on this host (a migration's hand-off runs during the
 * guest's downtime, where a gRPC round trip costs more than the whole budget). Frames are
 * {@link FramedSocket}'s (4-byte big-endian length + payload, at most
 * {@link LEASE_CHANNEL_MAX_FRAME_BYTES}); each request frame is one `LeaseChannelRequest`,
 * answered by one `LeaseChannelResponse` frame with the same id (see
 * proto/handoff/memstore/v1/lease_channel.proto). Every call runs the same function the gRPC
 * handler runs ({@link leaseCalls} through {@link guarded}), so checks, results and error codes
 * and messages are identical. A peer that breaks the framing or sends an undecodable frame is
 * hostile: its connection (only) is closed.
 *
 * Every connection starts with a hello: a one-time token from OpenLeaseSession, which binds the
 * connection to a vmm id and to the process the kernel says connected (SO_PEERCRED) — the
 * vmm's lease-holder session ({@link Memstore.sessions}). Until then every call is refused
 * (SERVICE_UNAUTHENTICATED); afterwards a call may move leases only for that vmm's holders.
 */

/** Largest frame either side sends or accepts. */
export const LEASE_CHANNEL_MAX_FRAME_BYTES = 1024 * 1024;

/** Owner-only: the vmms run as the memstore's user (root in production). */
const SOCKET_FILE_MODE = 0o600;

/** A listening lease channel. */
export interface LeaseChannelServer {
  /** Absolute path of the socket file. */
  readonly path: string;
  /** Open connections (tests). */
  readonly connections: number;
  /** Stops listening, drops every connection and removes the socket file. Idempotent. */
  close(): Promise<void>;
}

/** The socket path is served by another live process (a second memstore?). */
export class LeaseSocketBusyError extends ServiceError {
  constructor(readonly path: string) {
    super(
      'SERVICE_INVALID_CONFIG',
      `another process (a second memstore?) serves a lease channel at ${path}; give this ` +
        'memstore its own --lease-socket (or --volatile-dir), or --lease-socket off',
    );
  }
}

type Method = keyof typeof leaseCalls;

/** gRPC method names, for logs and `guarded` (the same wording as the gRPC path). */
const METHOD_NAME: Record<Method | 'hello', string> = {
  hello: 'Hello',
  fetchPages: 'FetchPages',
  startLazyFill: 'StartLazyFill',
  transferLease: 'TransferLease',
  getRegion: 'GetRegion',
  validateLease: 'ValidateLease',
  armTransfer: 'ArmTransfer',
  resolveTransfer: 'ResolveTransfer',
};

/**
 * Listens on `path`. A socket file left there by a memstore that is gone is replaced; a file
 * that is not a socket is refused with SERVICE_INVALID_CONFIG, a socket another process still
 * serves (a second memstore sharing the volatile directory) with {@link LeaseSocketBusyError}.
 */
export async function startLeaseChannel(deps: {
  memstore: Memstore;
  logger: Logger;
  path: string;
  /** Who connected a socket (default: the kernel's SO_PEERCRED record); tests replace it. */
  peerOf?: (socket: Socket) => PeerCredentials;
}): Promise<LeaseChannelServer> {
  const { memstore: m, path } = deps;
  const logger = deps.logger.child({ component: 'lease-channel' });
  await checkSocketPath(path);

  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    serveConnection(socket, m, logger, deps.peerOf ?? socketPeer);
  });
  // Bound under a temporary name, then renamed into place: a stale socket is replaced
  // atomically, and the file libuv unlinks when the server closes is the temporary name, so
  // stop removes `path` only while it is still ours.
  const temp = join(dirname(path), `.lease-${randomBytes(6).toString('hex')}.tmp`);
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error): void =>
      reject(
        new ServiceError(
          'SERVICE_INVALID_CONFIG',
          `cannot listen on the lease socket ${path} (${err.message}); pick another ` +
            '--lease-socket, or --lease-socket off',
          { cause: err },
        ),
      );
    server.once('error', failed);
    server.listen(temp, () => {
      server.off('error', failed);
      resolve();
    });
  });
  let mine: Stats;
  try {
    chmodSync(temp, SOCKET_FILE_MODE);
    renameSync(temp, path);
    mine = lstatSync(path);
  } catch (err) {
    server.close();
    throw err;
  }
  server.on('error', (err) => logger.warn({ err, path }, 'lease channel server error'));
  logger.info({ path }, 'lease channel listening');

  let closing: Promise<void> | undefined;
  return {
    path,
    get connections() {
      return sockets.size;
    },
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        removeIfOurs(path, mine);
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      return closing;
    },
  };
}

/** How long a connection refused at its hello may take to read the refusal before it is cut. */
const REFUSED_LINGER_MS = 1000;

/** The fd libuv keeps for an accepted unix socket (Linux), or undefined. */
function fdOf(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * The kernel's record of who connected `socket` (SO_PEERCRED).
 *
 * @throws ServiceError SERVICE_UNAUTHENTICATED when it cannot be read (nobody is bound then)
 */
export function socketPeer(socket: Socket): PeerCredentials {
  try {
    const fd = fdOf(socket);
    if (fd === undefined) throw new Error('the connection has no file descriptor');
    return peerCredentials(fd);
  } catch (err) {
    throw new ServiceError(
      'SERVICE_UNAUTHENTICATED',
      `memstore cannot tell which process connected (${(err as Error).message}); connect again`,
      { cause: err },
    );
  }
}

/**
 * Serves one connection until it closes. Its first request must be a hello (a session token);
 * until one succeeded every call is refused with SERVICE_UNAUTHENTICATED, and a refused hello
 * is answered and the connection ended.
 */
function serveConnection(
  socket: Socket,
  m: Memstore,
  logger: Logger,
  peerOf: (socket: Socket) => PeerCredentials,
): void {
  let binding: SessionBinding | null = null;
  /** A hello was answered (one per connection). */
  let greeted = false;
  /** Refused: nothing more is read. */
  let refused = false;

  const answer = (res: pb.LeaseChannelResponse): void => {
    if (framed.closed) return;
    if (!framed.send(pb.LeaseChannelResponse.encode(res).finish())) {
      // The peer does not read its answers: stop reading its requests until it does.
      framed.pause();
      void framed.drained().then(() => framed.resume());
    }
  };
  const refuse = (id: bigint, err: unknown, method: string): void => {
    answer(errorResponse(id, err, method, logger));
    refused = true;
    framed.end();
    setTimeout(() => framed.destroy(), REFUSED_LINGER_MS).unref();
  };

  const framed: FramedSocket = new FramedSocket(socket, LEASE_CHANNEL_MAX_FRAME_BYTES, {
    frame: (payload) => {
      if (refused) return;
      let req: pb.LeaseChannelRequest;
      try {
        req = pb.LeaseChannelRequest.decode(payload);
      } catch (err) {
        logger.warn(
          { error: (err as Error).message, bytes: payload.length },
          'lease channel: undecodable request; connection closed',
        );
        framed.destroy();
        return;
      }
      const call = req.call;
      if (call?.$case === 'hello') {
        // Synchronous: the requests after it in the same read already see the session.
        if (greeted) {
          refuse(
            req.id,
            new ServiceError(
              'SERVICE_INVALID_ARGUMENT',
              'this connection already said hello; a connection says it once, first',
            ),
            'Hello',
          );
          return;
        }
        greeted = true;
        try {
          if (!m.isOpen) {
            throw new ServiceError(
              'SERVICE_SHUTTING_DOWN',
              'memstore is shutting down; retry against a running memstore',
            );
          }
          binding = m.sessions.hello(call.value.token, call.value.instance, peerOf(socket));
        } catch (err) {
          refuse(req.id, MemstoreError.from(err, 'Hello'), 'Hello');
          return;
        }
        answer({
          id: req.id,
          result: { $case: 'hello', value: { vmmId: binding.vmmId, pid: binding.pid } },
        });
        return;
      }
      if (binding === null) {
        refuse(
          req.id,
          new ServiceError(
            'SERVICE_UNAUTHENTICATED',
            'the first request on a lease-channel connection must be a hello with a token from ' +
              'OpenLeaseSession; lease calls are served only after it',
          ),
          call !== undefined ? METHOD_NAME[call.$case] : 'unknown',
        );
        return;
      }
      void dispatch(m, req, { vmmId: binding.vmmId }, logger).then(answer);
    },
    closed: (error) => {
      if (binding !== null) m.sessions.closed(binding);
      if (error instanceof FrameError) {
        logger.warn({ error: error.message }, 'lease channel: broken framing; connection closed');
      } else if (error !== null) {
        logger.debug({ error: error.message }, 'lease channel connection ended');
      }
      socket.destroy();
    },
  });
}

/** Runs one request; never rejects (failures become a LeaseChannelError). */
async function dispatch(
  m: Memstore,
  req: pb.LeaseChannelRequest,
  caller: LeaseCaller,
  logger: Logger,
): Promise<pb.LeaseChannelResponse> {
  const call = req.call;
  try {
    switch (call?.$case) {
      case 'transferLease': {
        const value = await run(m, 'transferLease', () =>
          leaseCalls.transferLease(m, call.value, caller),
        );
        return { id: req.id, result: { $case: 'transferLease', value } };
      }
      case 'getRegion': {
        const value = await run(m, 'getRegion', () => leaseCalls.getRegion(m, call.value));
        return { id: req.id, result: { $case: 'getRegion', value } };
      }
      case 'validateLease': {
        const value = await run(m, 'validateLease', () => leaseCalls.validateLease(m, call.value));
        return { id: req.id, result: { $case: 'validateLease', value } };
      }
      case 'armTransfer': {
        const value = await run(m, 'armTransfer', () =>
          leaseCalls.armTransfer(m, call.value, caller),
        );
        return { id: req.id, result: { $case: 'armTransfer', value } };
      }
      case 'resolveTransfer': {
        const value = await run(m, 'resolveTransfer', () =>
          leaseCalls.resolveTransfer(m, call.value),
        );
        return { id: req.id, result: { $case: 'resolveTransfer', value } };
      }
      case 'fetchPages': {
        // Waits until the pages are present; other requests on the connection go on meanwhile.
        const value = await run(m, 'fetchPages', () => leaseCalls.fetchPages(m, call.value));
        return { id: req.id, result: { $case: 'fetchPages', value } };
      }
      case 'startLazyFill': {
        const value = await run(m, 'startLazyFill', () => leaseCalls.startLazyFill(m, call.value));
        return { id: req.id, result: { $case: 'startLazyFill', value } };
      }
      default:
        // A call this memstore does not know (a newer client) decodes as no call at all.
        throw new ServiceError(
          'SERVICE_UNIMPLEMENTED',
          'this memstore serves only TransferLease, GetRegion, ValidateLease, ArmTransfer, ' +
            'ResolveTransfer, FetchPages and StartLazyFill on its lease channel; make other ' +
            'calls over gRPC',
        );
    }
  } catch (err) {
    return errorResponse(
      req.id,
      err,
      call !== undefined ? METHOD_NAME[call.$case] : 'unknown',
      logger,
    );
  }
}

/** A failed call's answer: exactly what the gRPC edge sends (the coded error's code and message). */
function errorResponse(
  id: bigint,
  err: unknown,
  method: string,
  logger: Logger,
): pb.LeaseChannelResponse {
  const coded = ServiceError.from(err);
  const status = statusForCode(coded.code);
  if (status === grpc.status.INTERNAL || status === grpc.status.UNKNOWN) {
    logger.error({ err, method }, 'lease channel call failed');
  } else {
    logger.info({ method, code: coded.code, error: coded.message }, 'lease channel call refused');
  }
  return { id, result: { $case: 'error', value: { code: coded.code, message: coded.message } } };
}

function run<T>(m: Memstore, method: Method, fn: () => T | Promise<T>): Promise<T> {
  return guarded(m, METHOD_NAME[method], fn);
}

/**
 * Checks that a socket may be put at `path`: nothing there, or a socket nobody serves (left by
 * a memstore that died; the rename replaces it). Anything else is refused.
 */
async function checkSocketPath(path: string): Promise<void> {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `the lease socket path ${path} exists and is not a socket; remove it or pick another ` +
        '--lease-socket',
    );
  }
  if (await socketServed(path)) throw new LeaseSocketBusyError(path);
}

/** True when something accepts connections on the unix socket `path`. */
function socketServed(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/** Removes the socket file unless another memstore has replaced it meanwhile. */
function removeIfOurs(path: string, mine: Stats): void {
  try {
    const st = lstatSync(path);
    if (st.ino === mine.ino && st.dev === mine.dev) unlinkSync(path);
  } catch {
    // already gone
  }
}
