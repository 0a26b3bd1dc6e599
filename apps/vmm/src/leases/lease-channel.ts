import * as grpc from '@grpc/grpc-js';
import { memstore as pb } from '@handoff/proto';
import {
  DEFAULT_DEADLINE_MS,
  FramedSocket,
  RemoteError,
  statusForCode,
  unaryCall,
  type Logger,
} from '@handoff/service';
import { randomBytes } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';

/**
 * The memstore calls on a migration's switchover path (TransferLease, GetRegion, ValidateLease,
 * ArmTransfer, ResolveTransfer)
 * over memstore's lease channel: one persistent unix socket of length-prefixed protobuf frames
 * (proto/handoff/memstore/v1/lease_channel.proto) instead of a gRPC round trip, which costs
 * more than the guest's downtime budget. Results and failures are exactly what the gRPC call
 * gives: a response message, or a {@link RemoteError} with memstore's stable code, the gRPC
 * status of that code and the message `<method>: <memstore's message>`.
 */

/** Options of one lease call. */
export interface LeaseCallOptions {
  /** Deadline in milliseconds from now (default: the client's, else 5 s). */
  deadlineMs?: number;
}

/** The lease calls of memstore, whichever way they travel (callers cannot tell). */
export interface LeaseCalls {
  transferLease(
    req: pb.TransferLeaseRequest,
    opts?: LeaseCallOptions,
  ): Promise<pb.TransferLeaseResponse>;
  getRegion(req: pb.GetRegionRequest, opts?: LeaseCallOptions): Promise<pb.GetRegionResponse>;
  validateLease(
    req: pb.ValidateLeaseRequest,
    opts?: LeaseCallOptions,
  ): Promise<pb.ValidateLeaseResponse>;
  /** Arms a transfer that a compare-and-set in memstore's arms file completes (switchover). */
  armTransfer(req: pb.ArmTransferRequest, opts?: LeaseCallOptions): Promise<pb.ArmTransferResponse>;
  /** Settles a region's armed transfer (committed if flipped, else cancelled); the lease now. */
  resolveTransfer(
    req: pb.ResolveTransferRequest,
    opts?: LeaseCallOptions,
  ): Promise<pb.ResolveTransferResponse>;
}

/**
 * The post-copy calls of a lazy region (proto FetchPages, StartLazyFill). FetchPages exists on
 * the lease channel only (no gRPC method): without a channel it fails UNAVAILABLE.
 */
export interface PageCalls {
  /**
   * Answered once every page of the range is present (it waits while the fill is
   * SOURCE_PAUSED); fails when the fill FAILED. Give it a long deadline.
   */
  fetchPages(req: pb.FetchPagesRequest, opts?: LeaseCallOptions): Promise<pb.FetchPagesResponse>;
  /** Starts the lazy fill of a region (the guest runs on the target from now on). */
  startLazyFill(
    req: pb.StartLazyFillRequest,
    opts?: LeaseCallOptions,
  ): Promise<pb.StartLazyFillResponse>;
}

type Method = keyof LeaseCalls | keyof PageCalls;
/** What travels on the channel: the lease and page calls, and the hello that opens a connection. */
type Call = Method | 'hello';
type RequestOf<M extends Call> = M extends keyof LeaseCalls
  ? Parameters<LeaseCalls[M]>[0]
  : M extends keyof PageCalls
    ? Parameters<PageCalls[M]>[0]
    : pb.LeaseChannelHello;
type ResponseOf<M extends Call> = M extends keyof LeaseCalls
  ? Awaited<ReturnType<LeaseCalls[M]>>
  : M extends keyof PageCalls
    ? Awaited<ReturnType<PageCalls[M]>>
    : pb.LeaseChannelWelcome;

/** Largest frame sent or accepted (memstore's limit). */
export const LEASE_CHANNEL_MAX_FRAME_BYTES = 1024 * 1024;

