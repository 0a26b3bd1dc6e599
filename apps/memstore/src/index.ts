/**
 * The memory service: owns the files behind guest RAM (regions), seals
 * templates, fences writers with epoch leases, and keeps all of it in a
 * crash-safe SQLite catalog.
 *
 * @packageDocumentation
 */
export { startMemstore, type MemstoreHandle } from './start.js';
export { openMemstore, Memstore, leaseArmsFileName, type MemstoreInfo } from './memstore.js';
export {
  startLeaseChannel,
  LeaseSocketBusyError,
  LEASE_CHANNEL_MAX_FRAME_BYTES,
} from './api/lease-channel.js';
export type { LeaseChannelServer } from './api/lease-channel.js';
export {
  LEASE_SOCKET_FILE_NAME,
  memstoreOptions,
  memstoreConfig,
  resolveSettings,
  MEMSTORE_DEFAULT_PORT,
  type MemstoreConfig,
  type MemstoreSettings,
} from './config.js';
export { MemstoreError, MEMSTORE_ERROR_CODES, type MemstoreErrorCode } from './errors.js';
export { Catalog, CATALOG_FILE_NAME, type CatalogOpenInfo } from './catalog/catalog.js';
export { SCHEMA_VERSION } from './catalog/schema.js';
export type { RegionRow, RegionKind } from './catalog/rows.js';
export type { Region, RegionRef, RegionState } from './regions/region.js';
export { RegionStore, type RegionLimits, type RegionUsage } from './regions/region-store.js';
export { reconcile, type ReconcileReport } from './regions/reconcile.js';
export {
  REGION_NAME_PATTERN,
  validateRegionName,
  regionFileName,
  parseRegionFileName,
} from './regions/naming.js';
export { PAGE_SIZE, parseByteSize, validateRegionSize } from './regions/size.js';
export {
  LeaseManager,
  DEFAULT_ARM_TTL_MS,
  type ArmedTransfer,
  type LeaseArmResolver,
  type LeaseValidation,
} from './leases/lease-manager.js';
export {
  LeaseArmsFile,
  ARMS_MAGIC,
  ARMS_LAYOUT_VERSION,
  ARMS_HEADER_BYTES,
  ARMS_SLOT_BYTES,
  ARMS_SLOT_COUNT,
  ARMS_FILE_BYTES,
  ARMS_RECORD_MAX_BYTES,
  ARM_FREE,
  ARM_ARMED,
  ARM_FLIPPED,
  ARM_CANCELLED,
  armWord,
  armState,
  armGeneration,
  slotOffset as armSlotOffset,
  type ArmRecord,
  type ArmedSlot,
  type LeftoverArm,
} from './leases/arms.js';
export type { Lease } from './leases/lease.js';
export { Templates, type SealLease } from './templates/templates.js';
export { MAX_CHUNK_BYTES } from './api/read-pages.js';
