import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { chmodSync } from 'node:fs';
import type { Logger } from '@handoff/service';
import { MemstoreError } from '../errors.js';
import type {
  CloneRow,
  FenceReason,
  HolderProcessRow,
  NewRegionRow,
  RegionKind,
  RegionRow,
  RowState,
} from './rows.js';
import { MIGRATIONS, SCHEMA_VERSION } from './schema.js';
import { LazyTable } from './lazy-table.js';
import { SnapshotTable } from './snapshot-table.js';

/** File name of the catalog inside the state directory. */
export const CATALOG_FILE_NAME = 'catalog.db';

interface RawRegionRow {
  id: string;
  name: string;
  kind: RegionKind;
  state: RowState;
  size: number;
  path: string;
  identity: string;
  created_at: number;
  parent_id: string | null;
  lease_holder: string | null;
  lease_epoch: number;
  lease_granted_at: number | null;
  sealed_at: number | null;
  lost_at: number | null;
  fenced_holder: string | null;
  fenced_epoch: number | null;
  fenced_at: number | null;
  fenced_reason: FenceReason | null;
}

interface RawHolderProcessRow {
  vmm_id: string;
  pid: number;
  start_time: number;
  boot_id: string;
  instance: string;
  opened_at: number;
  gone_at: number | null;
}

interface RawCloneRow {
  template_id: string;
  holder: string;
  attached_at: number;
}

function toRegionRow(r: RawRegionRow): RegionRow {
  return {
    id: r.id,
    name: r.name,
    kind: r.kind,
    state: r.state,
    size: r.size,
    path: r.path,
    identity: r.identity,
    createdAt: r.created_at,
    parentId: r.parent_id,
    leaseHolder: r.lease_holder,
    leaseEpoch: r.lease_epoch,
    leaseGrantedAt: r.lease_granted_at,
    sealedAt: r.sealed_at,
    lostAt: r.lost_at,
    fenced:
      r.fenced_holder === null
        ? null
        : {
            holder: r.fenced_holder,
            epoch: r.fenced_epoch ?? r.lease_epoch,
            at: r.fenced_at ?? 0,
            reason: r.fenced_reason ?? 'holder-gone',
          },
  };
}

function toHolderProcessRow(r: RawHolderProcessRow): HolderProcessRow {
  return {
    vmmId: r.vmm_id,
    pid: r.pid,
    startTime: r.start_time,
    bootId: r.boot_id,
    instance: r.instance,
    openedAt: r.opened_at,
    goneAt: r.gone_at,
  };
}

function toCloneRow(r: RawCloneRow): CloneRow {
  return { templateId: r.template_id, holder: r.holder, attachedAt: r.attached_at };
}

/**
 * What a committed transaction must survive: a crash of the memstore process
 * only (kill -9, an abort) or also an OS crash / power loss.
 */
export type CommitDurability = 'process-crash' | 'power-loss';

/** What happened when the catalog was opened. */
export interface CatalogOpenInfo {
  /** True when the database file was created by this open. */
  readonly created: boolean;
  /** Schema version found on disk before migrations ran. */
  readonly fromVersion: number;
  readonly schemaVersion: number;
}

/**
 * The memstore's durable state: regions, leases and clones in one SQLite file.
 *
 * Durability: WAL journal. By default the connection runs with
 * `synchronous=FULL`: a committed transaction is on disk (fsync of the WAL)
 * before the call returns — it survives kill -9 and power loss. A caller may
 * ask for a transaction that only has to survive a crash of this process
 * (`transaction(fn, 'process-crash')`): it commits with `synchronous=NORMAL`,
 * i.e. the WAL frames are written to the OS (page cache) but not fsynced, and
 * the connection is back at FULL before the call returns. Because the WAL is
 * append-only and replayed in order, what survives a power loss is always a
 * prefix of the commit sequence: a later FULL commit's fsync also makes every
 * earlier NORMAL commit durable, and a NORMAL commit can never be kept while
 * an earlier one is lost. The connection holds an exclusive lock
 * for its lifetime (`locking_mode=EXCLUSIVE`), so a second memstore on the
 * same state directory fails fast instead of reconciling under the first
 * one's feet; the OS drops the lock when the process dies.
 *
 * This class stores and retrieves (snapshots in {@link SnapshotTable}); the rules (who may lease, when a region
 * may be deleted) live in `leases/` and `regions/`. Conditional updates
 * return whether they matched, so callers can implement compare-and-set.
 */
