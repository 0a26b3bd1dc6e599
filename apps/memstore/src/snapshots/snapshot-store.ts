import type { Logger } from '@handoff/service';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { Catalog } from '../catalog/catalog.js';
import type { RegionRow, SnapshotBlockRow, SnapshotRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { failpoint } from '../failpoints.js';
import { NO_ARMS, type LeaseArmResolver } from '../leases/lease-manager.js';
import { vmmIdOfHolder } from '../leases/liveness.js';
import { removeRegionFile, syncFileData } from '../regions/files.js';
import { validateHolder } from '../regions/naming.js';
import { findRegion } from '../regions/resolve.js';
import { formatBytes } from '../regions/size.js';
import { unsealFileMode, type SealLease, type Templates } from '../templates/templates.js';
import { crc32c } from './crc32c.js';
import { checkLayerRegion, checkLayerShape, type LayerParent } from './layer-checks.js';
import { checkBlockLayout, checkPayloadSizes, checkVmName } from './limits.js';
import { stateFileName, validateSnapshotName } from './naming.js';
import type { NewSnapshot, Snapshot, SnapshotBlockSource, SnapshotRef } from './snapshot.js';
import { clonesOfBlocks, findSnapshot, snapshotView } from './snapshot-view.js';
import { readStateFile, removeStateFile, writeStateFile } from './state-file.js';

/** A snapshot and, when asked, its checked device state. */
export interface SnapshotWithState {
  readonly snapshot: Snapshot;
  readonly deviceState: Uint8Array | undefined;
}

/** A snapshot row ready to commit, with the regions its blocks name. */
export interface SnapshotRecord {
  readonly row: SnapshotRow;
  readonly blocks: readonly SnapshotBlockRow[];
}

function invalid(message: string): MemstoreError {
  return new MemstoreError('SNAPSHOT_INVALID', message);
}

/**
 * Snapshots: create, look up, list, delete. A snapshot is its device-state file (in
 * `stateDir`) plus a catalog row naming one sealed region per RAM block. Ordering against
 * crashes:
 *
 * create: (1) state file written and fsynced (with its directory) -> (2) one transaction:
 *         seal each unsealed block region (file 0444, row sealed, lease released), insert the
 *         snapshot and block rows, commit. A crash before (2) commits leaves a state file
 *         without a row (removed at start-up) and maybe read-only files of active regions
 *         (start-up restores their mode); a failure undoes both at once.
 * delete: (1) one transaction: the rows and the owned regions' rows -> (2) unlink the state
 *         file and the owned region files. A crash between leaves orphan files, removed at
 *         start-up.
 */
export class SnapshotStore {
  constructor(
    private readonly catalog: Catalog,
    private readonly templates: Templates,
    /** The folder of device-state files (`<persistent>/snapshots`). */
    readonly stateDir: string,
    private readonly limits: { readonly maxRegionSize: number },
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
    private readonly arms: LeaseArmResolver = NO_ARMS,
  ) {}

  /**
   * CreateSnapshot; with `parent`, a layer (its rules: layer-checks.ts). SNAPSHOT_INVALID,
   * SNAPSHOT_EXISTS, REGION_NOT_FOUND, REGION_LOST, and the lease errors of sealing
   * (LEASE_STALE_EPOCH, LEASE_NOT_HELD, LEASE_WRONG_HOLDER, LEASE_HELD). Nothing is left behind
   * when it fails.
   */
  async create(req: NewSnapshot): Promise<Snapshot> {
    this.checkRequest(req);
    const parent = this.parentOf(req.parent);
    checkLayerShape(req, parent);
    const parentId = parent?.row.id ?? null;
    for (const b of req.blocks) this.arms.resolveArmOf(b.region);
    const regions = this.checkBlocks(req, parent !== undefined);
    for (const r of regions) {
      if (r.kind !== 'persistent' || r.state === 'sealed') continue;
      try {
        await syncFileData(r.path);
      } catch (err) {
        throw MemstoreError.from(err, `flushing region "${r.name}" before sealing it`);
      }
    }
    const id = randomUUID();
    const statePath = join(this.stateDir, stateFileName(this.catalog.catalogId, id));
    try {
      writeStateFile(statePath, req.deviceState);
    } catch (err) {
      throw MemstoreError.from(err, `writing the device state of snapshot "${req.name}"`);
    }
    failpoint('snapshot-after-state-file');
    const record = this.record(req, id, statePath, parentId);
    const sealedPaths: string[] = [];
    try {
      // A flush above may have let an arm in: resolve again, right before the transaction.
      for (const b of req.blocks) this.arms.resolveArmOf(b.region);
      this.catalog.transaction(() => {
        this.assertNameFree(req.name);
        if (parentId !== null && this.catalog.snapshots.getById(parentId) === undefined) {
          throw invalid(`parent snapshot "${parent!.row.name}" was deleted meanwhile`);
        }
        const rows = this.checkBlocks(req, parentId !== null);
        rows.forEach((r, i) => {
          if (r.state === 'sealed') return;
          this.templates.sealWithin(r.id, leaseOf(req, req.blocks[i]!));
          sealedPaths.push(r.path);
        });
        failpoint('snapshot-before-commit');
        this.catalog.snapshots.insert(record.row, blocksWithIdentity(record.blocks, rows));
      });
    } catch (err) {
      for (const p of sealedPaths) unsealFileMode(p);
      removeStateFile(statePath);
      throw MemstoreError.from(err, `recording snapshot "${req.name}"`);
    }
    this.logger.info(
      {
        snapshot: id,
        name: req.name,
        kind: req.kind,
        blocks: req.blocks.length,
        sealed: sealedPaths.length,
        deviceStateBytes: req.deviceState.length,
      },
      'snapshot created',
    );
    return this.get({ id }).snapshot;
  }

  /** GetSnapshot; with `withDeviceState` the state file is read and re-checked. SNAPSHOT_NOT_FOUND, SNAPSHOT_CORRUPT. */
  get(ref: SnapshotRef, withDeviceState = false): SnapshotWithState {
    const row = findSnapshot(this.catalog, ref);
    const snapshot = snapshotView(this.catalog, row, this.catalog.snapshots.blocksOf(row.id));
    if (!withDeviceState) return { snapshot, deviceState: undefined };
    const deviceState = readStateFile(row.statePath, `snapshot "${row.name}"`, {
      bytes: row.stateBytes,
      crc32c: row.stateCrc32c,
    });
    return { snapshot, deviceState };
  }

  /** ListSnapshots, oldest first; optionally only templates. */
  list(templatesOnly = false): Snapshot[] {
    const byId = new Map<string, SnapshotBlockRow[]>();
    for (const b of this.catalog.snapshots.allBlocks()) {
      const list = byId.get(b.snapshotId);
      if (list === undefined) byId.set(b.snapshotId, [b]);
      else list.push(b);
    }
    return this.catalog.snapshots
      .list(templatesOnly)
      .map((row) => snapshotView(this.catalog, row, byId.get(row.id) ?? []));
  }

  /**
   * DeleteSnapshot: the rows, the regions it owns and its state file. SNAPSHOT_IN_USE while a
   * clone is attached to one of its regions, another snapshot layers on it, or another snapshot
   * names a region it owns.
   */
  delete(ref: SnapshotRef): void {
    const { row, owned } = this.catalog.transaction(() => {
      const r = findSnapshot(this.catalog, ref);
      const blocks = this.catalog.snapshots.blocksOf(r.id);
      this.assertDeletable(r, blocks);
      const ownedRegions = blocks
        .filter((b) => b.owned)
        .map((b) => this.catalog.getById(b.regionId))
        .filter((x): x is RegionRow => x !== undefined);
      this.catalog.snapshots.delete(r.id);
      for (const region of ownedRegions) this.catalog.deleteRegion(region.id);
      return { row: r, owned: ownedRegions };
    });
    failpoint('snapshot-delete-after-row');
    for (const path of [row.statePath, ...owned.map((r) => r.path)]) {
      try {
        removeRegionFile(path);
      } catch (err) {
        this.logger.warn(
          { snapshot: row.id, path, err },
          'snapshot deleted but a file could not be removed; it will be removed at the next start',
        );
      }
    }
    this.logger.info(
      { snapshot: row.id, name: row.name, regionsDeleted: owned.map((r) => r.name) },
      'snapshot deleted',
    );
  }

  /** Inserts a ready record (ImportSnapshot, whose regions it made and sealed itself). */
  insertRecord(record: SnapshotRecord): void {
    this.assertNameFree(record.row.name);
    this.catalog.snapshots.insert(record.row, record.blocks);
  }

  /** Throws SNAPSHOT_EXISTS if the name is taken. */
  assertNameFree(name: string): void {
    const existing = this.catalog.snapshots.getByName(name);
    if (existing !== undefined) {
      throw new MemstoreError(
        'SNAPSHOT_EXISTS',
        `snapshot "${name}" already exists (id ${existing.id}); pick another name or delete it first`,
      );
    }
  }

  private checkRequest(req: NewSnapshot): void {
    validateSnapshotName(req.name);
    validateHolder(req.holder);
    if (req.kind !== 'bypass' && req.kind !== 'full') {
      throw invalid(
        `snapshot kind "${req.kind}" cannot be created by a save; use BYPASS or FULL (IMPORTED is ImportSnapshot's)`,
      );
    }
    checkVmName(req.vmName);
    checkPayloadSizes(req.vmSpec, req.deviceState);
    checkBlockLayout(req.blocks, this.limits.maxRegionSize);
    this.assertNameFree(req.name);
  }

  /** The parent a layer names (by name or id) with its blocks; undefined for none. */
  private parentOf(parent: string): LayerParent | undefined {
    if (parent === '') return undefined;
    const row = this.catalog.snapshots.getByName(parent) ?? this.catalog.snapshots.getById(parent);
    if (row === undefined) {
      throw invalid(
        `parent snapshot ${JSON.stringify(parent.slice(0, 80))} does not exist; name an existing snapshot (vmctl snapshot list)`,
      );
    }
    return { row, blocks: this.catalog.snapshots.blocksOf(row.id) };
  }

  /**
   * The region of each block, checked: it exists and is not lost, has the block's size, is
   * named by one block only, may be sealed with the block's lease (or is sealed already), and
   * is not owned by this snapshot while another one names it.
   */
  private checkBlocks(req: NewSnapshot, layered: boolean): RegionRow[] {
    const seen = new Map<string, string>();
    return req.blocks.map((b) => {
      const row = findRegion(this.catalog, b.region);
      const what = `RAM block "${b.id}"`;
      const twice = seen.get(row.id);
      if (twice !== undefined) {
        throw invalid(
          `${what} and "${twice}" both name region "${row.name}"; give each block its own region`,
        );
      }
      seen.set(row.id, b.id);
      if (row.size !== b.size) {
        throw invalid(
          `${what} is ${formatBytes(b.size)} but region "${row.name}" holds ${formatBytes(row.size)}; ` +
            'a snapshot block must be exactly its region',
        );
      }
      if (row.state === 'sealed') {
        if (row.lostAt !== null) {
          throw new MemstoreError(
            'REGION_LOST',
            `${what}: region "${row.name}" has lost its file ${row.path}; it cannot hold a snapshot`,
          );
        }
      } else {
        this.templates.assertSealable(row, leaseOf(req, b));
      }
      checkLayerRegion(this.catalog, b, row, layered, (blocks) => this.namesOf(blocks));
      if (b.owned) {
        const users = this.catalog.snapshots.blocksOfRegion(row.id);
        if (users.length > 0) {
          throw invalid(
            `${what}: region "${row.name}" is already part of snapshot(s) ` +
              `${this.namesOf(users).join(', ')}; a snapshot can only pin it (owned = false)`,
          );
        }
      }
      return row;
    });
  }

  private record(
    req: NewSnapshot,
    id: string,
    statePath: string,
    parentId: string | null,
  ): SnapshotRecord {
    return {
      row: {
        id,
        name: req.name,
        kind: req.kind,
        template: req.template,
        createdAt: this.now(),
        vmName: req.vmName,
        vmmId: vmmIdOfHolder(req.holder) ?? '',
        vmSpec: req.vmSpec,
        statePath,
        stateBytes: req.deviceState.length,
        stateCrc32c: crc32c(req.deviceState),
        parentId,
      },
      blocks: req.blocks.map((b, position) => ({
        snapshotId: id,
        position,
        blockId: b.id,
        guestBase: b.guestBase,
        size: b.size,
        regionId: '',
        identity: '',
        owned: b.owned,
        layerPages: parentId === null ? null : b.layerPages.slice(),
      })),
    };
  }

  private assertDeletable(row: SnapshotRow, blocks: readonly SnapshotBlockRow[]): void {
    const clones = clonesOfBlocks(this.catalog, blocks);
    if (clones.length > 0) {
      const shown = clones.slice(0, 5).map((h) => `"${h}"`);
      const more = clones.length > 5 ? ` and ${clones.length - 5} more` : '';
      throw new MemstoreError(
        'SNAPSHOT_IN_USE',
        `snapshot "${row.name}" has ${clones.length} VM(s) running from it (clones ${shown.join(', ')}${more}); ` +
          'destroy those VMs first (their DetachClone unpins it), then delete the snapshot',
      );
    }
    const children = this.catalog.snapshots.childrenOf(row.id);
    if (children.length > 0) {
      throw new MemstoreError(
        'SNAPSHOT_IN_USE',
        `snapshot(s) ${children.map((c) => `"${c.name}"`).join(', ')} layer on snapshot "${row.name}"; ` +
          'delete them first (flatten a layer you keep into a standalone copy beforehand: FlattenSnapshot)',
      );
    }
    for (const b of blocks) {
      if (!b.owned) continue;
      const others = this.catalog.snapshots
        .blocksOfRegion(b.regionId)
        .filter((o) => o.snapshotId !== row.id);
      if (others.length > 0) {
        throw new MemstoreError(
          'SNAPSHOT_IN_USE',
          `snapshot "${row.name}" owns the region of block "${b.blockId}", which snapshot(s) ` +
            `${this.namesOf(others).join(', ')} also use; delete those first`,
        );
      }
    }
  }

  private namesOf(blocks: readonly SnapshotBlockRow[]): string[] {
    const ids = [...new Set(blocks.map((b) => b.snapshotId))];
    return ids.map((id) => `"${this.catalog.snapshots.getById(id)?.name ?? id}"`);
  }
}

/** The lease a block presents for sealing: none when its epoch is 0. */
function leaseOf(req: NewSnapshot, b: SnapshotBlockSource): SealLease | undefined {
  return b.epoch === 0 ? undefined : { holder: req.holder, epoch: b.epoch };
}

/** The block rows with the region each names and that region's identity. */
function blocksWithIdentity(
  blocks: readonly SnapshotBlockRow[],
  regions: readonly RegionRow[],
): SnapshotBlockRow[] {
  return blocks.map((b, i) => ({ ...b, regionId: regions[i]!.id, identity: regions[i]!.identity }));
}
