/**
 * A vmm instance: hosts VMs and serves the vmm-to-vmm migration stream.
 *
 * @packageDocumentation
 */
export { startVmm, type Vmm } from './vmm.js';
export { vmmOptions, VMM_DEFAULT_PORT, type VmmConfig } from './config.js';
export { STREAM_VERSIONS } from './api/vmm-service.js';
