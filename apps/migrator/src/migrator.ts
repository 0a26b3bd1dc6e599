import { startServer, type Logger, type RunningServer } from '@handoff/service';
import { migratorService } from './api/migrator-service.js';
import type { MigratorConfig } from './config.js';
import { VmmRegistry } from './registry/vmm-registry.js';

/** A running migrator. */
export interface Migrator {
  readonly address: string;
  readonly server: RunningServer;
  readonly registry: VmmRegistry;
  stop(reason?: string): Promise<void>;
}

/** Starts the migrator's gRPC server (health, reflection, MigratorService). */
export async function startMigrator(config: MigratorConfig, logger: Logger): Promise<Migrator> {
  const registry = new VmmRegistry(config['vmm-expiry-ms']);
  const server = await startServer({
    name: 'migrator',
    host: config.host,
    port: config.port,
    logger,
    shutdownTimeoutMs: config['shutdown-timeout-ms'],
    services: [
      migratorService({ logger, registry, heartbeatIntervalMs: config['heartbeat-interval-ms'] }),
    ],
  });
  return {
    address: server.address,
    server,
    registry,
    stop: (reason) => server.shutdown(reason),
  };
}
