import type { RegionKind, RegionRow } from '../catalog/rows.js';
import { fencedOf, leaseOf, type FencedLease, type Lease } from '../leases/lease.js';
import type { HolderJudge, HolderStatus } from '../leases/liveness.js';
import type { RegionFileStat } from './files.js';

export type { RegionKind } from '../catalog/rows.js';

/** States clients see: 'lost' means the catalog knows the region but its file is gone. */
export type RegionState = 'active' | 'sealed' | 'lost';

/** How callers address a region. */
export type RegionRef = { readonly id: string } | { readonly name: string };

/** A region as the memstore reports it. */
export interface Region {
  readonly id: string;
  readonly name: string;
  readonly kind: RegionKind;
  readonly state: RegionState;
  /** Logical size in bytes (a multiple of 4096). */
  readonly size: number;
  /** Bytes backed by memory or disk (0 when the file is missing). */
  readonly allocatedBytes: number;
  readonly path: string;
  readonly lease: Lease | undefined;
  /** Lease holder (if any) and clone holders: who currently maps the region. */
  readonly mappedBy: readonly string[];
  readonly cloneCount: number;
  readonly createdAt: Date;
  readonly parentId: string | undefined;
  /** Random per file creation: a reference to the region can check it still names the same file. */
  readonly identity: string;
  /** How the lease holder's process is doing; undefined when not leased. */
  readonly holder: HolderStatus | undefined;
  /** The last lease memstore fenced, until the region is leased again. */
  readonly fenced: FencedLease | undefined;
}

/** `name "x"` / `id 1234…` for messages. */
export function describeRef(ref: RegionRef): string {
  return 'id' in ref ? `with id ${JSON.stringify(ref.id)}` : `"${ref.name}"`;
}

/** Builds the reported view of a region from its row, its clone holders and its file's stat. */
export function regionView(
  row: RegionRow,
  cloneHolders: readonly string[],
  stat: RegionFileStat | undefined,
  judge: HolderJudge,
): Region {
  const lease = leaseOf(row);
  return {
    id: row.id,
    name: row.name,
    kind: row.kind,
    state: row.lostAt !== null ? 'lost' : row.state === 'sealed' ? 'sealed' : 'active',
    size: row.size,
    allocatedBytes: stat?.allocatedBytes ?? 0,
    path: row.path,
    lease,
    mappedBy: lease === undefined ? [...cloneHolders] : [lease.holder, ...cloneHolders],
    cloneCount: cloneHolders.length,
    createdAt: new Date(row.createdAt),
    parentId: row.parentId ?? undefined,
    identity: row.identity,
    holder: lease === undefined ? undefined : judge.statusOf(lease.holder, lease.grantedAt),
    fenced: fencedOf(row),
  };
}
