import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { RemoteError } from './errors.js';

/** Default deadline of a unary call when the caller gives none. */
export const DEFAULT_DEADLINE_MS = 5000;

type UnaryCallback<Res> = (err: grpc.ServiceError | null, res: Res) => void;
type UnaryFn<Req, Res> = (
  req: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: UnaryCallback<Res>,
) => grpc.ClientUnaryCall;

/** Names of a generated client's unary methods. */
export type UnaryMethod<C> = {
  [K in keyof C]: C[K] extends UnaryFn<infer _Req, infer _Res> ? K : never;
}[keyof C] &
  string;
type RequestOf<F> = F extends UnaryFn<infer Req, infer _Res> ? Req : never;
type ResponseOf<F> = F extends UnaryFn<infer _Req, infer Res> ? Res : never;

export interface CallOptions {
  /** Deadline in milliseconds from now (default 5 s). Every call has one. */
  deadlineMs?: number;
  /** A server call whose deadline and cancellation propagate to this one. */
  parent?: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;
  metadata?: grpc.Metadata;
}

/**
 * Calls a unary method of a generated client as a promise, always with a
 * deadline; failures become RemoteError carrying the server's stable code.
 */
export function unaryCall<C, K extends UnaryMethod<C>>(
  client: C,
  method: K,
  request: RequestOf<C[K]>,
  opts: CallOptions = {},
): Promise<ResponseOf<C[K]>> {
  const fn = client[method] as unknown as UnaryFn<RequestOf<C[K]>, ResponseOf<C[K]>>;
  const options = callOptionsOf(opts);
  return new Promise((resolve, reject) => {
    fn.call(client, request, opts.metadata ?? new grpc.Metadata(), options, (err, res) => {
      if (err) reject(RemoteError.fromGrpc(err, String(method)));
      else resolve(res);
    });
  });
}

/** grpc-js call options for `opts`: the deadline from now, and the parent call's propagation. */
function callOptionsOf(opts: CallOptions): Partial<grpc.CallOptions> {
  const options: Partial<grpc.CallOptions> = {
    deadline: Date.now() + (opts.deadlineMs ?? DEFAULT_DEADLINE_MS),
  };
  if (opts.parent !== undefined) {
    options.parent = opts.parent as unknown as grpc.ServerUnaryCall<unknown, unknown>;
    options.propagate_flags = grpc.propagate.DEFAULTS;
  }
  return options;
}

type StreamFn<Req, Res> = (
  req: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
) => grpc.ClientReadableStream<Res>;

/** Names of a generated client's server-streaming methods. */
export type StreamMethod<C> = {
  [K in keyof C]: C[K] extends StreamFn<infer _Req, infer _Res> ? K : never;
}[keyof C] &
  string;
type StreamRequestOf<F> = F extends StreamFn<infer Req, infer _Res> ? Req : never;
type StreamResponseOf<F> = F extends StreamFn<infer _Req, infer Res> ? Res : never;

/**
 * Calls a server-streaming method of a generated client, always with a deadline, and reads it
 * to its end: `onMessage` gets every message as it arrives; the promise resolves with the last
 * one when the server ends the call OK, and rejects with a RemoteError (the server's stable
 * code) when it ends it with an error, when the deadline passes, or when it ends OK without a
 * single message.
 */
export function streamCall<C, K extends StreamMethod<C>>(
  client: C,
  method: K,
  request: StreamRequestOf<C[K]>,
  opts: CallOptions & { onMessage?: (message: StreamResponseOf<C[K]>) => void } = {},
): Promise<StreamResponseOf<C[K]>> {
  const fn = client[method] as unknown as StreamFn<StreamRequestOf<C[K]>, StreamResponseOf<C[K]>>;
  const options = callOptionsOf(opts);
  return new Promise((resolve, reject) => {
    const call = fn.call(client, request, opts.metadata ?? new grpc.Metadata(), options);
    let last: { message: StreamResponseOf<C[K]> } | undefined;
    let settled = false;
    call.on('data', (message: StreamResponseOf<C[K]>) => {
      if (settled) return;
      last = { message };
      try {
        opts.onMessage?.(message);
      } catch (err) {
        settled = true;
        call.cancel();
        reject(err as Error);
      }
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (settled) return;
      settled = true;
      reject(RemoteError.fromGrpc(err, String(method)));
    });
    // 'end' comes after every message was delivered ('status' may come before them).
    call.on('end', () => {
      if (settled) return;
      settled = true;
      if (last !== undefined) resolve(last.message);
      else {
        reject(
          new RemoteError(
            'GRPC_INTERNAL',
            grpc.status.INTERNAL,
            `${String(method)}: the server ended the stream without a message`,
          ),
        );
      }
    });
  });
}

