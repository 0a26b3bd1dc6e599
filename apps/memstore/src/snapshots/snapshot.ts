import type { SnapshotKind } from '../catalog/rows.js';
import type { RegionRef } from '../regions/region.js';

export type { SnapshotKind } from '../catalog/rows.js';

/** How callers address a snapshot. */
export type SnapshotRef = { readonly id: string } | { readonly name: string };

/** `"name"` / `with id "…"` for messages. */
export function describeSnapshotRef(ref: SnapshotRef): string {
  return 'id' in ref ? `with id ${JSON.stringify(ref.id)}` : `"${ref.name}"`;
}

/** One RAM block of a snapshot, as reported. */
export interface SnapshotBlock {
  readonly id: string;
  readonly guestBase: number;
  readonly size: number;
  readonly regionId: string;
  readonly regionName: string;
  /** The region's identity when the snapshot was made. */
  readonly identity: string;
  readonly owned: boolean;
  /** Bytes of the region backed by memory or disk (0 when its file is lost). */
  readonly storedBytes: number;
  /**
   * For a block of a layer: the pages its region holds (1 bit per page, LSB first; every other
   * page is the parent's block's). Undefined for a standalone snapshot's block.
   */
  readonly layerPages: Uint8Array | undefined;
  /** Pages set in `layerPages` (0 for a standalone snapshot's block). */
  readonly layerPageCount: number;
}

/** A snapshot as memstore reports it. */
export interface Snapshot {
  readonly id: string;
  readonly name: string;
  readonly kind: SnapshotKind;
  readonly template: boolean;
  readonly createdAt: Date;
  readonly vmName: string;
  readonly vmmId: string;
  readonly vmSpec: Uint8Array;
  readonly blocks: readonly SnapshotBlock[];
  readonly deviceStateBytes: number;
  readonly deviceStateCrc32c: number;
  /** Holders attached as clones to any of its regions (the VMs that run from it). */
  readonly clones: readonly string[];
  /** Name of the snapshot it layers on; undefined for a standalone one. */
  readonly parent: string | undefined;
  /** Device-state bytes plus the stored bytes of the regions it owns. */
  readonly storedBytes: number;
  /** Snapshots below it: 0 for a standalone one, 1 for a layer on a standalone one, ... */
  readonly depth: number;
}

/** Where one block of a new snapshot comes from. */
export interface SnapshotBlockSource {
  readonly id: string;
  readonly guestBase: number;
  readonly size: number;
  readonly region: RegionRef;
  /** The epoch the saving holder holds on the region; 0 when it is not leased. */
  readonly epoch: number;
  /** The snapshot takes ownership of the region (deletes it with itself). */
  readonly owned: boolean;
  /**
   * Required for every block of a layer (`NewSnapshot.parent` set), empty otherwise: the pages
   * `region` holds (1 bit per page, LSB first).
   */
  readonly layerPages: Uint8Array;
}

/** What CreateSnapshot asks for. */
export interface NewSnapshot {
  readonly name: string;
  readonly template: boolean;
  /** 'bypass' or 'full' ('imported' is ImportSnapshot's). */
  readonly kind: SnapshotKind;
  readonly vmName: string;
  readonly vmSpec: Uint8Array;
  readonly deviceState: Uint8Array;
  readonly blocks: readonly SnapshotBlockSource[];
  /** The saving VM's lease holder `<vmm-id>/<vm>`. */
  readonly holder: string;
  /** Name or id of the snapshot it layers on; '' for none. */
  readonly parent: string;
}