export class Catalog {
  /** Random id of this catalog, part of every region file name it owns. */
  readonly catalogId: string;
  readonly openInfo: CatalogOpenInfo;
  /** The snapshots and their blocks (schema version 3). */
  readonly snapshots: SnapshotTable;
  /** Lazy regions (target host) and page sources (source host) (schema version 5). */
  readonly lazy: LazyTable;
  private readonly db: Database.Database;
  private readonly s: ReturnType<typeof prepareStatements>;

  private constructor(
    readonly path: string,
    db: Database.Database,
    openInfo: CatalogOpenInfo,
  ) {
    this.db = db;
    this.openInfo = openInfo;
    this.s = prepareStatements(db);
    this.snapshots = new SnapshotTable(db);
    this.lazy = new LazyTable(db);
    this.catalogId = this.ensureCatalogId();
  }

  /**
   * Opens (creating if needed) the catalog at `path`, takes its exclusive
   * lock, checks it and migrates it to the current schema.
   * Throws CATALOG_LOCKED, CATALOG_INCOMPATIBLE, CATALOG_CORRUPT or CATALOG_FAILED.
   */
  static open(path: string, logger?: Logger): Catalog {
    let db: Database.Database | undefined;
    try {
      db = new Database(path, { timeout: 0 });
      const created = (db.pragma('page_count', { simple: true }) as number) === 0;
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      // Take the exclusive lock now rather than at the first write.
      db.exec('BEGIN EXCLUSIVE; COMMIT');
      chmodSync(path, 0o600);
      const check = db.pragma('quick_check', { simple: true }) as string;
      if (check !== 'ok') {
        throw new MemstoreError(
          'CATALOG_CORRUPT',
          `catalog ${path} failed its integrity check (${check}); restore it from a backup or move it away to start with an empty catalog`,
        );
      }
      const fromVersion = migrate(db, path, logger);
      return new Catalog(path, db, { created, fromVersion, schemaVersion: SCHEMA_VERSION });
    } catch (err) {
      db?.close();
      if ((err as { code?: string }).code === 'SQLITE_BUSY') {
        throw new MemstoreError(
          'CATALOG_LOCKED',
          `catalog ${path} is in use by another memstore process; stop that process or give this one another --state-dir`,
          { cause: err },
        );
      }
      throw MemstoreError.from(err, `opening catalog ${path}`);
    }
  }

  /**
   * Runs `fn` in one transaction (BEGIN IMMEDIATE): all of its writes commit
   * together or none do. `survives` says what the commit must outlive once
   * this returns: `'power-loss'` (default: the WAL is fsynced) or
   * `'process-crash'` (the WAL is written to the OS but not fsynced; kill -9
   * of this process cannot lose it, an OS crash or power cut may). Writes
   * outside `transaction()` always run at `'power-loss'`.
   */
  transaction<T>(fn: () => T, survives: CommitDurability = 'power-loss'): T {
    if (survives === 'power-loss') return this.db.transaction(fn).immediate();
    // synchronous may only change between transactions; restore FULL at once
    // so that autocommit writes and the next transaction get the default.
    // (Not a prepared statement: SQLite applies this pragma when it compiles
    // it, so a statement prepared once would not switch the level per run.)
    this.db.exec('PRAGMA synchronous = NORMAL');
    try {
      return this.db.transaction(fn).immediate();
    } finally {
      this.db.exec('PRAGMA synchronous = FULL');
    }
  }

  /** The connection's current `PRAGMA synchronous` (2 = FULL, 1 = NORMAL); for tests. */
  get synchronous(): number {
    return this.db.pragma('synchronous', { simple: true }) as number;
  }

  /** Closes the database (idempotent). */
  close(): void {
    if (this.db.open) this.db.close();
  }

  /** True until close(). */
  get isOpen(): boolean {
    return this.db.open;
  }

  // --- regions ---------------------------------------------------------------

  /** The row with this id, in any state (including 'creating'). */
  getById(id: string): RegionRow | undefined {
    const r = this.s.getById.get(id) as RawRegionRow | undefined;
    return r === undefined ? undefined : toRegionRow(r);
  }

