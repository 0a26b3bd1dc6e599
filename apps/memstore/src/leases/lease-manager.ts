import type { Logger } from '@handoff/service';
import type { Catalog, CommitDurability } from '../catalog/catalog.js';
import type { FenceReason, RegionRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { isPageSourceHolder } from '../lazy/holder.js';
import { failpoint } from '../failpoints.js';
import { validateHolder } from '../regions/naming.js';
import type { RegionRef } from '../regions/region.js';
import { findRegion } from '../regions/resolve.js';
import {
  ARM_FLIPPED,
  LeaseArmsFile,
  type ArmedSlot,
  type ArmRecord,
  type LeftoverArm,
} from './arms.js';
import { describeLease, fencedOf, leaseOf, type FencedLease, type Lease } from './lease.js';
import type { HolderStatus } from './liveness.js';
import { assertLeasable, assertLeaseIs } from './lease-rules.js';

/** How long an arm may wait for its flip before a timer resolves (cancels) it. */
export const DEFAULT_ARM_TTL_MS = 60_000;

/** Where an armed transfer's slot is: what ArmTransfer answers. */
export interface ArmedTransfer {
  /** Absolute path of the arms file. */
  readonly armsPath: string;
  /** Byte offset of the slot's int32 word. */
  readonly slotOffset: number;
  /** The word to compare-and-set from (ARMED) and to (FLIPPED). */
  readonly armedWord: number;
  readonly flippedWord: number;
  /** The lease epoch after a flip (expected + 1). */
  readonly epoch: number;
}

/**
 * What the other owners of a region's lease state (RegionStore: get, delete, list; Templates:
 * seal) call first, so they never act on a lease an arm may have moved.
 */
export interface LeaseArmResolver {
  /** Resolves the arm of the region `ref` names, if any (commits a flip, cancels an arm). */
  resolveArmOf(ref: RegionRef): void;
  /** Commits the region's arm if it flipped; one still armed stays armed (a read decides nothing). */
  commitFlippedArmOf(ref: RegionRef): void;
  /** Commits every flipped arm (leaves arms still armed alone): for reads of many regions. */
  commitFlippedArms(): void;
}

/** A resolver for when there are no arms. */
export const NO_ARMS: LeaseArmResolver = {
  resolveArmOf: () => undefined,
  commitFlippedArmOf: () => undefined,
  commitFlippedArms: () => undefined,
};

/** A lease memstore fenced, and where. */
export interface FencedRegionLease extends FencedLease {
  readonly regionId: string;
  readonly regionName: string;
}

/** Result of ForceReleaseLease. */
export interface ForcedRelease {
  /** The lease fenced; undefined when the region was not leased (nothing changed). */
  readonly fenced: FencedRegionLease | undefined;
}

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
export class LeaseManager implements LeaseArmResolver {
  /** Armed transfers by region id (at most one per region). */
  private readonly armed = new Map<string, ArmedSlot>();
  private readonly armTtlMs: number;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly catalog: Catalog,
    private readonly logger: Logger,
    private readonly opts: {
      /** True when the volatile directory is a tmpfs (its files die with the OS). */
      readonly volatileOnTmpfs: boolean;
      /** The lease arms file; null/absent: ArmTransfer is LEASE_ARM_UNSUPPORTED. */
      readonly arms?: LeaseArmsFile | null;
      /** Arms older than this are resolved by a timer (default {@link DEFAULT_ARM_TTL_MS}). */
      readonly armTtlMs?: number;
    },
    private readonly now: () => number = Date.now,
  ) {
    this.armTtlMs = opts.armTtlMs ?? DEFAULT_ARM_TTL_MS;
    if (opts.arms) {
      this.timer = setInterval(
        () => this.resolveExpiredArms(),
        Math.max(10, Math.min(5_000, this.armTtlMs / 2)),
      );
      this.timer.unref();
    }
  }

  /** The arms file, when arms are served. */
  get armsFile(): LeaseArmsFile | undefined {
    return this.opts.arms ?? undefined;
  }

  /** Arms currently outstanding (tests, logs). */
  get armedCount(): number {
    return this.armed.size;
  }

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
    const row = this.current(ref);
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
    const row = this.current(ref); // see acquire()
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
      // Written after the answer went out: a log line costs ~0.2 ms, and a migration's guest
      // waits for this answer (the line is lost only if the process dies within that turn).
      const fields = {
        region: row.id,
        name: row.name,
        from: fromHolder,
        to: toHolder,
        epoch: moved.epoch,
      };
      setImmediate(() => this.logger.info(fields, 'lease transferred'));
      return moved;
    }, this.durabilityOf(row));
    failpoint('lease-after-commit');
    return lease;
  }

  /** Gives the lease up; the epoch is kept so the next grant is epoch + 1. */
  release(ref: RegionRef, holder: string, epoch: number): void {
    validateHolder(holder);
    const row = this.current(ref); // see acquire()
    this.catalog.transaction(() => {
      if (!this.catalog.releaseLease(row.id, holder, epoch)) {
        assertLeaseIs(row, holder, epoch, 'release the lease of');
        throw new Error(`internal: lease release of ${row.id} matched no row`);
      }
      this.logger.info({ region: row.id, name: row.name, holder, epoch }, 'lease released');
    }, this.durabilityOf(row));
    failpoint('lease-after-commit');
  }

  /**
   * Takes every lease of vmm `vmmId`'s holders (`<vmmId>/...`), whose process is gone: first
   * each arm whose source or target is one of them is settled (a flip committed: that lease
   * already moved; an arm not flipped cancelled), then each lease they still hold is fenced
   * (holder cleared, epoch + 1, region and file kept) in a transaction at the region's
   * durability. Returns the leases fenced. A region that fails is retried by the next call;
   * the first failure is thrown after the others were tried.
   */
  fenceVmm(vmmId: string, reason: FenceReason): FencedRegionLease[] {
    const prefix = `${vmmId}/`;
    let failure: unknown;
    for (const [id, slot] of [...this.armed]) {
      const { fromHolder, toHolder } = slot.record;
      if (!fromHolder.startsWith(prefix) && !toHolder.startsWith(prefix)) continue;
      try {
        this.settle(id);
      } catch (err) {
        failure ??= err;
      }
    }
    const fenced: FencedRegionLease[] = [];
    for (const row of this.catalog.leasesOfVmm(vmmId)) {
      if (this.armed.has(row.id)) continue; // its arm could not be settled: next time
      // A page source's lease (`<memstore>/lazy/<id>`) belongs to no vmm process: never fenced.
      if (isPageSourceHolder(row.leaseHolder!)) continue;
      try {
        const f = this.fenceRow(row, row.leaseHolder!, row.leaseEpoch, reason);
        if (f !== undefined) fenced.push(f);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
    return fenced;
  }

  /**
   * Forgets the clone attachments of vmm `vmmId`'s holders, whose process is gone (its private
   * mappings of the templates went with it); returns how many.
   */
  detachClonesOfVmm(vmmId: string): number {
    return this.catalog.detachClonesOfVmm(vmmId);
  }

  /**
   * ForceReleaseLease: fences the region's lease (holder cleared, epoch + 1, region kept) unless
   * `statusOf` finds its holder alive (LEASE_HOLDER_ALIVE). The region's arm is settled first,
   * so the lease judged is the one in force. An unleased region is left as it is. Returns the
   * fence, also one that judging made (a holder found gone is fenced as such).
   */
  forceRelease(
    ref: RegionRef,
    statusOf: (holder: string, grantedAt: Date) => HolderStatus,
  ): ForcedRelease {
    const row = this.current(ref);
    const lease = leaseOf(row);
    if (lease === undefined) return { fenced: undefined };
    const status = statusOf(lease.holder, lease.grantedAt);
    if (status.liveness === 'alive') {
      const pid = status.pid > 0 ? ` (pid ${status.pid})` : '';
      throw new MemstoreError(
        'LEASE_HOLDER_ALIVE',
        `region "${row.name}" is ${describeLease(row)}, and that holder's vmm process` +
          `${pid} is alive: it may still write the region. Stop or migrate that VM (destroying ` +
          'it releases the lease); memstore fences the lease by itself once the process is gone',
      );
    }
    // Judging may have found the holder gone and fenced it already (reason holder-gone).
    const now = findRegion(this.catalog, { id: row.id });
    if (now.leaseHolder !== lease.holder || now.leaseEpoch !== lease.epoch) {
      const f = fencedOf(now);
      return {
        fenced:
          f?.holder === lease.holder ? { ...f, regionId: row.id, regionName: row.name } : undefined,
      };
    }
    const fenced = this.fenceRow(now, lease.holder, lease.epoch, 'operator', status.liveness);
    if (fenced === undefined) {
      throw new Error(`internal: the lease of ${row.id} changed while it was being fenced`);
    }
    return { fenced };
  }

  /** True when `holder` holds the region's lease at exactly `epoch`. */
  validate(ref: RegionRef, holder: string, epoch: number): LeaseValidation {
    // Only a "yes" to the arm's source decides anything (it may run on): that question voids
    // the arm; anyone else's is answered from what is committed (a flip first).
    const arm = this.armed.get(findRegion(this.catalog, ref).id);
    const decides = arm !== undefined && arm.record.fromHolder === holder;
    const row = decides ? this.current(ref) : this.observed(ref);
    const current = leaseOf(row);
    const valid =
      current !== undefined &&
      row.lostAt === null &&
      current.holder === holder &&
      current.epoch === epoch;
    return { valid, current };
  }

  /**
   * Arms a transfer from (fromHolder, expectedEpoch) to `toHolder`: the same checks as
   * {@link transfer} (LEASE_STALE_EPOCH / LEASE_NOT_HELD / LEASE_WRONG_HOLDER, REGION_SEALED,
   * REGION_LOST), then a slot of the arms file records it, ARMED. Whoever then CASes the slot's
   * word ARMED → FLIPPED has moved the lease to (toHolder, expectedEpoch + 1) at that instant;
   * memstore resolves the arm before any later lease operation on the region. A region already
   * armed is resolved first. LEASE_ARM_UNSUPPORTED unless the region's lease changes commit at
   * 'process-crash' durability (volatile on tmpfs) and the arms file exists; LEASE_ARMS_FULL
   * when every slot is in use.
   */
  arm(ref: RegionRef, fromHolder: string, expectedEpoch: number, toHolder: string): ArmedTransfer {
    validateHolder(fromHolder, 'from_holder');
    validateHolder(toHolder, 'to_holder');
    const row = this.current(ref);
    assertLeasable(row, 'transfer the lease of');
    assertLeaseIs(row, fromHolder, expectedEpoch, 'transfer the lease of');
    const arms = this.opts.arms;
    if (!arms) {
      throw new MemstoreError(
        'LEASE_ARM_UNSUPPORTED',
        `cannot arm a transfer of region "${row.name}": this memstore has no lease arms file ` +
          '(it could not be created at start); use TransferLease',
      );
    }
    if (this.durabilityOf(row) !== 'process-crash') {
      throw new MemstoreError(
        'LEASE_ARM_UNSUPPORTED',
        `cannot arm a transfer of region "${row.name}": only volatile regions on tmpfs move their ` +
          'lease through the arms file (this one must be fsynced); use TransferLease',
      );
    }
    const record: ArmRecord = { regionId: row.id, fromHolder, toHolder, epoch: expectedEpoch };
    const encoded = LeaseArmsFile.encode(record);
    if (encoded === undefined) {
      throw new MemstoreError(
        'LEASE_ARM_UNSUPPORTED',
        `cannot arm a transfer of region "${row.name}": the holder names are too long for an ` +
          'arm slot; use TransferLease',
      );
    }
    const slot = arms.arm(record, encoded, this.now());
    this.armed.set(row.id, slot);
    this.logger.info(
      {
        region: row.id,
        name: row.name,
        from: fromHolder,
        to: toHolder,
        epoch: expectedEpoch + 1,
        slot: slot.slot,
      },
      'lease transfer armed',
    );
    return {
      armsPath: arms.path,
      slotOffset: slot.offset,
      armedWord: slot.armedWord,
      flippedWord: slot.flippedWord,
      epoch: expectedEpoch + 1,
    };
  }

  /**
   * Resolves the region's arm, if any (a flip is committed, an arm still armed is cancelled)
   * and returns its lease (undefined when unleased).
   */
  resolve(ref: RegionRef): Lease | undefined {
    return leaseOf(this.current(ref));
  }

  /** {@link LeaseArmResolver.resolveArmOf}. */
  resolveArmOf(ref: RegionRef): void {
    if (this.armed.size === 0) return;
    this.current(ref);
  }

  /** {@link LeaseArmResolver.commitFlippedArmOf}. */
  commitFlippedArmOf(ref: RegionRef): void {
    if (this.armed.size === 0) return;
    this.observed(ref);
  }

  /** {@link LeaseArmResolver.commitFlippedArms}. */
  commitFlippedArms(): void {
    const arms = this.opts.arms;
    if (!arms) return;
    for (const [id, slot] of this.armed) {
      if ((arms.peek(slot) & 0xff) === ARM_FLIPPED) this.settle(id);
    }
  }

  /** Resolves the arms older than the TTL (the timer runs it; tests call it). */
  resolveExpiredArms(): void {
    if (!this.catalog.isOpen) return;
    const now = this.now();
    for (const [id, slot] of [...this.armed]) {
      if (now - slot.armedAt < this.armTtlMs) continue;
      try {
        const outcome = this.settle(id);
        this.logger.info({ region: id, outcome }, 'lease arm expired and resolved');
      } catch (err) {
        this.logger.warn(
          { region: id, err },
          'resolving an expired lease arm failed; retried later',
        );
      }
    }
  }

  /**
   * Start-up: commits the transfers of slots found FLIPPED (if the catalog still shows the
   * lease at (fromHolder, epoch)), drops the others, then frees every slot. Never throws for a
   * bad record.
   */
  recoverArms(leftovers: readonly LeftoverArm[]): void {
    const arms = this.opts.arms;
    if (!arms) return;
    for (const l of leftovers) {
      if (l.outcome === 'cancelled') {
        if (l.record !== undefined) {
          this.logger.info(
            { region: l.record.regionId, slot: l.slot },
            'lease arm left armed at start: cancelled',
          );
        }
        continue;
      }
      if (l.record === undefined) continue; // warned by the file
      try {
        this.commitFlip(l.record, 'start-up');
      } catch (err) {
        this.logger.warn(
          { slot: l.slot, record: l.record, err },
          'lease arms file: could not commit a flipped arm; dropped',
        );
      }
    }
    arms.freeLeftovers(leftovers);
  }

  /** Fences one lease at exactly (holder, epoch); undefined when it is no longer that lease. */
  private fenceRow(
    row: RegionRow,
    holder: string,
    epoch: number,
    reason: FenceReason,
    liveness?: string,
  ): FencedRegionLease | undefined {
    const updated = this.catalog.transaction(
      () => this.catalog.fenceLease(row.id, holder, epoch, this.now(), reason),
      this.durabilityOf(row),
    );
    if (updated === undefined) return undefined;
    const fenced = fencedOf(updated)!;
    this.logger.warn(
      {
        region: row.id,
        name: row.name,
        holder,
        epoch: fenced.epoch,
        reason,
        ...(liveness !== undefined ? { liveness } : {}),
      },
      'lease fenced: holder cleared, epoch + 1, region and memory kept',
    );
    return { ...fenced, regionId: row.id, regionName: row.name };
  }

  /**
   * Stops the TTL timer and settles every outstanding arm (a flip is committed, an arm still
   * armed is cancelled: a target's later flip fails), then removes the arms file — a stopped
   * memstore leaves no `lease-arms-*` file behind. An arm that cannot be settled (its commit
   * failed) keeps the file, unmapped, for the next start to reconcile. Call before the catalog
   * closes. With `settle` false the arms and the file are left as a killed process leaves them
   * (tests of recovery). Idempotent.
   */
  close(settle = true): void {
    if (this.timer) clearInterval(this.timer);
    const arms = this.opts.arms;
    if (!arms || arms.closed) return;
    if (!settle) {
      arms.close();
      return;
    }
    for (const id of [...this.armed.keys()]) {
      try {
        this.settle(id);
      } catch (err) {
        this.logger.warn({ region: id, err }, 'lease arm could not be settled at stop; kept');
      }
    }
    if (arms.slotsInUse === 0) {
      arms.remove(this.logger);
    } else {
      this.logger.warn(
        { path: arms.path, inUse: arms.slotsInUse },
        'lease arms file kept at stop: it holds arms not settled; the next start settles them',
      );
      arms.close();
    }
  }

  /** The region's row after resolving its arm, if it has one. */
  /** The region's row with a flipped arm committed; an arm still armed is left as it is. */
  private observed(ref: RegionRef): RegionRow {
    const row = findRegion(this.catalog, ref);
    const slot = this.armed.get(row.id);
    if (slot === undefined || (this.opts.arms!.peek(slot) & 0xff) !== ARM_FLIPPED) return row;
    this.settle(row.id);
    return findRegion(this.catalog, { id: row.id });
  }

  private current(ref: RegionRef): RegionRow {
    const row = findRegion(this.catalog, ref);
    if (!this.armed.has(row.id)) return row;
    this.settle(row.id);
    return findRegion(this.catalog, { id: row.id });
  }

  /**
   * Decides region `id`'s arm by CAS and frees its slot: a flip is committed first (if that
   * commit fails the slot stays FLIPPED and in use, so the next call retries it).
   */
  private settle(id: string): 'flipped' | 'cancelled' | 'garbled' {
    const slot = this.armed.get(id)!;
    const arms = this.opts.arms!;
    const outcome = arms.decide(slot);
    if (outcome === 'flipped') {
      this.commitFlip(slot.record, 'flip');
    } else {
      this.logger.info(
        { region: id, from: slot.record.fromHolder, to: slot.record.toHolder, outcome },
        'lease arm cancelled',
      );
    }
    this.armed.delete(id);
    arms.release(slot.slot);
    return outcome;
  }

  /** Commits a flipped arm's transfer to the catalog, as TransferLease would have. */
  private commitFlip(record: ArmRecord, via: 'flip' | 'start-up'): void {
    const { regionId, fromHolder, toHolder, epoch } = record;
    const row = this.catalog.getById(regionId);
    if (row === undefined) {
      this.logger.warn({ region: regionId, via }, 'flipped lease arm names no region; dropped');
      return;
    }
    if (row.leaseHolder === toHolder && row.leaseEpoch === epoch + 1) return; // committed already
    const moved = this.catalog.transaction(
      () => this.catalog.transferLease(row.id, fromHolder, epoch, toHolder, this.now()),
      this.durabilityOf(row),
    );
    if (moved === undefined) {
      this.logger.warn(
        {
          region: row.id,
          name: row.name,
          from: fromHolder,
          to: toHolder,
          epoch,
          lease: describeLease(row),
          via,
        },
        'flipped lease arm does not match the catalog lease; dropped',
      );
      return;
    }
    this.logger.info(
      {
        region: row.id,
        name: row.name,
        from: fromHolder,
        to: toHolder,
        epoch: moved.leaseEpoch,
        via,
      },
      'lease transferred',
    );
  }
}