/**
 * Random per vmm process, the same in every hello it sends (all its connections, its vCPU
 * threads' too): memstore tells a reconnecting process from a restarted one by it where it
 * cannot see the process's pid.
 */
export const PROCESS_INSTANCE = randomBytes(12).toString('base64url');

/** While memstore reports no channel, how long before asking it again. */
const DISABLED_RECHECK_MS = 30_000;

/** A kept session that dropped is re-opened after this, doubling up to the maximum. */
const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 5_000;

interface Pending {
  readonly method: Call;
  resolve(res: unknown): void;
  reject(err: Error): void;
  readonly timer: NodeJS.Timeout;
}

interface Connection {
  readonly path: string;
  readonly framed: FramedSocket;
  readonly pending: Map<bigint, Pending>;
}

/** Options of a {@link LeaseChannelClient}. */
export interface LeaseChannelClientOptions {
  /**
   * The gRPC client of memstore: opens the session (OpenLeaseSession: a token and the channel's
   * path), and carries the fallback.
   */
  readonly memstore: () => pb.MemstoreServiceClient;
  /** This vmm's id: its session's, and the prefix of its lease holders (`<vmm-id>/<vm>`). */
  readonly vmmId: string;
  readonly logger: Logger;
  /** Deadline of a call that gives none (default 5 s). */
  readonly deadlineMs?: number;
}

/**
 * {@link LeaseCalls} over memstore's lease channel, falling back to gRPC; and this vmm's
 * lease-holder session.
 *
 * On first use (or at once, with {@link LeaseChannelClient.keepSession}) it opens a session:
 * OpenLeaseSession over gRPC answers a one-time token and the channel's socket path; it
 * connects one persistent socket and says hello with the token, so memstore binds the
 * connection to this vmm and this process (and fences this vmm's leases once the process is
 * gone). Concurrent calls share the connection, matched by request id, each with its own
 * deadline. After the connection breaks it reconnects on the next call, or at once (with
 * backoff) when the session is kept.
 *
 * - Channel disabled (no path), OpenLeaseSession failing, the connection cannot be made, or
 *   the hello refused: the call goes over gRPC. Nothing was sent on the channel, so that is
 *   safe.
 * - The connection breaks after the request was written: the call fails with status
 *   UNAVAILABLE (code `GRPC_UNAVAILABLE`, like an unreachable gRPC server) and is NOT retried:
 *   TransferLease is a compare-and-set, and whether memstore applied it is unknown.
 * - Deadline passed: status DEADLINE_EXCEEDED (code `GRPC_DEADLINE_EXCEEDED`), as over gRPC.
 *
 * Call {@link LeaseChannelClient.prepare} ahead of a latency-critical call (a migration's
 * switchover) so that the first call does not pay for opening the session.
 */
export class LeaseChannelClient implements LeaseCalls, PageCalls {
  /** The socket path: undefined = not asked yet, '' = memstore serves no channel. */
  private path: string | undefined;
  private disabledAt = 0;
  private conn: Connection | null = null;
  private connecting: Promise<Connection | null> | null = null;
  private nextId = 1n;
  private closed = false;
  /** Re-open the session after a drop ({@link LeaseChannelClient.keepSession}). */
  private keep = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectMs = RECONNECT_FIRST_MS;
  /** A failure to open the session was logged at warn since the last success. */
  private warned = false;

  constructor(private readonly opts: LeaseChannelClientOptions) {}

  /**
   * Opens the session now and keeps it open: after a drop (memstore restarted) it reconnects
   * at once and then with backoff (0.1 s doubling to 5 s; every 30 s while memstore serves no
   * channel), so memstore knows this process before its first lease. Until {@link close}.
   */
  keepSession(): void {
    if (this.keep || this.closed) return;
    this.keep = true;
    this.reconnect();
  }