  /** The row with this name, in any state (including 'creating'). */
  getByName(name: string): RegionRow | undefined {
    const r = this.s.getByName.get(name) as RawRegionRow | undefined;
    return r === undefined ? undefined : toRegionRow(r);
  }

  /** Regions clients may see (every state but 'creating'), oldest first; optionally one kind. */
  listRegions(kind?: RegionKind): RegionRow[] {
    const rows = (
      kind === undefined ? this.s.listVisible.all() : this.s.listVisibleByKind.all(kind)
    ) as RawRegionRow[];
    return rows.map(toRegionRow);
  }

  /** Every row, including 'creating' ones (start-up reconciliation). */
  listAllRows(): RegionRow[] {
    return (this.s.listAll.all() as RawRegionRow[]).map(toRegionRow);
  }

  /** Inserts a region in state 'creating' (step 1 of the create protocol). */
  insertCreating(row: NewRegionRow): void {
    this.s.insertCreating.run({
      id: row.id,
      name: row.name,
      kind: row.kind,
      size: row.size,
      path: row.path,
      identity: row.identity,
      created_at: row.createdAt,
      parent_id: row.parentId,
    });
  }

  /** 'creating' -> 'active' (the commit point of a create). False if the row is not 'creating'. */
  markActive(id: string): boolean {
    return this.s.markActive.run(id).changes === 1;
  }

  /** Deletes a region row (its clones must be gone). False if absent. */
  deleteRegion(id: string): boolean {
    return this.s.deleteRegion.run(id).changes === 1;
  }

  /** Records that the region's file is missing. */
  markLost(id: string, at: number): void {
    this.s.markLost.run(at, id);
  }

  /** Clears a lost mark (the file is back). */
  clearLost(id: string): void {
    this.s.clearLost.run(id);
  }

  // --- leases (compare-and-set updates; undefined/false = precondition did not match) ---

  /** Grants the lease of an active, unleased, not-lost region; epoch + 1. */
  acquireLease(id: string, holder: string, at: number): RegionRow | undefined {
    const r = this.s.acquireLease.get({ id, holder, at }) as RawRegionRow | undefined;
    return r === undefined ? undefined : toRegionRow(r);
  }

  /** Moves the lease if (fromHolder, expectedEpoch) is current; epoch + 1. */
  transferLease(
    id: string,
    fromHolder: string,
    expectedEpoch: number,
    toHolder: string,
    at: number,
  ): RegionRow | undefined {
    const r = this.s.transferLease.get({
      id,
      from: fromHolder,
      epoch: expectedEpoch,
      to: toHolder,
      at,
    }) as RawRegionRow | undefined;
    return r === undefined ? undefined : toRegionRow(r);
  }

  /** Clears the lease if (holder, epoch) is current; the epoch is kept. */
  releaseLease(id: string, holder: string, epoch: number): boolean {
    return this.s.releaseLease.run({ id, holder, epoch }).changes === 1;
  }

  /**
   * Fences the lease if (holder, epoch) is current: the holder is cleared and the epoch grows by
   * one (so the fenced holder's epoch is stale everywhere), and the fence is recorded on the
   * row until the region is leased again. The region and its file are untouched.
   */
  fenceLease(
    id: string,
    holder: string,
    epoch: number,
    at: number,
    reason: FenceReason,
  ): RegionRow | undefined {
    const r = this.s.fenceLease.get({ id, holder, epoch, at, reason }) as RawRegionRow | undefined;
    return r === undefined ? undefined : toRegionRow(r);
  }

  /** Leased regions whose holder names vmm `vmmId` (`<vmmId>/...`), oldest first. */
  leasesOfVmm(vmmId: string): RegionRow[] {
    return (this.s.leasesOfVmm.all({ prefix: `${vmmId}/` }) as RawRegionRow[]).map(toRegionRow);
  }

  /**
   * Seals an active region if its lease is exactly (holder, epoch) — holder
   * null meaning unleased — and releases the lease.
   */
  sealRegion(id: string, holder: string | null, epoch: number, at: number): RegionRow | undefined {
    const r = this.s.seal.get({ id, holder, epoch, at }) as RawRegionRow | undefined;
    return r === undefined ? undefined : toRegionRow(r);
  }

