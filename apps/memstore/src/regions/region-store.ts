import type { Logger } from '@handoff/service';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { Catalog } from '../catalog/catalog.js';
import type { RegionKind, RegionRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { describeLease } from '../leases/lease.js';
import type { RegionDirectories } from './directories.js';
import { availableBytes, createRegionFile, removeRegionFile, statRegionFile } from './files.js';
import { regionFileName, validateRegionName } from './naming.js';
import { regionView, type Region, type RegionRef } from './region.js';
import { NO_ARMS, type LeaseArmResolver } from '../leases/lease-manager.js';
import { NO_SESSIONS, type HolderJudge } from '../leases/liveness.js';
import { findRegion } from './resolve.js';
import { formatBytes, validateRegionSize } from './size.js';

/** Limits on what may be created. */
export interface RegionLimits {
  /** Largest single region, bytes. */
  readonly maxRegionSize: number;
  /** Largest sum of all region sizes, bytes; 0 = no limit. */
  readonly maxTotalSize: number;
}

/** Totals over every region. */
export interface RegionUsage {
  readonly regionCount: number;
  readonly totalSize: number;
  readonly allocatedBytes: number;
}

/**
 * Region lifecycle: create, look up, list, delete. Orders every file
 * operation against catalog commits so that a crash at any instant leaves
 * a state start-up reconciliation repairs:
 *
 * create: (1) commit row 'creating' -> (2) create + size the file
 *         (fsync file and directory for persistent) -> (3) commit 'active'.
 *         A crash before (3) leaves a 'creating' row, rolled back at start-up
 *         (file and row removed); CreateRegion returns only after (3).
 * delete: (1) commit the row's removal -> (2) unlink the file. A crash between
 *         leaves an orphan file, removed at start-up.
 */
export class RegionStore {
  constructor(
    private readonly catalog: Catalog,
    private readonly dirs: RegionDirectories,
    private readonly limits: RegionLimits,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
    /** Resolves lease arms before the lease is read or the region deleted. */
    private readonly arms: LeaseArmResolver = NO_ARMS,
    /** Reports how each lease holder's process is doing. */
    private readonly holders: HolderJudge = NO_SESSIONS,
  ) {}

  /** Creates a zero-filled region. REGION_INVALID_NAME/SIZE, REGION_ALREADY_EXISTS, REGION_LIMIT_EXCEEDED, REGION_NO_SPACE. */
  create(req: { name: string; size: bigint | number; kind: RegionKind }): Region {
    validateRegionName(req.name);
    const size = validateRegionSize(req.size, this.limits.maxRegionSize);
    const existing = this.catalog.getByName(req.name);
    if (existing !== undefined) {
      throw new MemstoreError(
        'REGION_ALREADY_EXISTS',
        existing.state === 'creating'
          ? `region "${req.name}" is being created by another call; wait for it, then use GetRegion`
          : `region "${req.name}" already exists (id ${existing.id}); pick another name or delete it first`,
      );
    }
    this.checkTotal(size);
    const dir = req.kind === 'volatile' ? this.dirs.volatileDir : this.dirs.persistentDir;
    this.checkSpace(dir, size, req.kind);

    const id = randomUUID();
    const path = join(dir, regionFileName(this.catalog.catalogId, id));
    this.catalog.insertCreating({
      id,
      name: req.name,
      kind: req.kind,
      size,
      path,
      identity: randomUUID(),
      createdAt: this.now(),
      parentId: null,
    });
    failpoint('create-after-row');
    try {
      createRegionFile(path, size, req.kind === 'persistent');
    } catch (err) {
      this.catalog.deleteRegion(id);
      throw MemstoreError.from(err, `creating the file of region "${req.name}" at ${path}`);
    }
    failpoint('create-after-file');
    try {
      this.catalog.markActive(id);
    } catch (err) {
      // Leave nothing half-made behind; if this fails too, start-up rolls the 'creating' row back.
      try {
        removeRegionFile(path);
        this.catalog.deleteRegion(id);
      } catch {
        /* reconciled at the next start */
      }
      throw MemstoreError.from(err, `committing region "${req.name}"`);
    }
    this.logger.info({ region: id, name: req.name, kind: req.kind, size }, 'region created');
    return this.get({ id });
  }

  /** The region a reference names. REGION_NOT_FOUND. */
  get(ref: RegionRef): Region {
    // A flip is committed; an arm still armed is left alone (looking decides nothing).
    this.arms.commitFlippedArmOf(ref);
    const row = findRegion(this.catalog, ref);
    return this.view(
      row,
      this.catalog.clonesOf(row.id).map((c) => c.holder),
    );
  }

  /** Every region (optionally of one kind), oldest first. */
  list(kind?: RegionKind): Region[] {
    // Flipped arms are committed; an arm still armed is left alone (a listing decides nothing).
    this.arms.commitFlippedArms();
    const holders = new Map<string, string[]>();
    for (const c of this.catalog.allClones()) {
      const list = holders.get(c.templateId);
      if (list === undefined) holders.set(c.templateId, [c.holder]);
      else list.push(c.holder);
    }
    return this.catalog.listRegions(kind).map((row) => this.view(row, holders.get(row.id) ?? []));
  }

  /**
   * Deletes a region and its file. Refused while leased (LEASE_HELD), while
   * clones are attached or while a snapshot names it (REGION_IN_USE).
   */
  delete(ref: RegionRef): void {
    this.arms.resolveArmOf(ref);
    const row = this.catalog.transaction(() => {
      const r = findRegion(this.catalog, ref);
      if (r.leaseHolder !== null) {
        throw new MemstoreError(
          'LEASE_HELD',
          `region "${r.name}" is in use: its lease is ${describeLease(r)}. ` +
            this.howToFree(r.leaseHolder, r.leaseGrantedAt ?? r.createdAt, r.name),
        );
      }
      const clones = this.catalog.clonesOf(r.id);
      if (clones.length > 0) {
        const shown = clones.slice(0, 5).map((c) => `"${c.holder}"`);
        const more = clones.length > 5 ? ` and ${clones.length - 5} more` : '';
        throw new MemstoreError(
          'REGION_IN_USE',
          `template "${r.name}" has ${clones.length} attached clone(s) (${shown.join(', ')}${more}); ` +
            'destroy those clones (DetachClone) before deleting it',
        );
      }
      const snapshots = this.snapshotsUsing(r.id);
      if (snapshots.length > 0) {
        throw new MemstoreError(
          'REGION_IN_USE',
          `region "${r.name}" holds the memory of snapshot(s) ${snapshots.map((n) => `"${n}"`).join(', ')}; ` +
            'delete the snapshot (DeleteSnapshot) instead: it deletes the regions it owns',
        );
      }
      this.catalog.deleteRegion(r.id);
      return r;
    });
    failpoint('delete-after-row');
    try {
      removeRegionFile(row.path);
    } catch (err) {
      // The row is gone: the file is now an orphan that the next start-up removes.
      this.logger.warn(
        { region: row.id, path: row.path, err },
        'region deleted but its file could not be removed; it will be removed at the next start',
      );
    }
    this.logger.info({ region: row.id, name: row.name }, 'region deleted');
  }

  /** Names of the snapshots whose blocks name the region. */
  private snapshotsUsing(regionId: string): string[] {
    const ids = new Set(this.catalog.snapshots.blocksOfRegion(regionId).map((b) => b.snapshotId));
    return [...ids].map((id) => this.catalog.snapshots.getById(id)?.name ?? id);
  }

  /** Region count, summed sizes and allocated bytes (stats every file). */
  usage(): RegionUsage {
    let totalSize = 0;
    let allocatedBytes = 0;
    const rows = this.catalog.listRegions();
    for (const row of rows) {
      totalSize += row.size;
      allocatedBytes += statRegionFile(row.path)?.allocatedBytes ?? 0;
    }
    return { regionCount: rows.length, totalSize, allocatedBytes };
  }

  /** What to do about a region's lease before deleting it, by how its holder is doing. */
  private howToFree(holder: string, grantedAt: number, name: string): string {
    const status = this.holders.statusOf(holder, new Date(grantedAt));
    if (status.liveness === 'alive') {
      return (
        `Its holder's vmm process${status.pid > 0 ? ` (pid ${status.pid})` : ''} is alive: stop or ` +
        'migrate that VM first (destroying the VM releases the lease), then delete'
      );
    }
    return (
      `Its holder's vmm process is ${status.liveness === 'gone' ? 'gone' : 'not known to be alive'}: ` +
      `take the lease with \`vmctl region release ${name} --force\` (ForceReleaseLease), then delete`
    );
  }

  /** The reported view of a row (stats its file). */
  private view(row: RegionRow, cloneHolders: readonly string[]): Region {
    return regionView(
      row,
      cloneHolders,
      row.lostAt === null ? statRegionFile(row.path) : undefined,
      this.holders,
    );
  }

  private checkTotal(size: number): void {
    if (this.limits.maxTotalSize === 0) return;
    const used = this.catalog.listAllRows().reduce((sum, r) => sum + r.size, 0);
    if (used + size > this.limits.maxTotalSize) {
      throw new MemstoreError(
        'REGION_LIMIT_EXCEEDED',
        `a region of ${formatBytes(size)} would bring the total to ${formatBytes(used + size)}, over the limit ` +
          `${formatBytes(this.limits.maxTotalSize)}; delete regions or raise --max-total-size`,
      );
    }
  }

  private checkSpace(dir: string, size: number, kind: RegionKind): void {
    const free = availableBytes(dir);
    if (size > free) {
      throw new MemstoreError(
        'REGION_NO_SPACE',
        `a ${kind} region of ${formatBytes(size)} cannot be filled: ${dir} has only ${formatBytes(free)} free; ` +
          'free space there, use a smaller size' +
          (kind === 'volatile' ? ', or enlarge the tmpfs' : ''),
      );
    }
  }
}
