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
