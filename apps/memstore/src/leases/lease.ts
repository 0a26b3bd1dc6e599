import type { FenceReason, RegionRow } from '../catalog/rows.js';

export type { FenceReason } from '../catalog/rows.js';

/** A writer lease: who may map the region writable, and the fencing epoch of that grant. */
export interface Lease {
  /** Opaque holder identity, e.g. "vmm-a/vm1". */
  readonly holder: string;
  /** Grows by one on every acquire or transfer; never goes back, not even after a release. */
  readonly epoch: number;
  readonly grantedAt: Date;
}

/** The current lease of a catalog row, if any. */
export function leaseOf(row: RegionRow): Lease | undefined {
  if (row.leaseHolder === null) return undefined;
  return {
    holder: row.leaseHolder,
    epoch: row.leaseEpoch,
    grantedAt: new Date(row.leaseGrantedAt ?? row.createdAt),
  };
}

/** "held by vmm-a/vm1 at epoch 3" / "not leased (last epoch 3)" for messages. */
export function describeLease(row: RegionRow): string {
  return row.leaseHolder === null
    ? `not leased (last epoch ${row.leaseEpoch})`
    : `held by "${row.leaseHolder}" at epoch ${row.leaseEpoch}`;
}

/** A lease memstore took from its holder: holder cleared, epoch + 1, region and memory kept. */
export interface FencedLease {
  /** The holder that lost it. */
  readonly holder: string;
  /** The region's epoch after the fence (the holder's + 1). */
  readonly epoch: number;
  readonly at: Date;
  readonly reason: FenceReason;
}

/** The last fence recorded on a catalog row (until the region is leased again), if any. */
export function fencedOf(row: RegionRow): FencedLease | undefined {
  const f = row.fenced;
  if (f === null) return undefined;
  return { holder: f.holder, epoch: f.epoch, at: new Date(f.at), reason: f.reason };
}
