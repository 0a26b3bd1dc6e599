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

type Method = keyof LeaseCalls;
type RequestOf<M extends Method> = Parameters<LeaseCalls[M]>[0];
type ResponseOf<M extends Method> = Awaited<ReturnType<LeaseCalls[M]>>;

/** Largest frame sent or accepted (memstore's limit). */
export const LEASE_CHANNEL_MAX_FRAME_BYTES = 1024 * 1024;

/** While memstore reports no channel, how long before asking it again. */
const DISABLED_RECHECK_MS = 30_000;

interface Pending {
  readonly method: Method;
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
  /** The gRPC client of memstore: asks for the channel's path, and carries the fallback. */
  readonly memstore: () => pb.MemstoreServiceClient;
  readonly logger: Logger;
  /** Deadline of a call that gives none (default 5 s). */
  readonly deadlineMs?: number;
}

/**
 * {@link LeaseCalls} over memstore's lease channel, falling back to gRPC.
 *
 * On first use it asks memstore (GetInfo) for the channel's socket path and connects one
 * persistent socket; concurrent calls share it, matched by request id, each with its own
 * deadline. After the connection breaks it reconnects on the next call.
 *
 * - Channel disabled (GetInfo reports no path), GetInfo failing, or the connection cannot be
 *   made: the call goes over gRPC. Nothing was sent on the channel, so that is safe.
 * - The connection breaks after the request was written: the call fails with status
 *   UNAVAILABLE (code `GRPC_UNAVAILABLE`, like an unreachable gRPC server) and is NOT retried:
 *   TransferLease is a compare-and-set, and whether memstore applied it is unknown.
 * - Deadline passed: status DEADLINE_EXCEEDED (code `GRPC_DEADLINE_EXCEEDED`), as over gRPC.
 *
 * Call {@link LeaseChannelClient.prepare} ahead of a latency-critical call (a migration's
 * switchover) so that the first call does not pay for GetInfo and the connect.
 */
export class LeaseChannelClient implements LeaseCalls {
  /** The socket path: undefined = not asked yet, '' = memstore serves no channel. */
  private path: string | undefined;
  private disabledAt = 0;
  private conn: Connection | null = null;
  private connecting: Promise<Connection | null> | null = null;
  private nextId = 1n;
  private closed = false;

  constructor(private readonly opts: LeaseChannelClientOptions) {}

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
   * Drops the connection; calls still waiting fail with UNAVAILABLE. Later calls go over gRPC
   * (through the memstore client, which its owner closes).
   */
  close(): void {
    this.closed = true;
    this.conn?.framed.destroy();
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
    return unaryCall(this.opts.memstore(), method, req as never, { deadlineMs }) as Promise<
      ResponseOf<M>
    >;
  }

  private send<M extends Method>(
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
    if (this.path === '' && Date.now() - this.disabledAt >= DISABLED_RECHECK_MS) {
      this.path = undefined;
    }
    if (this.path === undefined) {
      try {
        const info = await unaryCall(
          this.opts.memstore(),
          'getInfo',
          {},
          { deadlineMs: Math.max(1, deadline - Date.now()) },
        );
        this.path = info.leaseChannel;
        if (this.path === '') {
          this.disabledAt = Date.now();
          this.opts.logger.debug('memstore serves no lease channel: lease calls go over gRPC');
        }
      } catch (err) {
        this.opts.logger.debug(
          { error: (err as Error).message },
          'memstore GetInfo failed: lease calls go over gRPC for now',
        );
        return null;
      }
    }
    if (this.path === '' || this.closed) return null;
    const path = this.path;
    try {
      const socket = await connectUnix(path, deadline);
      if (this.closed) {
        socket.destroy();
        return null;
      }
      const conn = this.adopt(path, socket);
      this.conn = conn;
      this.opts.logger.debug({ path }, 'connected to the memstore lease channel');
      return conn;
    } catch (err) {
      // Maybe memstore restarted elsewhere: ask for the path again next time.
      this.path = undefined;
      this.opts.logger.warn(
        { path, error: (err as Error).message },
        'cannot connect to the memstore lease channel: this call goes over gRPC',
      );
      return null;
    }
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
        if (this.conn?.framed === framed) this.conn = null;
        socket.destroy();
        fail(error ?? new Error('memstore closed the connection'));
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