  /**
   * A hello for another connection of this process (a switchover's vCPU thread speaks the
   * channel itself): an encoded LeaseChannelRequest (id 0) carrying a fresh one-time token.
   *
   * @throws RemoteError when memstore does not answer OpenLeaseSession
   */
  async helloRequest(opts?: LeaseCallOptions): Promise<Uint8Array> {
    const session = await unaryCall(
      this.opts.memstore(),
      'openLeaseSession',
      { vmmId: this.opts.vmmId },
      { deadlineMs: this.deadlineOf(opts) },
    );
    return pb.LeaseChannelRequest.encode({
      id: 0n,
      call: { $case: 'hello', value: { token: session.token, instance: PROCESS_INSTANCE } },
    }).finish();
  }

  transferLease(
    req: pb.TransferLeaseRequest,
    opts?: LeaseCallOptions,
  ): Promise<pb.TransferLeaseResponse> {
    return this.call('transferLease', req, opts);
  }

  getRegion(req: pb.GetRegionRequest, opts?: LeaseCallOptions): Promise<pb.GetRegionResponse> {
    return this.call('getRegion', req, opts);
  }

  validateLease(
    req: pb.ValidateLeaseRequest,
    opts?: LeaseCallOptions,
  ): Promise<pb.ValidateLeaseResponse> {
    return this.call('validateLease', req, opts);
  }

  armTransfer(
    req: pb.ArmTransferRequest,
    opts?: LeaseCallOptions,
  ): Promise<pb.ArmTransferResponse> {
    return this.call('armTransfer', req, opts);
  }

  resolveTransfer(
    req: pb.ResolveTransferRequest,
    opts?: LeaseCallOptions,
  ): Promise<pb.ResolveTransferResponse> {
    return this.call('resolveTransfer', req, opts);
  }

  fetchPages(req: pb.FetchPagesRequest, opts?: LeaseCallOptions): Promise<pb.FetchPagesResponse> {
    return this.call('fetchPages', req, opts);
  }

  startLazyFill(
    req: pb.StartLazyFillRequest,
    opts?: LeaseCallOptions,
  ): Promise<pb.StartLazyFillResponse> {
    return this.call('startLazyFill', req, opts);
  }

  /**
   * Asks for the path and connects now, so that the next call goes straight out. Resolves true
   * when the channel is connected, false when calls will go over gRPC. Never rejects.
   */
  async prepare(opts?: LeaseCallOptions): Promise<boolean> {
    const deadline = Date.now() + this.deadlineOf(opts);
    return (await this.connection(deadline)) !== null;
  }

  /**
   * The channel's socket path once connected (as {@link LeaseChannelClient.prepare}), or null
   * when calls go over gRPC. For callers that speak the channel themselves (a switchover's
   * vCPU thread). Never rejects.
   */
  async channelPath(opts?: LeaseCallOptions): Promise<string | null> {
    return (await this.prepare(opts)) ? (this.conn?.path ?? null) : null;
  }

  /** True while a channel connection is open (tests, diagnostics). */
  get connected(): boolean {
    return this.conn !== null && !this.conn.framed.closed;
  }

  /**
   * Drops the connection (ending the session); calls still waiting fail with UNAVAILABLE. Later
   * calls go over gRPC (through the memstore client, which its owner closes).
   */
  close(): void {
    this.closed = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.conn?.framed.destroy();
  }

