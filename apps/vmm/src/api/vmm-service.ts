import { serviceNames, vmm as pb, vmmStream } from '@handoff/proto';
import {
  unavailable,
  unary,
  HANDOFF_VERSION,
  type Logger,
  type ServiceRegistration,
} from '@handoff/service';

/** Migration stream format versions this instance speaks ("major.minor"). */
export const STREAM_VERSIONS = ['1.0'];

const MACHINE = 'the machine milestone (RV32 VMs)';
const MIGRATION = 'the migration milestone (bypass-shared-memory)';
const SNAPSHOTS = 'the save/restore milestone';

/** The gRPC edge of a vmm instance. */
export function vmmServices(deps: {
  logger: Logger;
  id: string;
  address: () => string;
}): ServiceRegistration[] {
  const { logger } = deps;
  const later = (method: string, milestone: string) =>
    unavailable('VmmService', method, 'VMM_UNIMPLEMENTED', milestone);
  const vmm: pb.VmmServiceServer = {
    getInfo: unary(logger, () => ({
      vmmId: deps.id,
      version: HANDOFF_VERSION,
      address: deps.address(),
      vmCount: 0,
      runningVmCount: 0,
      streamVersions: STREAM_VERSIONS,
    })),
    createVm: later('CreateVm', MACHINE),
    startVm: later('StartVm', MACHINE),
    pauseVm: later('PauseVm', MACHINE),
    resumeVm: later('ResumeVm', MACHINE),
    destroyVm: later('DestroyVm', MACHINE),
    getVm: later('GetVm', MACHINE),
    listVms: unary(logger, () => ({ vms: [] })),
    watchVm: later('WatchVm', MACHINE),
    console: later('Console', MACHINE),
    prepareIncoming: later('PrepareIncoming', MIGRATION),
    migrateVm: later('MigrateVm', MIGRATION),
    getMigration: later('GetMigration', MIGRATION),
    cancelMigration: later('CancelMigration', MIGRATION),
    saveVm: later('SaveVm', SNAPSHOTS),
    restoreVm: later('RestoreVm', SNAPSHOTS),
  };
  const migration: vmmStream.MigrationServiceServer = {
    incoming: unavailable('MigrationService', 'Incoming', 'VMM_UNIMPLEMENTED', MIGRATION),
  };
  return [
    {
      name: serviceNames.vmm,
      definition: pb.VmmServiceService,
      implementation: vmm as unknown as ServiceRegistration['implementation'],
    },
    {
      name: serviceNames.migration,
      definition: vmmStream.MigrationServiceService,
      implementation: migration as unknown as ServiceRegistration['implementation'],
    },
  ];
}
