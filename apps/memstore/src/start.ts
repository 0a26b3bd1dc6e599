import { createLogger, startServer, type Logger, type RunningServer } from '@handoff/service';
import { memstoreService } from './api/memstore-service.js';
import { resolveSettings, type MemstoreConfig } from './config.js';
import { openMemstore, type Memstore } from './memstore.js';

/** A running memstore service. */
export interface MemstoreHandle {
  /** host:port the gRPC server listens on. */
  readonly address: string;
  readonly port: number;
  readonly server: RunningServer;
  /** The domain behind the server (tests and embedding). */
  readonly memstore: Memstore;
  /** Graceful stop: NOT_SERVING, drain calls (forced after the timeout), close the catalog. Idempotent. */
  stop(reason?: string): Promise<void>;
}

/**
 * Starts the memstore: directories, catalog, reconciliation, then the gRPC
 * server (MemstoreService + health + reflection). Nothing is served before
 * reconciliation finished. Without a logger, logs are discarded.
 */
export async function startMemstore(
  config: MemstoreConfig,
  logger?: Logger,
): Promise<MemstoreHandle> {
  const log = logger ?? createLogger({ name: 'memstore', level: 'silent', format: 'json' });
  const settings = resolveSettings(config);
  const memstore = openMemstore(settings, log);
  let server: RunningServer;
  try {
    server = await startServer({
      name: 'memstore',
      host: settings.host,
      port: settings.port,
      logger: log,
      shutdownTimeoutMs: settings.shutdownTimeoutMs,
      services: [memstoreService({ memstore, logger: log })],
    });
  } catch (err) {
    memstore.close();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    address: server.address,
    port: server.port,
    server,
    memstore,
    stop: (reason = 'stop requested') => {
      stopped ??= server.shutdown(reason).then(() => {
        memstore.close();
        log.info('catalog closed');
      });
      return stopped;
    },
  };
}
