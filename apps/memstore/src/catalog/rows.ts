/** Region kinds as the catalog stores them. */
export type RegionKind = 'volatile' | 'persistent';

/** Lifecycle of a catalog row ('creating' rows are never shown to clients). */
export type RowState = 'creating' | 'active' | 'sealed';

/** One row of the `regions` table, in JavaScript form. Times are ms since the Unix epoch. */
export interface RegionRow {
  readonly id: string;
  readonly name: string;
  readonly kind: RegionKind;
  readonly state: RowState;
  /** Bytes; a multiple of 4096. */
  readonly size: number;
  readonly path: string;
  readonly identity: string;
  readonly createdAt: number;
  readonly parentId: string | null;
  readonly leaseHolder: string | null;
  /** The last epoch granted (0 = never leased); kept when the lease is released. */
  readonly leaseEpoch: number;
  readonly leaseGrantedAt: number | null;
  readonly sealedAt: number | null;
  readonly lostAt: number | null;
  /** The last lease memstore fenced, until the region is leased again; null otherwise. */
  readonly fenced: FencedLeaseRow | null;
}

/** Why memstore fenced a lease: its holder's process is gone, or an operator forced it. */
export type FenceReason = 'holder-gone' | 'operator';

/** A lease memstore took from its holder (holder cleared, epoch + 1). */
export interface FencedLeaseRow {
  readonly holder: string;
  /** The region's epoch after the fence. */
  readonly epoch: number;
  readonly at: number;
  readonly reason: FenceReason;
}

/**
 * The process behind a vmm id's lease holders, as its last session recorded it (one row of
 * `holder_processes`).
 */
export interface HolderProcessRow {
  readonly vmmId: string;
  /** 0: in a pid namespace memstore cannot see (judged by its connection instead). */
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks after boot); 0 when pid is 0. */
  readonly startTime: number;
  /** The host's boot id when the session opened: another boot means the process is gone. */
  readonly bootId: string;
  /** Random per vmm process (from its hello). */
  readonly instance: string;
  readonly openedAt: number;
  /** When memstore found the process gone (and fenced its leases); null while not. */
  readonly goneAt: number | null;
}

/** What a caller supplies to insert a region in state 'creating'. */
export interface NewRegionRow {
  readonly id: string;
  readonly name: string;
  readonly kind: RegionKind;
  readonly size: number;
  readonly path: string;
  readonly identity: string;
  readonly createdAt: number;
  readonly parentId: string | null;
}

/** A clone attached to a template. */
export interface CloneRow {
  readonly templateId: string;
  readonly holder: string;
  readonly attachedAt: number;
}

/** How a snapshot holds its RAM (see the contract's SnapshotKind). */
export type SnapshotKind = 'bypass' | 'full' | 'imported';

/** One row of `snapshots`. */
export interface SnapshotRow {
  readonly id: string;
  readonly name: string;
  readonly kind: SnapshotKind;
  readonly template: boolean;
  readonly createdAt: number;
  readonly vmName: string;
  /** '' when unknown (an imported snapshot). */
  readonly vmmId: string;
  /** The VM's spec, encoded (opaque to memstore). */
  readonly vmSpec: Uint8Array;
  /** Absolute path of the device-state file. */
  readonly statePath: string;
  /** Bytes of device state (the file's payload). */
  readonly stateBytes: number;
  /** CRC-32C of the device state. */
  readonly stateCrc32c: number;
  /** The snapshot this one layers on; null for a standalone one. */
  readonly parentId: string | null;
}

/** One row of `snapshot_blocks`. */
export interface SnapshotBlockRow {
  readonly snapshotId: string;
  /** Index of the block in the VM's block order. */
  readonly position: number;
  readonly blockId: string;
  readonly guestBase: number;
  readonly size: number;
  readonly regionId: string;
  /** The region's identity when the snapshot was made. */
  readonly identity: string;
  /** The snapshot deletes the region with itself. */
  readonly owned: boolean;
  /**
   * For a block of a layer: the pages its region holds (1 bit per page, LSB first); null for a
   * standalone snapshot's block (its region holds the whole block).
   */
  readonly layerPages: Uint8Array | null;
}
