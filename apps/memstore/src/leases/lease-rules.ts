import type { RegionRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { describeLease } from './lease.js';

/**
 * The fencing rules shared by every call that presents a lease
 * (transfer, release, seal). Pure functions of a catalog row.
 */

/**
 * Throws unless the row's lease is exactly (holder, epoch):
 * - LEASE_STALE_EPOCH when the epoch moved on (someone acquired or took the
 *   lease since the caller saw it: a VM that lost its lease must stay paused);
 * - LEASE_NOT_HELD when nobody holds the lease at that epoch any more;
 * - LEASE_WRONG_HOLDER when the epoch matches but another holder owns it.
 */
export function assertLeaseIs(row: RegionRow, holder: string, epoch: number, action: string): void {
  if (row.leaseEpoch !== epoch) {
    throw new MemstoreError(
      'LEASE_STALE_EPOCH',
      `cannot ${action} region "${row.name}": you presented "${holder}" at epoch ${epoch}, ` +
        `but the lease is now ${describeLease(row)}. The lease moved on; a VM that lost it must not resume. ` +
        'Re-read the region (GetRegion) before acting again',
    );
  }
  if (row.leaseHolder === null) {
    throw new MemstoreError(
      'LEASE_NOT_HELD',
      `cannot ${action} region "${row.name}": its lease at epoch ${epoch} was released; ` +
        'acquire it again with AcquireLease',
    );
  }
  if (row.leaseHolder !== holder) {
    throw new MemstoreError(
      'LEASE_WRONG_HOLDER',
      `cannot ${action} region "${row.name}": the lease at epoch ${epoch} is held by "${row.leaseHolder}", ` +
        `not "${holder}"; only the holder may ${action} it`,
    );
  }
}

/** Throws unless a lease may be granted or moved on this region: REGION_SEALED, REGION_LOST. */
export function assertLeasable(row: RegionRow, action: string): void {
  if (row.state === 'sealed') {
    throw new MemstoreError(
      'REGION_SEALED',
      `cannot ${action} region "${row.name}": it is a sealed template and never takes a writer lease; ` +
        'map it read-only as a clone (AttachClone) instead',
    );
  }
  if (row.lostAt !== null) {
    throw new MemstoreError(
      'REGION_LOST',
      `cannot ${action} region "${row.name}": its file ${row.path} is missing (lost at start-up); ` +
        'delete the region and create it again',
    );
  }
}
