import type { Logger } from '@handoff/service';
import type { Catalog, CommitDurability } from '../catalog/catalog.js';
import type { RegionRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { failpoint } from '../failpoints.js';
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
 *
 * Durability of a lease change follows the region's own: a VOLATILE region
 * on tmpfs cannot outlive the OS, so its lease changes commit as
 * 'process-crash' (no fsync: they survive kill -9 of memstore, and after an
 * OS crash the region comes back LOST, never leasable again); PERSISTENT
 * regions, and volatile ones on a directory that is not tmpfs, commit as
 * 'power-loss' (fsync). See the README's "Catalog" section.
 */
export class LeaseManager {
  constructor(
    private readonly catalog: Catalog,
    private readonly logger: Logger,
    private readonly opts: {
      /** True when the volatile directory is a tmpfs (its files die with the OS). */
      readonly volatileOnTmpfs: boolean;
    },
    private readonly now: () => number = Date.now,
  ) {}

  /** What a lease change on this region must survive (see the class comment). */
  durabilityOf(row: Pick<RegionRow, 'kind'>): CommitDurability {
    return row.kind === 'volatile' && this.opts.volatileOnTmpfs ? 'process-crash' : 'power-loss';
  }

  /** Grants the lease of an unleased, active region to `holder` at the next epoch. */
  acquire(ref: RegionRef, holder: string): Lease {
    validateHolder(holder);
    // Everything from this read to the commit is synchronous on the one
    // connection that may write the catalog, so the row read here is the
    // row the transaction sees; it also tells the durability (kind).
    const row = findRegion(this.catalog, ref);
    const lease = this.catalog.transaction(() => {
      assertLeasable(row, 'lease');
      const updated = this.catalog.acquireLease(row.id, holder, this.now());
      if (updated === undefined) {
        throw new MemstoreError(
          'LEASE_HELD',
          `region "${row.name}" is already leased: ${describeLease(row)}. ` +
            'Wait for it to be released, or move it with TransferLease presenting the current holder and epoch',
        );
      }
      const granted = leaseOf(updated)!;
      this.logger.info(
        { region: row.id, name: row.name, holder, epoch: granted.epoch },
        'lease granted',
      );
      return granted;
    }, this.durabilityOf(row));
    failpoint('lease-after-commit');
    return lease;
  }

  /**
   * Moves the lease from (fromHolder, expectedEpoch) to `toHolder` at epoch + 1.
   * Throws LEASE_STALE_EPOCH / LEASE_NOT_HELD / LEASE_WRONG_HOLDER when the
   * presented lease is not the current one.
   */
  transfer(ref: RegionRef, fromHolder: string, expectedEpoch: number, toHolder: string): Lease {
    validateHolder(fromHolder, 'from_holder');
    validateHolder(toHolder, 'to_holder');
    const row = findRegion(this.catalog, ref); // see acquire()
    const lease = this.catalog.transaction(() => {
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
      const moved = leaseOf(updated)!;
      this.logger.info(
        { region: row.id, name: row.name, from: fromHolder, to: toHolder, epoch: moved.epoch },
        'lease transferred',
      );
      return moved;
    }, this.durabilityOf(row));
    failpoint('lease-after-commit');
    return lease;
  }

  /** Gives the lease up; the epoch is kept so the next grant is epoch + 1. */
  release(ref: RegionRef, holder: string, epoch: number): void {
    validateHolder(holder);
    const row = findRegion(this.catalog, ref); // see acquire()
    this.catalog.transaction(() => {
      if (!this.catalog.releaseLease(row.id, holder, epoch)) {
        assertLeaseIs(row, holder, epoch, 'release the lease of');
        throw new Error(`internal: lease release of ${row.id} matched no row`);
      }
      this.logger.info({ region: row.id, name: row.name, holder, epoch }, 'lease released');
    }, this.durabilityOf(row));
    failpoint('lease-after-commit');
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
