import { startServer, type Logger, type RunningServer } from '@handoff/service';
import { vmmServices } from './api/vmm-service.js';
import type { VmmConfig } from './config.js';
import { startHeartbeat } from './registration/heartbeat.js';

/** A running vmm instance. */
export interface Vmm {
  readonly id: string;
  readonly address: string;
  readonly server: RunningServer;
  stop(reason?: string): Promise<void>;
}

/** Starts a vmm instance: its gRPC services, then registration with the migrator. */
export async function startVmm(config: VmmConfig, parentLogger: Logger): Promise<Vmm> {
  const logger = parentLogger.child({ vmm: config.id });
  let advertised = '';
  const server = await startServer({
    name: 'vmm',
    host: config.host,
    port: config.port,
    logger,
    shutdownTimeoutMs: config['shutdown-timeout-ms'],
    services: vmmServices({ logger, id: config.id, address: () => advertised }),
  });
  advertised = config['advertise-address'] ?? server.address;
  const stopHeartbeat = startHeartbeat(
    config.migrator,
    { id: config.id, address: advertised, vmCount: () => 0 },
    logger,
  );
  return {
    id: config.id,
    address: server.address,
    server,
    stop: async (reason) => {
      stopHeartbeat();
      await server.shutdown(reason);
    },
  };
}