  // --- clones ------------------------------------------------------------------

  /** Records a clone; false if that holder was already attached. */
  attachClone(templateId: string, holder: string, at: number): boolean {
    return this.s.attachClone.run(templateId, holder, at).changes === 1;
  }

  /** Forgets a clone; false if that holder was not attached. */
  detachClone(templateId: string, holder: string): boolean {
    return this.s.detachClone.run(templateId, holder).changes === 1;
  }

  /** Forgets every clone attachment of vmm `vmmId`'s holders (`<vmmId>/...`); how many. */
  detachClonesOfVmm(vmmId: string): number {
    return this.s.detachClonesOfVmm.run({ prefix: `${vmmId}/` }).changes;
  }

  /** Clones of one template, oldest first. */
  clonesOf(templateId: string): CloneRow[] {
    return (this.s.clonesOf.all(templateId) as RawCloneRow[]).map(toCloneRow);
  }

  /** Every clone, oldest first (one query for a whole listing). */
  allClones(): CloneRow[] {
    return (this.s.allClones.all() as RawCloneRow[]).map(toCloneRow);
  }

  // --- lease-holder processes -----------------------------------------------------

  /** The process recorded for vmm `vmmId`, if any. */
  getHolderProcess(vmmId: string): HolderProcessRow | undefined {
    const r = this.s.getHolderProcess.get(vmmId) as RawHolderProcessRow | undefined;
    return r === undefined ? undefined : toHolderProcessRow(r);
  }

  /** Every recorded holder process, by vmm id. */
  listHolderProcesses(): HolderProcessRow[] {
    return (this.s.listHolderProcesses.all() as RawHolderProcessRow[]).map(toHolderProcessRow);
  }

  /** Records (or replaces) the process of vmm `row.vmmId`. */
  putHolderProcess(row: HolderProcessRow): void {
    this.s.putHolderProcess.run({
      vmm_id: row.vmmId,
      pid: row.pid,
      start_time: row.startTime,
      boot_id: row.bootId,
      instance: row.instance,
      opened_at: row.openedAt,
      gone_at: row.goneAt,
    });
  }

  /** Marks the recorded process of `vmmId` gone at `at`, if it is that `instance` and not yet. */
  markHolderProcessGone(vmmId: string, instance: string, at: number): boolean {
    return this.s.markHolderProcessGone.run(at, vmmId, instance).changes === 1;
  }

  // --- meta ----------------------------------------------------------------------

  private ensureCatalogId(): string {
    const existing = this.s.getMeta.get('catalog_id') as { value: string } | undefined;
    if (existing !== undefined) return existing.value;
    const id = randomBytes(8).toString('hex');
    this.s.setMeta.run('catalog_id', id);
    return id;
  }
}

