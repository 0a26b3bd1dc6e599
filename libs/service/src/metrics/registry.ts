import { collectDefaultMetrics, Registry } from 'prom-client';
import { GrpcCallMetrics } from './grpc-calls.js';

/**
 * The metrics of one service process: a prom-client registry whose every series carries a
 * `service` label (memstore, vmm, migrator) so one Prometheus can scrape them all, the process
 * metrics prom-client collects by default (CPU, memory, event loop, heap, GC, file descriptors;
 * none of them walks /proc/self/smaps), and the gRPC call counters of the service runtime.
 * Each app registers its own collectors on {@link ServiceMetrics.registry}.
 */
export class ServiceMetrics {
  /** Where every metric of this process is registered; scrape it with {@link scrape}. */
  readonly registry: Registry;
  /** The calls the gRPC server handled (counted by its interceptor). */
  readonly grpc: GrpcCallMetrics;

  /**
   * @param service the service's name, the value of the `service` label on every series
   * @param opts `processMetrics: false` leaves out prom-client's default metrics (tests that
   *   run several services in one process)
   */
  constructor(
    readonly service: string,
    opts: { processMetrics?: boolean } = {},
  ) {
    this.registry = new Registry();
    this.registry.setDefaultLabels({ service });
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
    this.grpc = new GrpcCallMetrics(this.registry);
  }

  /** The exposition text of every metric (Prometheus text format 0.0.4). */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }

  /** The Content-Type of {@link scrape}'s text. */
  get contentType(): string {
    return this.registry.contentType;
  }
}
