import { dateToTimestamp, migrator as pb, serviceNames } from '@handoff/proto';
import {
  unavailable,
  unary,
  HANDOFF_VERSION,
  type Logger,
  type ServiceRegistration,
} from '@handoff/service';
import type { VmmRegistry, VmmRecord } from '../registry/vmm-registry.js';

const SERVICE = 'MigratorService';

function toVmmInstance(r: VmmRecord): pb.VmmInstance {
  return {
    id: r.id,
    address: r.address,
    version: r.version,
    lastSeen: dateToTimestamp(r.lastSeen),
    alive: r.alive,
    vmCount: r.vmCount,
  };
}

/** The gRPC edge of the migrator: converts wire types and delegates to the registry and jobs. */
export function migratorService(deps: {
  logger: Logger;
  registry: VmmRegistry;
  heartbeatIntervalMs: number;
}): ServiceRegistration {
  const { logger, registry } = deps;
  const later = (method: string, milestone: string) =>
    unavailable(SERVICE, method, 'MIGRATOR_UNIMPLEMENTED', milestone);
  const implementation: pb.MigratorServiceServer = {
    getInfo: unary(logger, () => ({
      version: HANDOFF_VERSION,
      vmmCount: registry.list().length,
      activeJobs: 0,
    })),
    registerVmm: unary(logger, (req) => {
      const isNew = registry.register({
        id: req.id,
        address: req.address,
        version: req.version,
        vmCount: req.vmCount,
      });
      if (isNew) logger.info({ vmm: req.id, address: req.address }, 'vmm instance registered');
      return { heartbeatIntervalMs: deps.heartbeatIntervalMs };
    }),
    listVmms: unary(logger, () => ({ vmms: registry.list().map(toVmmInstance) })),
    migrate: later('Migrate', 'the migration milestone (bypass-shared-memory)'),
    liveUpdate: later('LiveUpdate', 'the migration milestone (bypass-shared-memory)'),
    save: later('Save', 'the save/restore milestone'),
    restore: later('Restore', 'the save/restore milestone'),
    createTemplate: later('CreateTemplate', 'the templates and clones milestone'),
    clone: later('Clone', 'the templates and clones milestone'),
    getJob: later('GetJob', 'the migration milestone (jobs)'),
    listJobs: later('ListJobs', 'the migration milestone (jobs)'),
    watchJob: later('WatchJob', 'the migration milestone (jobs)'),
    cancelJob: later('CancelJob', 'the migration milestone (jobs)'),
  };
  return {
    name: serviceNames.migrator,
    definition: pb.MigratorServiceService,
    implementation: implementation as unknown as ServiceRegistration['implementation'],
  };
}