  /** Kept session: connects now; on failure tries again after the backoff. */
  private reconnect(): void {
    if (!this.keep || this.closed || this.reconnectTimer !== null) return;
    void this.connection(Date.now() + this.deadlineOf(undefined)).then((conn) => {
      if (conn !== null) {
        this.reconnectMs = RECONNECT_FIRST_MS;
        return;
      }
      if (!this.keep || this.closed || this.reconnectTimer !== null) return;
      const delay = this.path === '' ? DISABLED_RECHECK_MS : this.reconnectMs;
      this.reconnectMs = Math.min(this.reconnectMs * 2, RECONNECT_MAX_MS);
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = null;
        this.reconnect();
      }, delay);
      this.reconnectTimer.unref();
    });
  }

  private deadlineOf(opts: LeaseCallOptions | undefined): number {
    return opts?.deadlineMs ?? this.opts.deadlineMs ?? DEFAULT_DEADLINE_MS;
  }

  private async call<M extends Method>(
    method: M,
    req: RequestOf<M>,
    opts: LeaseCallOptions | undefined,
  ): Promise<ResponseOf<M>> {
    const deadlineMs = this.deadlineOf(opts);
    const deadline = Date.now() + deadlineMs;
    let conn = this.conn !== null && !this.conn.framed.closed ? this.conn : null;
    conn ??= await this.connection(deadline);
    if (conn === null || conn.framed.closed) {
      // Nothing went out on the channel: gRPC is safe, even for the compare-and-set.
      return this.overGrpc(method, req, Math.max(1, deadline - Date.now()));
    }
    return this.send(conn, method, req, deadline, deadlineMs);
  }

  private overGrpc<M extends Method>(
    method: M,
    req: RequestOf<M>,
    deadlineMs: number,
  ): Promise<ResponseOf<M>> {
    if (method === 'fetchPages') {
      return Promise.reject(
        new RemoteError(
          'GRPC_UNAVAILABLE',
          grpc.status.UNAVAILABLE,
          'fetchPages: memstore serves no lease channel (or it cannot be reached); post-copy ' +
            'page requests travel on it only',
        ),
      );
    }
    return unaryCall(this.opts.memstore(), method, req as never, { deadlineMs }) as Promise<
      ResponseOf<M>
    >;
  }

  private send<M extends Call>(
    conn: Connection,
    method: M,
    req: RequestOf<M>,
    deadline: number,
    deadlineMs: number,
  ): Promise<ResponseOf<M>> {
    const id = this.nextId++;
    const call = { $case: method, value: req } as pb.LeaseChannelRequest['call'];
    const frame = pb.LeaseChannelRequest.encode({ id, call }).finish();
    return new Promise<ResponseOf<M>>((resolve, reject) => {
      const timer = setTimeout(
        () => {
          if (!conn.pending.delete(id)) return;
          reject(
            new RemoteError(
              'GRPC_DEADLINE_EXCEEDED',
              grpc.status.DEADLINE_EXCEEDED,
              `${method}: Deadline exceeded after ${deadlineMs} ms (memstore lease channel ${conn.path})`,
            ),
          );
        },
        Math.max(0, deadline - Date.now()),
      );
      conn.pending.set(id, {
        method,
        resolve: resolve as (res: unknown) => void,
        reject,
        timer,
      });
      conn.framed.send(frame);
    });
  }

  /** The open connection, or a new one; null when calls must go over gRPC. Never rejects. */
  private connection(deadline: number): Promise<Connection | null> {
    if (this.closed) return Promise.resolve(null);
    if (this.conn !== null && !this.conn.framed.closed) return Promise.resolve(this.conn);
    this.connecting ??= this.open(deadline).finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private async open(deadline: number): Promise<Connection | null> {
    if (this.path === '' && Date.now() - this.disabledAt < DISABLED_RECHECK_MS) return null;
    let session: pb.OpenLeaseSessionResponse;
    try {
      session = await unaryCall(
        this.opts.memstore(),
        'openLeaseSession',
        { vmmId: this.opts.vmmId },
        { deadlineMs: Math.max(1, deadline - Date.now()) },
      );
    } catch (err) {
      this.failed('memstore did not open a lease-holder session', err);
      return null;
    }
    this.path = session.leaseChannel;
    if (this.path === '') {
      this.disabledAt = Date.now();
      this.opts.logger.debug('memstore serves no lease channel: lease calls go over gRPC');
      return null;
    }
    if (this.closed) return null;
    const path = this.path;
    let conn: Connection;
    try {
      const socket = await connectUnix(path, deadline);
      if (this.closed) {
        socket.destroy();
        return null;
      }
      conn = this.adopt(path, socket);
    } catch (err) {
      // Maybe memstore restarted elsewhere: ask for the path again next time.
      this.path = undefined;
      this.failed(`cannot connect to the memstore lease channel ${path}`, err);
      return null;
    }
    try {
      // The first request on the connection: memstore binds it to this vmm and process.
      const welcome = await this.send(
        conn,
        'hello',
        { token: session.token, instance: PROCESS_INSTANCE },
        deadline,
        Math.max(1, deadline - Date.now()),
      );
      if (this.closed) {
        conn.framed.destroy();
        return null;
      }
      this.conn = conn;
      this.warned = false;
      this.opts.logger.info(
        { path, vmm: welcome.vmmId, pid: welcome.pid },
        'lease-holder session open on the memstore lease channel',
      );
      return conn;
    } catch (err) {
      conn.framed.destroy();
      this.failed(`memstore refused this vmm's hello on ${path}`, err);
      return null;
    }
  }

  /** Logs a failure to open the session: at warn once until the next success, then debug. */
  private failed(what: string, err: unknown): void {
    const level = this.warned ? 'debug' : 'warn';
    this.warned = true;
    this.opts.logger[level](
      { error: (err as Error).message, code: (err as { code?: unknown }).code },
      `${what}: lease calls go over gRPC for now`,
    );
  }

  private adopt(path: string, socket: Socket): Connection {
    const pending = new Map<bigint, Pending>();
    const fail = (err: Error): void => {
      for (const [id, p] of pending) {
        pending.delete(id);
        clearTimeout(p.timer);
        p.reject(
          new RemoteError(
            'GRPC_UNAVAILABLE',
            grpc.status.UNAVAILABLE,
            `${p.method}: the memstore lease channel ${path} broke before the answer came ` +
              `(${err.message}); whether memstore applied the call is unknown`,
            { cause: err },
          ),
        );
      }
    };
    const framed: FramedSocket = new FramedSocket(socket, LEASE_CHANNEL_MAX_FRAME_BYTES, {
      frame: (payload) => {
        let res: pb.LeaseChannelResponse;
        try {
          res = pb.LeaseChannelResponse.decode(payload);
        } catch (err) {
          this.opts.logger.warn(
            { path, error: (err as Error).message },
            'undecodable answer on the memstore lease channel: connection dropped',
          );
          framed.destroy();
          return;
        }
        const p = pending.get(res.id);
        if (p === undefined) return; // its deadline passed
        pending.delete(res.id);
        clearTimeout(p.timer);
        settle(p, res);
      },
      closed: (error) => {
        const wasSession = this.conn?.framed === framed;
        if (wasSession) this.conn = null;
        socket.destroy();
        fail(error ?? new Error('memstore closed the connection'));
        if (wasSession) this.reconnect();
      },
    });
    socket.unref();
    return { path, framed, pending };
  }
}

/** Resolves or rejects a call with its response. */
function settle(p: Pending, res: pb.LeaseChannelResponse): void {
  const r = res.result;
  if (r?.$case === 'error') {
    const { code, message } = r.value;
    p.reject(new RemoteError(code, statusForCode(code), `${p.method}: ${message}`));
  } else if (r?.$case === p.method) {
    p.resolve(r.value);
  } else {
    p.reject(
      new RemoteError(
        'GRPC_INTERNAL',
        grpc.status.INTERNAL,
        `${p.method}: memstore answered with ${r?.$case ?? 'nothing'} on its lease channel`,
      ),
    );
  }
}

/** Connects to a unix socket, giving up at `deadline`. */
function connectUnix(path: string, deadline: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    const timer = setTimeout(
      () => {
        socket.destroy();
        reject(new Error(`connect timed out`));
      },
      Math.max(0, deadline - Date.now()),
    );
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socket);
    });
    const onError = (err: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
  });
}
