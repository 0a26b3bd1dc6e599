/** Save, restore and clone of VMs as memstore snapshots (see README.md). */
export { SaveRestore } from './save-restore.js';
export {
  prepareSnapshot,
  startFromSnapshot,
  withIdentity,
  type PreparedSnapshot,
} from './restore.js';
export {
  MAX_CLONES,
  type CloneRequest,
  type RestoreRequest,
  type SaveRequest,
  type SaveResult,
  type StartedVm,
} from './types.js';
