/**
 * A vmm instance: hosts VMs and serves the vmm-to-vmm migration stream.
 *
 * @packageDocumentation
 */
export { startVmm, maxVmMemoryOf, type Vmm } from './vmm.js';
export { vmmOptions, VMM_DEFAULT_PORT, type VmmConfig } from './config.js';
export { STREAM_VERSIONS } from './api/vmm-service.js';
export {
  MIGRATION_ERROR_CODES,
  MigrationError,
  OUTGOING_PHASES,
  STREAM_FORMAT,
  type OutgoingPhase,
} from './migration/index.js';
/** The prefix of the switchover slot files an instance creates (tests look for leftovers). */
export { slotPrefixOf } from './switchover/slot.js';
/** The vmm's client of memstore's lease channel, and how it words a failed memstore call. */
export {
  LeaseChannelClient,
  PROCESS_INSTANCE,
  type LeaseCallOptions,
  type LeaseCalls,
  type LeaseChannelClientOptions,
} from './leases/lease-channel.js';
export { memstoreCall } from './leases/calls.js';
export type { RamContext } from './ram/index.js';
export {
  VmHost,
  Vm,
  VmmError,
  VMM_ERROR_CODES,
  normalizeSpec,
  validateSpec,
  vcpuWorkerUrl,
  type ConsoleSink,
  type VmEvent,
  type VmHostOptions,
  type VmInfo,
  type VmSpec,
  type VmState,
  type RamBlockSpec,
} from './vm/index.js';
export {
  BUILT_IN_GUESTS,
  BUILT_IN_GUESTS_DIR,
  GuestCatalog,
  builtInGuestPath,
  guestFromBytes,
  MAX_SENT_GUEST_IMAGE,
  type GuestCatalogOptions,
  type GuestImage,
} from './guests/catalog.js';
export { checkAbConsistency, type AbCheckOptions, type AbCheckResult } from './guests/ab-check.js';
export * from './machine/index.js';
export * from './snapshot/index.js';
export { parseElf, loadElf, LoaderError, type ElfImage } from './loader/index.js';
export { asm, li as asmLi } from './cpu/test-asm.js';
