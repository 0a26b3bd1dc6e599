import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import { readFileSync } from 'node:fs';
import type * as http2 from 'node:http2';
import { descriptorSetPath } from '@handoff/proto';
import { ServiceError, toGrpcError } from './errors.js';
import type { Logger } from './logger.js';
import type { ServiceMetrics } from './metrics/registry.js';
import { ANY_ROLE, guardImplementation, type AccessTable } from './trust/access.js';
import { serverCredentials } from './trust/credentials.js';
import type { TlsMaterial } from './trust/material.js';

/** Name under which grpc.health.v1 reports the server as a whole. */
export const OVERALL_HEALTH = '';

/** Reflection name of the health service (served beside every Handoff service). */
export const HEALTH_SERVICE_NAME = 'grpc.health.v1.Health';

/**
 * A service to register: the generated definition, its fully-qualified name, handlers, and who
 * may call each method.
 */
export interface ServiceRegistration {
  name: string;
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
  /** Roles per method (trust/access.ts); a method without an entry keeps the server from starting. */
  access: AccessTable;
}

export interface ServerOptions {
  /** Service name for logs (memstore, vmm, migrator). */
  name: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  logger: Logger;
  services: ServiceRegistration[];
  /**
   * The server's TLS material (mutual TLS: every call but health needs a client certificate the
   * CA issued, of a role the service's access table allows), or null to serve plaintext
   * (`--insecure`: nobody is authenticated and every call passes).
   */
  tls: TlsMaterial | null;
  /** How long graceful shutdown waits for calls to finish before forcing. */
  shutdownTimeoutMs?: number;
  /** Largest message accepted (default 16 MiB: page frames are <= 1 MiB plus headers). */
  maxReceiveMessageBytes?: number;
  /**
   * HTTP/2 receive window per stream and per connection, for servers that take bulk data on
   * a stream (a migration target). HTTP/2's default 64 KiB makes a sender wait a round trip
   * every 64 KiB; grpc-js has no server option for it, so it is set on each new session.
   */
  receiveWindowBytes?: number;
  /**
   * Where to count the server's calls (`handoff_grpc_server_calls_total` and the latency
   * histogram): every call of a registered method, refused ones included. Null or absent
   * counts nothing.
   */
  metrics?: ServiceMetrics | null;
}

/** A started server. */
export interface RunningServer {
  readonly port: number;
  /** host:port the server listens on. */
  readonly address: string;
  readonly health: HealthImplementation;
  /**
   * Graceful shutdown: health goes NOT_SERVING, new calls are refused, open
   * calls get `shutdownTimeoutMs` to finish, then the server is forced down.
   * Idempotent; resolves when the server is down.
   */
  shutdown(reason?: string): Promise<void>;
}

let cachedPackages: protoLoader.PackageDefinition | undefined;

function reflectionPackages(): protoLoader.PackageDefinition {
  if (cachedPackages === undefined) {
    const handoff = protoLoader.loadFileDescriptorSetFromBuffer(readFileSync(descriptorSetPath));
    const health = protoLoader.loadSync(healthProtoPath);
    cachedPackages = { ...health, ...handoff };
  }
  return cachedPackages;
}

/**
 * Starts a gRPC server with the given services plus grpc.health.v1 and server
 * reflection (v1 and v1alpha), so `grpcurl HOST:PORT list` works (with the cluster's
 * certificates, or `-plaintext` against an `--insecure` server). Every handler is wrapped with
 * its service's access check; health stays open to callers without a certificate (liveness
 * probes), reflection is open to every role.
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` when an access table misses a method,
 *   `SERVICE_UNAVAILABLE` when the port cannot be bound
 */
