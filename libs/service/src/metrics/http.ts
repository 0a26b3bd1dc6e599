import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { ServiceError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ServiceMetrics } from './registry.js';

/** The path Prometheus scrapes. */
export const METRICS_PATH = '/metrics';

/** A running metrics endpoint. */
export interface MetricsServer {
  readonly port: number;
  /** host:port it listens on; scrape `http://<address>/metrics`. */
  readonly address: string;
  /** Stops listening and closes open connections. Idempotent. */
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (plain HTTP, no authentication: bind it to loopback or a network only
 * the scraper reaches) on `host:port` of its own, beside the service's gRPC port. Other paths
 * answer 404, other methods 405.
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` for a port that is not an integer in
 *   [1, 65535], `SERVICE_UNAVAILABLE` when the port cannot be bound (in use, not permitted)
 */
export async function startMetricsServer(opts: {
  /** The service's name, for messages (memstore, vmm, migrator). */
  name: string;
  host: string;
  port: number;
  metrics: ServiceMetrics;
  logger: Logger;
}): Promise<MetricsServer> {
  const where = `${opts.host}:${opts.port}`;
  if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `--metrics-port ${opts.port} is not a TCP port; give an integer in [1, 65535], or 0 to ` +
        'serve no metrics',
    );
  }
  const server = createServer((req, res) => {
    answer(req, res, opts.metrics, opts.logger);
  });
  await new Promise<void>((resolve, reject) => {
    const fail = (err: NodeJS.ErrnoException): void => {
      reject(
        new ServiceError(
          'SERVICE_UNAVAILABLE',
          `${opts.name} cannot serve metrics on ${where} (${err.code ?? err.message}); pick ` +
            'another --metrics-port, stop the process using it, or give 0 to serve no metrics',
          { cause: err },
        ),
      );
    };
    server.once('error', fail);
    server.listen({ host: opts.host, port: opts.port, exclusive: true }, () => {
      server.off('error', fail);
      resolve();
    });
  });
  server.on('error', (err) => opts.logger.warn({ err }, 'metrics server error'));
  const bound = server.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : opts.port;
  const address = `${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`;
  opts.logger.info({ metrics: `http://${address}${METRICS_PATH}` }, 'serving metrics');
  let closed: Promise<void> | undefined;
  return {
    port,
    address,
    close: () => {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}

function answer(
  req: IncomingMessage,
  res: ServerResponse,
  metrics: ServiceMetrics,
  logger: Logger,
): void {
  const path = (req.url ?? '/').split('?')[0];
  if (path !== METRICS_PATH) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end(`scrape ${METRICS_PATH}\n`);
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end();
    return;
  }
  metrics.scrape().then(
    (text) => {
      res.writeHead(200, { 'content-type': metrics.contentType });
      res.end(req.method === 'HEAD' ? undefined : text);
    },
    (err: unknown) => {
      logger.error({ err }, 'collecting metrics failed');
      res.writeHead(500, { 'content-type': 'text/plain' }).end('collecting metrics failed\n');
    },
  );
}
