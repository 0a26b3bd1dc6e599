/** The QEMU-virt-compatible machine: board wiring, synchronous runner, device-state model. */
export { createMachine, type Machine, type MachineOptions } from './machine.js';
export { runElfSync, runUntilStopped, type SyncRunResult } from './run-sync.js';
export { MACHINE_STATE_VERSION, type MachineState } from './state.js';
export { DEFAULT_RAM_SIZE, VirtMap } from './virt-map.js';
