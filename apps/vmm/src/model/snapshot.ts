/**
 * Snapshots as the vmm sees them: memstore owns them (a VM's spec, its device state, and one
 * sealed region per RAM block); the vmm makes them (SaveVm) and starts VMs from them (RestoreVm,
 * CloneVms). The memstore edge (`ram/snapshots.ts`) converts them from the wire, the gRPC edge
 * (`api/convert.ts`) back.
 */

/** How a snapshot holds its RAM: the VM's regions sealed in place, copies, or an import. */
export type SnapshotKind = 'bypass' | 'full' | 'imported';

/** One RAM block of a snapshot: the sealed region holding it at the save point. */
export interface SnapshotBlock {
  readonly id: string;
  readonly guestBase: number;
  readonly size: number;
  readonly regionId: string;
  readonly regionName: string;
  /** The region's identity when the snapshot was made (a restore checks it). */
  readonly identity: string;
  /** The snapshot owns the region (deletes it with itself); false: it only pins it. */
  readonly owned: boolean;
  /** Bytes of the region backed by memory or disk. */
  readonly storedBytes: number;
  /**
   * A layer's block: the pages its region holds over the parent's (memstore's bitmap, one bit
   * per page, least significant bit first); empty for a standalone snapshot.
   */
  readonly layerPages: Uint8Array;
  /** Pages set in {@link SnapshotBlock.layerPages} (0 for a standalone snapshot). */
  readonly layerPageCount: number;
}

/** A snapshot as memstore reports it. */
export interface Snapshot {
  readonly id: string;
  readonly name: string;
  readonly kind: SnapshotKind;
  readonly template: boolean;
  readonly createdAt: Date | null;
  /** The VM it was saved from, and the vmm instance that ran it. */
  readonly vmName: string;
  readonly vmmId: string;
  /** The saved VM's spec in its wire form (`wire/spec.ts` decodes it). */
  readonly vmSpec: Uint8Array;
  readonly blocks: readonly SnapshotBlock[];
  readonly deviceStateBytes: number;
  readonly deviceStateCrc32c: number;
  /** Holders of the VMs that run from it. */
  readonly clones: readonly string[];
  /** The snapshot it layers on (chained templates), by name, or ''. */
  readonly parent: string;
  readonly storedBytes: number;
  /** Layers below it: 0 for a standalone snapshot. */
  readonly depth: number;
}

/** Where one block of a new snapshot comes from (CreateSnapshot). */
export interface SnapshotBlockSource {
  readonly id: string;
  readonly guestBase: number;
  readonly size: number;
  /** The region holding the block's memory at the save point, by id. */
  readonly regionId: string;
  /** The lease epoch the saving VM holds on it; 0 when it is not leased. */
  readonly epoch: number;
  /** The snapshot takes the region over (deletes it with itself). */
  readonly owned: boolean;
  /** A layer's block: the pages the region holds (memstore's bitmap); absent otherwise. */
  readonly layerPages?: Uint8Array;
}

/** What CreateSnapshot is asked to record. */
export interface NewSnapshot {
  readonly name: string;
  readonly template: boolean;
  readonly kind: 'bypass' | 'full';
  readonly vmName: string;
  readonly vmSpec: Uint8Array;
  readonly deviceState: Uint8Array;
  readonly blocks: readonly SnapshotBlockSource[];
  /** A layer: the snapshot it layers on (name or id); absent for a standalone snapshot. */
  readonly parent?: string;
}
