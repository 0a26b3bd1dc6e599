import * as grpc from '@grpc/grpc-js';
import { Counter, Histogram, type Registry } from 'prom-client';

/** Buckets of the call latency histogram, in seconds: 100 µs to 10 s. */
export const GRPC_LATENCY_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** The names of a method's path `/pkg.Service/Method`. */
interface MethodLabels {
  grpc_service: string;
  method: string;
}

function labelsOf(path: string): MethodLabels {
  const slash = path.lastIndexOf('/');
  return { grpc_service: path.slice(1, slash), method: path.slice(slash + 1) };
}

/**
 * Counts every call a gRPC server handled, by method and final status code, and how long each
 * took. It sees the calls through a server interceptor ({@link GrpcCallMetrics.interceptor}),
 * which grpc-js runs for every call of a registered method before any handler: calls the access
 * check refuses, calls a handler fails, calls the client cancels and calls that run past their
 * deadline are all counted. Calls of a path the server does not serve are not (grpc-js answers
 * UNIMPLEMENTED before interceptors run; their paths are whatever a client sent).
 */
export class GrpcCallMetrics {
  /** `handoff_grpc_server_calls_total{grpc_service,method,code}`. */
  readonly calls: Counter<'grpc_service' | 'method' | 'code'>;
  /** `handoff_grpc_server_call_duration_seconds{grpc_service,method}`. */
  readonly duration: Histogram<'grpc_service' | 'method'>;

  constructor(registry: Registry) {
    this.calls = new Counter({
      name: 'handoff_grpc_server_calls_total',
      help: 'gRPC calls the server ended, by method and status code (refused calls included)',
      labelNames: ['grpc_service', 'method', 'code'],
      registers: [registry],
    });
    this.duration = new Histogram({
      name: 'handoff_grpc_server_call_duration_seconds',
      help: 'time from a call arriving to its status being sent (streams: the whole stream)',
      labelNames: ['grpc_service', 'method'],
      buckets: [...GRPC_LATENCY_BUCKETS],
      registers: [registry],
    });
  }

  /** Records one ended call. */
  record(path: string, code: grpc.status, seconds: number): void {
    const labels = labelsOf(path);
    this.calls.inc({ ...labels, code: grpc.status[code] ?? String(code) });
    this.duration.observe(labels, seconds);
  }

  /**
   * A grpc-js server interceptor that records each call once, with the first of: the status the
   * server sends, or the call ending without one (cancelled by the client, or its deadline passed:
   * grpc-js then answers DEADLINE_EXCEEDED itself, below the interceptors).
   */
  interceptor(): grpc.ServerInterceptor {
    return (descriptor, call) => {
      const started = process.hrtime.bigint();
      let recorded = false;
      const end = (code: grpc.status): void => {
        if (recorded) return;
        recorded = true;
        this.record(descriptor.path, code, Number(process.hrtime.bigint() - started) / 1e9);
      };
      return new grpc.ServerInterceptingCall(call, {
        start: (next) =>
          next({
            onCancel: () => {
              const deadline = call.getDeadline();
              const passed = deadline instanceof Date ? deadline.getTime() : deadline;
              end(passed <= Date.now() ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED);
            },
          }),
        sendStatus: (status, next) => {
          end(status.code ?? grpc.status.UNKNOWN);
          next(status);
        },
      });
    };
  }
}
