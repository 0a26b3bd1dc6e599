import type { Logger } from '@handoff/service';
import type { Catalog } from '../catalog/catalog.js';
import type { RegionRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { assertLeaseIs } from '../leases/lease-rules.js';
import { REGION_FILE_MODE, SEALED_FILE_MODE, setFileMode, syncFileData } from '../regions/files.js';
import { validateHolder } from '../regions/naming.js';
import type { Region, RegionRef } from '../regions/region.js';
import type { RegionStore } from '../regions/region-store.js';
import { NO_ARMS, type LeaseArmResolver } from '../leases/lease-manager.js';
import { findRegion } from '../regions/resolve.js';
import { cloneChainOf, type ChainRegion } from '../snapshots/chain.js';

/** The lease a sealing caller presents; undefined for an unleased region. */
export interface SealLease {
  readonly holder: string;
  readonly epoch: number;
}

/**
 * Templates: sealing a region into an immutable template, and the clones
 * that map it copy-on-write. A MAP_PRIVATE mapping still sees later writes
 * to pages it has not copied, so a sealed file must never change again: it
 * is made read-only (0444), its lease released, and it never takes a writer
 * lease again.
 */
export class Templates {
  constructor(
    private readonly catalog: Catalog,
    private readonly regions: RegionStore,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
    /** Resolves lease arms before a seal reads (and releases) the lease. */
    private readonly arms: LeaseArmResolver = NO_ARMS,
  ) {}

  /**
   * Seals a region. A leased region needs its current lease (holder, epoch);
   * an unleased one needs no lease (`lease` undefined). The file's data is
   * flushed first, then — in one catalog transaction that re-checks the lease —
   * the file is made read-only and the row becomes 'sealed' with its lease
   * released. If the commit fails, the file mode is restored.
   */
  async seal(ref: RegionRef, lease: SealLease | undefined): Promise<Region> {
    if (lease !== undefined) validateHolder(lease.holder);
    this.arms.resolveArmOf(ref);
    const first = findRegion(this.catalog, ref);
    this.assertSealable(first, lease);
    // Flushing can take long for a large persistent file: do it off the event
    // loop, then re-check everything inside the transaction.
    if (first.kind === 'persistent') {
      try {
        await syncFileData(first.path);
      } catch (err) {
        throw MemstoreError.from(err, `flushing region "${first.name}" before sealing`);
      }
    }
    const sealed = this.catalog.transaction(() => this.sealWithin(first.id, lease));
    this.logger.info({ region: sealed.id, name: sealed.name }, 'region sealed as a template');
    return this.regions.get({ id: sealed.id });
  }

  /**
   * The inside of {@link seal}, for a caller that seals as part of its own catalog transaction
   * (CreateSnapshot): re-checks the region (state, lost, lease), makes its file read-only and
   * marks the row sealed with its lease released. Call it inside `catalog.transaction`, after
   * resolving the region's lease arm and flushing a persistent file. If this throws, the file
   * mode is already restored; if the caller's transaction fails after this returned, the caller
   * must restore it ({@link unsealFileMode}), as the rollback leaves the row active.
   */
  sealWithin(id: string, lease: SealLease | undefined): RegionRow {
    const row = findRegion(this.catalog, { id });
    this.assertSealable(row, lease);
    try {
      setFileMode(row.path, SEALED_FILE_MODE);
    } catch (err) {
      throw MemstoreError.from(err, `making the file of region "${row.name}" read-only`);
    }
    failpoint('seal-after-chmod');
    try {
      const updated = this.catalog.sealRegion(
        row.id,
        lease?.holder ?? null,
        lease?.epoch ?? row.leaseEpoch,
        this.now(),
      );
      if (updated === undefined) throw new Error(`internal: sealing ${row.id} matched no row`);
      return updated;
    } catch (err) {
      unsealFileMode(row.path);
      throw err;
    }
  }

  /** Records that `holder` maps the sealed template (idempotent). REGION_NOT_SEALED, REGION_LOST. */
  attachClone(ref: RegionRef, holder: string): Region {
    return this.attachCloneChain(ref, holder).template;
  }

  /**
   * {@link attachClone}, answering also what the clone maps: the template's chain bottom to top
   * (snapshots/chain.ts; one element for a template that is no layer's). The chain is checked
   * before the clone is recorded: a lost region anywhere in it refuses the attach (REGION_LOST).
   * Attaching pins the template; the layers below stay because a parent cannot be deleted while
   * a layer names it.
   */
  attachCloneChain(ref: RegionRef, holder: string): { template: Region; chain: ChainRegion[] } {
    validateHolder(holder);
    const { row, chain } = this.catalog.transaction(() => {
      const r = findRegion(this.catalog, ref);
      if (r.state !== 'sealed') {
        throw new MemstoreError(
          'REGION_NOT_SEALED',
          `region "${r.name}" is not a template; seal it first (SealTemplate), clones only map sealed templates`,
        );
      }
      if (r.lostAt !== null) {
        throw new MemstoreError(
          'REGION_LOST',
          `template "${r.name}" has lost its file ${r.path}; delete it and create the template again`,
        );
      }
      const layers = cloneChainOf(this.catalog, r);
      if (this.catalog.attachClone(r.id, holder, this.now())) {
        this.logger.info(
          { region: r.id, name: r.name, holder, layers: layers.length },
          'clone attached',
        );
      }
      return { row: r, chain: layers };
    });
    return { template: this.regions.get({ id: row.id }), chain };
  }

  /** Forgets that `holder` maps the template. Idempotent: false if it was not attached. */
  detachClone(ref: RegionRef, holder: string): boolean {
    validateHolder(holder);
    const row = findRegion(this.catalog, ref);
    const detached = this.catalog.detachClone(row.id, holder);
    if (detached) this.logger.info({ region: row.id, name: row.name, holder }, 'clone detached');
    return detached;
  }

  /**
   * Throws unless the region may be sealed with `lease`: REGION_SEALED, REGION_LOST, the lease
   * errors (LEASE_STALE_EPOCH, LEASE_NOT_HELD, LEASE_WRONG_HOLDER), LEASE_HELD.
   */
  assertSealable(row: RegionRow, lease: SealLease | undefined): void {
    if (row.state === 'sealed') {
      throw new MemstoreError(
        'REGION_SEALED',
        `region "${row.name}" is already a sealed template; nothing to do`,
      );
    }
    if (row.lostAt !== null) {
      throw new MemstoreError(
        'REGION_LOST',
        `region "${row.name}" has lost its file ${row.path}; it cannot become a template`,
      );
    }
    if (lease !== undefined) {
      assertLeaseIs(row, lease.holder, lease.epoch, 'seal');
    } else if (row.leaseHolder !== null) {
      throw new MemstoreError(
        'LEASE_HELD',
        `region "${row.name}" is leased by "${row.leaseHolder}" at epoch ${row.leaseEpoch}; ` +
          'seal it presenting that lease (holder and epoch), or release the lease first',
      );
    }
  }
}

/** Gives a file whose seal was rolled back its writable mode again (best effort: start-up fixes it too). */
export function unsealFileMode(path: string): void {
  try {
    setFileMode(path, REGION_FILE_MODE);
  } catch {
    /* start-up reconciliation forces the mode to the row's state */
  }
}
