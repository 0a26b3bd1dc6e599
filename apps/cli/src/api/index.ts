/**
 * vmctl's client library (`@handoff/cli/client`): clients of a cluster's services and the calls
 * vmctl makes, with the wire converted to plain views at this edge. Tools (the local-cluster
 * bench) use it instead of generated types; it starts no service and imports none.
 *
 * @packageDocumentation
 */
export { Clients, DEFAULT_ENDPOINTS, type Endpoints } from './clients.js';
export { operatorTls, OPERATOR } from './credentials.js';
export {
  jobs,
  jobEnded,
  jobJson,
  isSnapshotJob,
  WATCH_DEADLINE_MS,
  type JobJson,
  type JobView,
  type SnapshotResultView,
} from './jobs.js';
export {
  snapshots,
  snapshotJson,
  snapshotMemory,
  IMPORT_CHUNK,
  TRANSFER_DEADLINE_MS,
  type SnapshotBlockView,
  type SnapshotKindName,
  type SnapshotView,
  type TransferListener,
} from './snapshots.js';
export {
  regions,
  REGION_KINDS,
  type FencedView,
  type HolderView,
  type RegionKindName,
  type RegionView,
} from './regions.js';
export {
  clusterStatus,
  type ClusterStatus,
  type MemstoreUsage,
  type ServiceStatus,
  type VmmStatus,
} from './status.js';
export {
  vms,
  vmJson,
  ConsoleSession,
  type MemoryUsageView,
  type RamBackendName,
  type RamBlockView,
  type VmCreateSpec,
  type VmmRef,
  type VmStateName,
  type VmView,
} from './vms.js';
