/**
 * Prometheus metrics of a service: its registry (with process metrics and a `service` label),
 * the gRPC call counters the server's interceptor moves, and the HTTP endpoint that serves them
 * (`--metrics-port`). Metric names are listed in docs/metrics.md.
 *
 * @packageDocumentation
 */
export * from './registry.js';
export * from './grpc-calls.js';
export * from './http.js';
export * from './exposition.js';
export { Counter, Gauge, Histogram, type Registry } from 'prom-client';