function prepareStatements(db: Database.Database) {
  const visible = `state <> 'creating'`;
  return {
    getById: db.prepare('SELECT * FROM regions WHERE id = ?'),
    getByName: db.prepare('SELECT * FROM regions WHERE name = ?'),
    listVisible: db.prepare(`SELECT * FROM regions WHERE ${visible} ORDER BY created_at, name`),
    listVisibleByKind: db.prepare(
      `SELECT * FROM regions WHERE ${visible} AND kind = ? ORDER BY created_at, name`,
    ),
    listAll: db.prepare('SELECT * FROM regions ORDER BY created_at, name'),
    insertCreating: db.prepare(
      `INSERT INTO regions (id, name, kind, state, size, path, identity, created_at, parent_id)
       VALUES (@id, @name, @kind, 'creating', @size, @path, @identity, @created_at, @parent_id)`,
    ),
    markActive: db.prepare(
      `UPDATE regions SET state = 'active' WHERE id = ? AND state = 'creating'`,
    ),
    deleteRegion: db.prepare('DELETE FROM regions WHERE id = ?'),
    markLost: db.prepare('UPDATE regions SET lost_at = ? WHERE id = ? AND lost_at IS NULL'),
    clearLost: db.prepare('UPDATE regions SET lost_at = NULL WHERE id = ?'),
    acquireLease: db.prepare(
      `UPDATE regions
          SET lease_holder = @holder, lease_epoch = lease_epoch + 1, lease_granted_at = @at,
              fenced_holder = NULL, fenced_epoch = NULL, fenced_at = NULL, fenced_reason = NULL
        WHERE id = @id AND state = 'active' AND lost_at IS NULL AND lease_holder IS NULL
       RETURNING *`,
    ),
    transferLease: db.prepare(
      `UPDATE regions
          SET lease_holder = @to, lease_epoch = lease_epoch + 1, lease_granted_at = @at
        WHERE id = @id AND state = 'active' AND lease_holder = @from AND lease_epoch = @epoch
       RETURNING *`,
    ),
    releaseLease: db.prepare(
      `UPDATE regions SET lease_holder = NULL, lease_granted_at = NULL
        WHERE id = @id AND lease_holder = @holder AND lease_epoch = @epoch`,
    ),
    fenceLease: db.prepare(
      `UPDATE regions
          SET lease_holder = NULL, lease_granted_at = NULL, lease_epoch = lease_epoch + 1,
              fenced_holder = @holder, fenced_epoch = lease_epoch + 1, fenced_at = @at,
              fenced_reason = @reason
        WHERE id = @id AND lease_holder = @holder AND lease_epoch = @epoch
       RETURNING *`,
    ),
    // A prefix compare, not LIKE: '_' and '%' are ordinary characters of a vmm id.
    leasesOfVmm: db.prepare(
      `SELECT * FROM regions
        WHERE lease_holder IS NOT NULL
          AND substr(lease_holder, 1, length(@prefix)) = @prefix
        ORDER BY created_at, name`,
    ),
    getHolderProcess: db.prepare('SELECT * FROM holder_processes WHERE vmm_id = ?'),
    listHolderProcesses: db.prepare('SELECT * FROM holder_processes ORDER BY vmm_id'),
    putHolderProcess: db.prepare(
      `INSERT OR REPLACE INTO holder_processes
         (vmm_id, pid, start_time, boot_id, instance, opened_at, gone_at)
       VALUES (@vmm_id, @pid, @start_time, @boot_id, @instance, @opened_at, @gone_at)`,
    ),
    markHolderProcessGone: db.prepare(
      `UPDATE holder_processes SET gone_at = ?
        WHERE vmm_id = ? AND instance = ? AND gone_at IS NULL`,
    ),
    seal: db.prepare(
      `UPDATE regions
          SET state = 'sealed', sealed_at = @at, lease_holder = NULL, lease_granted_at = NULL
        WHERE id = @id AND state = 'active' AND lost_at IS NULL
          AND lease_holder IS @holder AND lease_epoch = @epoch
       RETURNING *`,
    ),
    attachClone: db.prepare(
      'INSERT OR IGNORE INTO clones (template_id, holder, attached_at) VALUES (?, ?, ?)',
    ),
    detachClone: db.prepare('DELETE FROM clones WHERE template_id = ? AND holder = ?'),
    detachClonesOfVmm: db.prepare(
      'DELETE FROM clones WHERE substr(holder, 1, length(@prefix)) = @prefix',
    ),
    clonesOf: db.prepare('SELECT * FROM clones WHERE template_id = ? ORDER BY attached_at, holder'),
    allClones: db.prepare('SELECT * FROM clones ORDER BY attached_at, holder'),
    getMeta: db.prepare('SELECT value FROM meta WHERE key = ?'),
    setMeta: db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)'),
  };
}

/** Brings the schema to SCHEMA_VERSION; returns the version found. */
function migrate(db: Database.Database, path: string, logger?: Logger): number {
  const found = db.pragma('user_version', { simple: true }) as number;
  if (found > SCHEMA_VERSION) {
    throw new MemstoreError(
      'CATALOG_INCOMPATIBLE',
      `catalog ${path} has schema version ${found}, newer than this memstore understands (${SCHEMA_VERSION}); ` +
        'run a newer memstore, or give this one another --state-dir',
    );
  }
  for (let v = found; v < SCHEMA_VERSION; v++) {
    const step = MIGRATIONS[v]!;
    db.transaction(() => {
      db.exec(step.sql);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
    logger?.info({ catalog: path, schemaVersion: v + 1 }, `catalog migrated: ${step.description}`);
  }
  return found;
}
