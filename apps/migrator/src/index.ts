/**
 * The migrator service: the registry of vmm instances and the jobs that move VMs between them
 * (migrate, live update) and save, restore, template and clone them.
 *
 * @packageDocumentation
 */
export { startMigrator, type Migrator } from './migrator.js';
export { migratorOptions, MIGRATOR_DEFAULT_PORT, type MigratorConfig } from './config.js';
export {
  VmmRegistry,
  DEFAULT_HOST_ID,
  HOST_ID_PATTERN,
  type Registration,
  type VmLocation,
  type VmmRecord,
} from './registry/vmm-registry.js';
export type { HostedVm, HostedVms, VmSpec, VmState, VmStatus } from './registry/hosted-vm.js';
export {
  refuseCrossHostBypass,
  sameHost,
  type CrossHostMove,
  type OnHost,
} from './registry/placement.js';
export type { HostOwnership, VmOwnership } from './hosts/host-ownership.js';
export { LocalHostOwnership, OWNERSHIP_FILE, OWNERSHIP_VERSION } from './hosts/local-ownership.js';
export {
  VmmClients,
  isDefinitive,
  isUnreachable,
  unreachableHow,
  type ArrivalEnd,
  type MigrateCall,
  type PreparedTarget,
  type VmmCalls,
} from './clients/vmm-client.js';
export { MigratorError, type MigratorErrorCode } from './errors.js';
export { JobManager, type JobManagerOptions, type JobListener } from './jobs/job-manager.js';
export { JobJournal, JOURNAL_FILE, JOURNAL_VERSION } from './jobs/journal.js';
export {
  isFinished,
  statusPath,
  type Job,
  type JobKind,
  type JobOutcome,
  type SnapshotJobKind,
  type SnapshotRequest,
  type SnapshotResult,
  type VmWhereabouts,
} from './jobs/job.js';
export {
  MemstoreClient,
  holderLivenessOf,
  type HolderLiveness,
  type RegionLease,
  type RegionLeases,
  type SnapshotCatalog,
  type SnapshotFacts,
  type SnapshotKind,
} from './clients/memstore-client.js';
export { gatherEvidence, judge, type Evidence, type Verdict } from './jobs/outcome.js';