export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const maxReceive = opts.maxReceiveMessageBytes ?? 16 * 1024 * 1024;
  const server = new grpc.Server({
    'grpc.max_receive_message_length': maxReceive,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    // Runs for every call before the access check and the handler, so it sees all of them.
    interceptors: opts.metrics ? [opts.metrics.grpc.interceptor()] : [],
  });
  const names = opts.services.map((s) => s.name);
  const health = new HealthImplementation({ [OVERALL_HEALTH]: 'NOT_SERVING' });
  for (const n of names) health.setStatus(n, 'NOT_SERVING');
  health.addToServer(server);
  const secure = opts.tls !== null;
  const guarded = (
    name: string,
    definition: grpc.ServiceDefinition,
    implementation: grpc.UntypedServiceImplementation,
    access: AccessTable,
  ): void =>
    server.addService(
      definition,
      guardImplementation(name, definition, implementation, access, secure, opts.logger),
    );
  // Reflection registers its own services; every role may list what a server offers.
  const reflectionHost = {
    addService: (definition: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation) =>
      guarded('ServerReflection', definition, impl, { ServerReflectionInfo: ANY_ROLE }),
  } as unknown as grpc.Server;
  new ReflectionService(reflectionPackages(), {
    services: [...names, HEALTH_SERVICE_NAME],
  }).addToServer(reflectionHost);
  for (const s of opts.services) guarded(s.name, s.definition, s.implementation, s.access);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${opts.host}:${opts.port}`, serverCredentials(opts.tls), (err, p) =>
      err ? reject(bindError(err, opts)) : resolve(p),
    );
  });
  if (opts.receiveWindowBytes !== undefined) widenReceiveWindow(server, opts);
  const address = `${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`;
  health.setStatus(OVERALL_HEALTH, 'SERVING');
  for (const n of names) health.setStatus(n, 'SERVING');
  opts.logger.info(
    {
      address,
      services: names,
      tls: opts.tls === null ? 'off (--insecure)' : opts.tls.identity,
    },
    `${opts.name} serving`,
  );

  let down: Promise<void> | undefined;
  const shutdown = (reason = 'shutdown requested'): Promise<void> => {
    down ??= new Promise<void>((resolve) => {
      health.setStatus(OVERALL_HEALTH, 'NOT_SERVING');
      for (const n of names) health.setStatus(n, 'NOT_SERVING');
      opts.logger.info({ reason }, `${opts.name} shutting down`);
      const timeout = opts.shutdownTimeoutMs ?? 5000;
      const timer = setTimeout(() => {
        opts.logger.warn(
          { timeoutMs: timeout },
          'calls still open after the timeout: forcing shutdown',
        );
        server.forceShutdown();
        resolve();
      }, timeout);
      timer.unref();
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return down;
  };
  return { port, address, health, shutdown };
}

function bindError(err: Error, opts: ServerOptions): ServiceError {
  return new ServiceError(
    'SERVICE_UNAVAILABLE',
    `${opts.name} cannot listen on ${opts.host}:${opts.port} (${err.message}); ` +
      'pick another port with --port or stop the process using it',
    { cause: err },
  );
}

type UnaryFn<Req, Res> = (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res;

/**
 * Adapts an async handler to grpc-js: the resolved value is the response, a
 * thrown error is normalised and mapped through the one status table.
 */
export function unary<Req, Res>(
  logger: Logger,
  fn: UnaryFn<Req, Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    Promise.resolve()
      .then(() => fn(call.request, call))
      .then(
        (res) => callback(null, res),
        (err: unknown) => {
          const grpcErr = toGrpcError(err);
          logFailure(logger, call.getPath(), err, grpcErr);
          callback(grpcErr as grpc.ServiceError);
        },
      );
  };
}

/**
 * Adapts an async server-streaming handler: the call ends when the function
 * resolves; a thrown error ends it with the mapped status.
 */
export function serverStream<Req, Res>(
  logger: Logger,
  fn: (request: Req, call: grpc.ServerWritableStream<Req, Res>) => Promise<void>,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    fn(call.request, call).then(
      () => {
        if (!call.writableEnded) call.end();
      },
      (err: unknown) => failStream(logger, call, err),
    );
  };
}

/** Adapts an async bidirectional handler (same contract as serverStream). */
export function bidiStream<Req, Res>(
  logger: Logger,
  fn: (call: grpc.ServerDuplexStream<Req, Res>) => Promise<void>,
): grpc.handleBidiStreamingCall<Req, Res> {
  return (call) => {
    fn(call).then(
      () => {
        if (!call.writableEnded) call.end();
      },
      (err: unknown) => failStream(logger, call, err),
    );
  };
}

/* eslint-disable @typescript-eslint/no-explicit-any -- a refusal fits every call shape */
/** A handler usable for any call shape (it only refuses). */
export type UnavailableHandler = grpc.handleUnaryCall<any, any> &
  grpc.handleServerStreamingCall<any, any> &
  grpc.handleClientStreamingCall<any, any> &
  grpc.handleBidiStreamingCall<any, any>;
/* eslint-enable @typescript-eslint/no-explicit-any */

/**
 * A handler for a call this version does not offer yet: answers UNIMPLEMENTED
 * with a message naming the call and the release that brings it.
 */
export function unavailable(
  service: string,
  method: string,
  code: string,
  plannedFor: string,
): UnavailableHandler {
  const message = `${service}.${method} is not available in this version; it arrives with ${plannedFor}`;
  return ((call: { getPath?: () => string }, callback?: (e: unknown) => void) => {
    const err = toGrpcError(new ServiceError(code, message));
    if (typeof callback === 'function') callback(err);
    else (call as unknown as NodeJS.EventEmitter).emit('error', err);
  }) as unknown as UnavailableHandler;
}

/**
 * Ends a failed stream with its mapped status. grpc-js turns an emitted
 * 'error' into the trailing status; `destroy(err)` would send none and leave
 * the client waiting for its deadline.
 */
function failStream(
  logger: Logger,
  call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
  err: unknown,
): void {
  const grpcErr = toGrpcError(err);
  logFailure(logger, call.getPath(), err, grpcErr);
  if (!call.writableEnded && !call.destroyed) call.emit('error', grpcErr);
}

function logFailure(
  logger: Logger,
  path: string,
  err: unknown,
  grpcErr: Partial<grpc.ServiceError>,
): void {
  const status = grpc.status[grpcErr.code ?? grpc.status.UNKNOWN];
  if (grpcErr.code === grpc.status.INTERNAL || grpcErr.code === grpc.status.UNKNOWN) {
    logger.error({ err, path, status }, 'call failed');
  } else {
    logger.info({ path, status, error: grpcErr.details }, 'call refused');
  }
}

/**
 * Sets the receive window of every HTTP/2 session the server accepts. grpc-js keeps its
 * http2 servers in a private field; when that is not there (another grpc-js version) the
 * default window stays and a warning says so.
 */
function widenReceiveWindow(server: grpc.Server, opts: ServerOptions): void {
  const window = opts.receiveWindowBytes!;
  const servers = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> })
    .http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) {
    opts.logger.warn('cannot reach the http2 servers of grpc-js: the receive window stays 64 KiB');
    return;
  }
  for (const h2 of servers.keys()) {
    h2.on('session', (session: http2.ServerHttp2Session) => {
      try {
        session.settings({ initialWindowSize: window });
        session.setLocalWindowSize(window);
      } catch (err) {
        opts.logger.warn({ error: (err as Error).message }, 'could not widen a receive window');
      }
    });
  }
}
