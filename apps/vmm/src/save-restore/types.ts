/** What SaveVm, RestoreVm and CloneVms are asked and answer, in the vmm's own types. */
import type { Snapshot } from '../model/snapshot.js';
import type { VmInfo } from '../model/types.js';

/** SaveVm. */
export interface SaveRequest {
  /** The VM. */
  readonly name: string;
  /** The snapshot's name (unique among snapshots). */
  readonly snapshot: string;
  /** Copy the written pages into new regions instead of sealing the VM's regions in place. */
  readonly full: boolean;
  /** Destroy the VM after the save instead of resuming it. */
  readonly stop: boolean;
  readonly template: boolean;
  readonly jobId: string;
}

/** What a save made and what it cost. */
export interface SaveResult {
  readonly snapshot: Snapshot;
  /** vCPU stop to vCPU resume, in µs; 0 when the guest stays stopped (paused before, or `stop`). */
  readonly pauseUs: number;
  /** Bytes written: the device state plus the pages copied (a full save). */
  readonly bytes: number;
  /** The VM afterwards; null when `stop` destroyed it. */
  readonly vm: VmInfo | null;
}

/** RestoreVm. */
export interface RestoreRequest {
  /** The snapshot, by name or id. */
  readonly snapshot: string;
  /** The VM's name; '' for the name it was saved with. */
  readonly name: string;
  /** Leave it paused at the snapshot point. */
  readonly paused: boolean;
  readonly jobId: string;
}

/** CloneVms. */
export interface CloneRequest {
  readonly snapshot: string;
  /** 1 to {@link MAX_CLONES}. */
  readonly count: number;
  /** Names are `<prefix>-<k>`; '' for the snapshot's name. */
  readonly namePrefix: string;
  /** The first k; 0 for 1. */
  readonly firstIndex: number;
  readonly paused: boolean;
  readonly jobId: string;
}

/** One VM started from a snapshot. */
export interface StartedVm {
  readonly vm: VmInfo;
  /** Epoch milliseconds at which its guest ran (or its state was loaded, when paused). */
  readonly runningAtMs: number;
}

/** Most clones one CloneVms makes. */
export const MAX_CLONES = 1000;