/** Channel options shared by every Handoff client. */
export const CLIENT_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // A restarted service (the local cluster restarts one that dies) is reached again within a
  // second: grpc-js's defaults back off up to two minutes between reconnection attempts.
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
};

/**
 * Makes every call of a client wait, within its deadline, for a connection instead of failing
 * at once while the channel is reconnecting (a service restarting under supervision).
 */
const waitForReadyInterceptor: grpc.Interceptor = (options, nextCall) =>
  new grpc.InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.setOptions({ ...metadata.getOptions(), waitForReady: true });
      next(metadata, listener);
    },
  });

type ClientCtor<C> = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => C;

/**
 * Creates a client of a generated service. `credentials` are explicit so no client talks
 * plaintext by accident: build them from the caller's own certificate with
 * `channelCredentials(tls)` (trust/credentials.ts), which gives plaintext only for `--insecure`.
 */
export function createClient<C>(
  ctor: ClientCtor<C>,
  address: string,
  credentials: grpc.ChannelCredentials,
  opts: {
    /**
     * Calls wait (within their deadline) while the channel reconnects, instead of failing at
     * once: for a service's clients of another service that may be restarting. vmctl keeps
     * the default, so a stopped cluster is reported at once.
     */
    waitForReady?: boolean;
  } = {},
): C {
  const options: grpc.ClientOptions = { ...CLIENT_CHANNEL_OPTIONS };
  if (opts.waitForReady === true) options.interceptors = [waitForReadyInterceptor];
  return new ctor(address, credentials, options);
}

/** grpc.health.v1 serving status as a string. */
export type HealthStatus =
  'SERVING' | 'NOT_SERVING' | 'UNKNOWN' | 'SERVICE_UNKNOWN' | 'UNREACHABLE';

interface HealthClient extends grpc.Client {
  check(
    req: { service: string },
    md: grpc.Metadata,
    opts: Partial<grpc.CallOptions>,
    cb: (err: grpc.ServiceError | null, res: { status: string }) => void,
  ): grpc.ClientUnaryCall;
}

let healthCtor: (new (address: string, creds: grpc.ChannelCredentials) => HealthClient) | undefined;

/**
 * Asks a server's grpc.health.v1 for a service's status ('' = the whole server), over
 * `credentials` (health answers callers without a client certificate too, but a TLS server
 * still needs TLS credentials that trust its CA). Never throws: an unreachable server, or one
 * whose TLS does not match, is reported as UNREACHABLE.
 */
export async function checkHealth(
  address: string,
  credentials: grpc.ChannelCredentials,
  service = '',
  deadlineMs = 2000,
): Promise<{ status: HealthStatus; error?: string }> {
  if (healthCtor === undefined) {
    const pkg = grpc.loadPackageDefinition(
      protoLoader.loadSync(healthProtoPath, { enums: String }),
    ) as unknown as {
      grpc: { health: { v1: { Health: typeof healthCtor } } };
    };
    healthCtor = pkg.grpc.health.v1.Health;
  }
  const client = new healthCtor!(address, credentials);
  try {
    const res = await unaryCall(client, 'check', { service }, { deadlineMs });
    return { status: res.status as HealthStatus };
  } catch (err) {
    const e = err as RemoteError;
    if (e.status === grpc.status.NOT_FOUND) return { status: 'SERVICE_UNKNOWN' };
    return { status: 'UNREACHABLE', error: e.message };
  } finally {
    client.close();
  }
}
