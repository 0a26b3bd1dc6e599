import {
  createLogger,
  loadTls,
  ServiceMetrics,
  startMetricsServer,
  startServer,
  type Logger,
  type MetricsServer,
  type RunningServer,
} from '@handoff/service';
import {
  LeaseSocketBusyError,
  startLeaseChannel,
  type LeaseChannelServer,
} from './api/lease-channel.js';
import { memstoreService } from './api/memstore-service.js';
import { join } from 'node:path';
import {
  LEASE_SOCKET_FILE_NAME,
  pageSocketFileName,
  resolveSettings,
  type MemstoreConfig,
  type MemstoreSettings,
} from './config.js';
import { openMemstore, type Memstore } from './memstore.js';
import { registerMemstoreMetrics } from './metrics.js';
import { startPageChannel, type PageChannelServer } from './lazy/page-channel-server.js';
import { grpcSourceConnector } from './api/source-client.js';

/** A running memstore service. */
export interface MemstoreHandle {
  /** host:port the gRPC server listens on. */
  readonly address: string;
  readonly port: number;
  readonly server: RunningServer;
  /** The domain behind the server (tests and embedding). */
  readonly memstore: Memstore;
  /** The lease channel (unix socket), or null when disabled (`--lease-socket off`). */
  readonly leaseChannel: LeaseChannelServer | null;
  /** The page channel (post-copy page reads by other memstores), or null when off. */
  readonly pageChannel: PageChannelServer | null;
  /** host:port of the metrics endpoint, or null without `--metrics-port`. */
  readonly metricsAddress: string | null;
  /**
   * Graceful stop: NOT_SERVING, close the lease channel (removing its socket), drain calls
   * (forced after the timeout), close the catalog. Idempotent.
   */
  stop(reason?: string): Promise<void>;
}

/**
 * Starts the memstore: its TLS material (or `--insecure`), directories, catalog,
 * reconciliation, then the lease channel (unless disabled) and the gRPC server
 * (MemstoreService + health + reflection; GetInfo reports the channel's path), and its metrics
 * when `--metrics-port` is set. Nothing is served before reconciliation finished. Without a logger, logs are discarded.
 */
export async function startMemstore(
  config: MemstoreConfig,
  logger?: Logger,
): Promise<MemstoreHandle> {
  const log = logger ?? createLogger({ name: 'memstore', level: 'silent', format: 'json' });
  const settings = resolveSettings(config);
  const tls = loadTls(config, 'memstore', { role: 'memstore' });
  const memstore = openMemstore(settings, log);
  let leaseChannel: LeaseChannelServer | null = null;
  let pageChannel: PageChannelServer | null = null;
  let metricsServer: MetricsServer | null = null;
  let server: RunningServer;
  try {
    const metrics = config['metrics-port'] > 0 ? new ServiceMetrics('memstore') : null;
    if (metrics !== null) {
      registerMemstoreMetrics(metrics.registry, memstore);
      metricsServer = await startMetricsServer({
        name: 'memstore',
        host: settings.host,
        port: config['metrics-port'],
        metrics,
        logger: log,
      });
    }
    if (settings.leaseSocket !== null) {
      leaseChannel = await startLeaseChannelOrNot(memstore, settings, log);
    }
    if (settings.pageChannel !== null) {
      pageChannel = await startPageChannel({
        listen: pageChannelAddress(settings, tls !== null, memstore.catalog.catalogId),
        sources: memstore.pageSources,
        tls,
        logger: log,
      });
      memstore.pageAddress = pageChannel.address;
    }
    memstore.lazy.start(grpcSourceConnector(tls), tls);
    server = await startServer({
      name: 'memstore',
      host: settings.host,
      port: settings.port,
      logger: log,
      tls,
      shutdownTimeoutMs: settings.shutdownTimeoutMs,
      metrics,
      services: [
        memstoreService({ memstore, logger: log, leaseChannel: leaseChannel?.path ?? '' }),
      ],
    });
  } catch (err) {
    await leaseChannel?.close();
    await pageChannel?.close();
    await metricsServer?.close();
    memstore.close();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    address: server.address,
    port: server.port,
    server,
    memstore,
    leaseChannel,
    pageChannel,
    metricsAddress: metricsServer?.address ?? null,
    stop: (reason = 'stop requested') => {
      stopped ??= Promise.all([
        server.shutdown(reason),
        leaseChannel?.close(),
        pageChannel?.close(),
        metricsServer?.close(),
      ]).then(() => {
        memstore.close();
        log.info('catalog closed');
      });
      return stopped;
    },
  };
}

/** Where the page channel listens: the flag's address, or for `auto` one chosen here. */
function pageChannelAddress(
  settings: MemstoreSettings,
  secure: boolean,
  catalogId: string,
): string {
  const given = settings.pageChannel!;
  if (given !== 'auto') return given;
  if (secure) return `${settings.host}:0`;
  return `unix:${join(settings.volatileDir, pageSocketFileName(catalogId))}`;
}

/**
 * Starts the lease channel. Several memstores may share one volatile directory (their region
 * files never clash), but not its default socket: the second one then runs without a channel
 * (its vmms use gRPC) and says so. A socket path given explicitly must be free.
 */
async function startLeaseChannelOrNot(
  memstore: Memstore,
  settings: MemstoreSettings,
  log: Logger,
): Promise<LeaseChannelServer | null> {
  const path = settings.leaseSocket!;
  try {
    return await startLeaseChannel({ memstore, logger: log, path });
  } catch (err) {
    if (
      !(err instanceof LeaseSocketBusyError) ||
      path !== join(settings.volatileDir, LEASE_SOCKET_FILE_NAME)
    ) {
      throw err;
    }
    log.warn(
      { path },
      'another memstore serves the lease channel in this volatile directory: running without ' +
        'one (vmms use gRPC for lease calls); give this memstore its own --lease-socket',
    );
    return null;
  }
}
