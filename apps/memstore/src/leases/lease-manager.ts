import type { Logger } from '@handoff/service';
import type { Catalog } from '../catalog/catalog.js';
import { MemstoreError } from '../errors.js';
import { validateHolder } from '../regions/naming.js';
import type { RegionRef } from '../regions/region.js';
import { findRegion } from '../regions/resolve.js';
import { describeLease, leaseOf, type Lease } from './lease.js';
import { assertLeasable, assertLeaseIs } from './lease-rules.js';

/** Result of ValidateLease: never throws for a mismatch, reports the current lease instead. */
export interface LeaseValidation {
  readonly valid: boolean;
  readonly current: Lease | undefined;
}

/**
 * Writer leases with fencing epochs. Every change is one catalog
 * transaction whose write is a conditional UPDATE (compare-and-set on holder
 * and epoch), so of any number of racing callers presenting the same
 * (holder, epoch) exactly one wins; the others get LEASE_STALE_EPOCH. Epochs
 * are stored with the region and only ever incremented, so they never go
 * back — not after a release, not across restarts.
 */
export class LeaseManager {
  constructor(
    private readonly catalog: Catalog,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** Grants the lease of an unleased, active region to `holder` at the next epoch. */
  acquire(ref: RegionRef, holder: string): Lease {
    validateHolder(holder);
    return this.catalog.transaction(() => {
      const row = findRegion(this.catalog, ref);
      assertLeasable(row, 'lease');
      const updated = this.catalog.acquireLease(row.id, holder, this.now());
      if (updated === undefined) {
        throw new MemstoreError(
          'LEASE_HELD',
          `region "${row.name}" is already leased: ${describeLease(row)}. ` +
            'Wait for it to be released, or move it with TransferLease presenting the current holder and epoch',
        );
      }
      const lease = leaseOf(updated)!;
      this.logger.info(
        { region: row.id, name: row.name, holder, epoch: lease.epoch },
        'lease granted',
      );
      return lease;
    });
  }

  /**
   * Moves the lease from (fromHolder, expectedEpoch) to `toHolder` at epoch + 1.
   * Throws LEASE_STALE_EPOCH / LEASE_NOT_HELD / LEASE_WRONG_HOLDER when the
   * presented lease is not the current one.
   */
  transfer(ref: RegionRef, fromHolder: string, expectedEpoch: number, toHolder: string): Lease {
    validateHolder(fromHolder, 'from_holder');
    validateHolder(toHolder, 'to_holder');
    return this.catalog.transaction(() => {
      const row = findRegion(this.catalog, ref);
      assertLeasable(row, 'transfer the lease of');
      const updated = this.catalog.transferLease(
        row.id,
        fromHolder,
        expectedEpoch,
        toHolder,
        this.now(),
      );
      if (updated === undefined) {
        assertLeaseIs(row, fromHolder, expectedEpoch, 'transfer the lease of');
        throw new Error(`internal: lease transfer of ${row.id} matched no row`);
      }
      const lease = leaseOf(updated)!;
      this.logger.info(
        { region: row.id, name: row.name, from: fromHolder, to: toHolder, epoch: lease.epoch },
        'lease transferred',
      );
      return lease;
    });
  }

  /** Gives the lease up; the epoch is kept so the next grant is epoch + 1. */
  release(ref: RegionRef, holder: string, epoch: number): void {
    validateHolder(holder);
    this.catalog.transaction(() => {
      const row = findRegion(this.catalog, ref);
      if (!this.catalog.releaseLease(row.id, holder, epoch)) {
        assertLeaseIs(row, holder, epoch, 'release the lease of');
        throw new Error(`internal: lease release of ${row.id} matched no row`);
      }
      this.logger.info({ region: row.id, name: row.name, holder, epoch }, 'lease released');
    });
  }

  /** True when `holder` holds the region's lease at exactly `epoch`. */
  validate(ref: RegionRef, holder: string, epoch: number): LeaseValidation {
    const row = findRegion(this.catalog, ref);
    const current = leaseOf(row);
    const valid =
      current !== undefined &&
      row.lostAt === null &&
      current.holder === holder &&
      current.epoch === epoch;
    return { valid, current };
  }
}
