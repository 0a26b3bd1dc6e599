/** The VM host: VMs with worker-thread vCPUs, their lifecycle, consoles and dirty logs. */
export { VMM_ERROR_CODES, VmmError, type VmmErrorCode } from '../model/vmm-error.js';
export { VmHost, checkImageFits, type VmHostOptions } from './host.js';
export {
  BLOCK_ID_PATTERN,
  MAIN_BLOCK_ID,
  MAX_BLOCK_SIZE,
  VM_NAME_PATTERN,
  deviceWindows,
  hostArgsOf,
  normalizeSpec,
  validateBlocks,
  validateSpec,
  type DeviceWindow,
  type SpecLimits,
} from './spec.js';
export type {
  RamBackendKind,
  RamBlockInfo,
  RamBlockSpec,
  RegionRef,
  VmEvent,
  VmEventKind,
  VmInfo,
  VmSpec,
  VmState,
} from '../model/types.js';
export { CONSOLE_BACKLOG_BYTES, Vm, type ConsoleSink } from './vm.js';
export { vcpuWorkerUrl } from '../vcpu/worker-url.js';
