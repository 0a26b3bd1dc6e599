import type Database from 'better-sqlite3';

/** Where a lazy region's fill stands, as the catalog stores it. */
export type LazyRowState = 'waiting' | 'filling' | 'paused' | 'complete' | 'failed';

/** One row of `lazy_regions` (target host). Times are ms since the Unix epoch. */
export interface LazyRegionRow {
  readonly regionId: string;
  readonly sourceMemstore: string;
  readonly sourceRegionId: string;
  readonly sourceIdentity: string;
  readonly sourceSize: number;
  readonly sourceEpoch: number;
  /** The page source's id on the source memstore. */
  readonly sourceId: string;
  readonly state: LazyRowState;
  readonly presentPath: string;
  readonly startedAt: number | null;
  readonly completedAt: number | null;
  /** The source memstore was told the fill is over (ClosePageSource answered). */
  readonly sourceClosed: boolean;
  readonly error: string;
}

/** One row of `page_sources` (source host). */
export interface PageSourceRow {
  readonly id: string;
  readonly regionId: string;
  /** The reading memstore's id (its certificate's CN). */
  readonly reader: string;
  readonly openedAt: number;
  /** The page source's lease epoch on the region once claimed; null before. */
  readonly claimedEpoch: number | null;
}

interface RawLazyRow {
  region_id: string;
  source_memstore: string;
  source_region_id: string;
  source_identity: string;
  source_size: number;
  source_epoch: number;
  source_id: string;
  state: LazyRowState;
  present_path: string;
  started_at: number | null;
  completed_at: number | null;
  source_closed: number;
  error: string;
}

interface RawSourceRow {
  id: string;
  region_id: string;
  reader: string;
  opened_at: number;
  claimed_epoch: number | null;
}

function toLazyRow(r: RawLazyRow): LazyRegionRow {
  return {
    regionId: r.region_id,
    sourceMemstore: r.source_memstore,
    sourceRegionId: r.source_region_id,
    sourceIdentity: r.source_identity,
    sourceSize: r.source_size,
    sourceEpoch: r.source_epoch,
    sourceId: r.source_id,
    state: r.state,
    presentPath: r.present_path,
    startedAt: r.started_at,
    completedAt: r.completed_at,
    sourceClosed: r.source_closed === 1,
    error: r.error,
  };
}

function toSourceRow(r: RawSourceRow): PageSourceRow {
  return {
    id: r.id,
    regionId: r.region_id,
    reader: r.reader,
    openedAt: r.opened_at,
    claimedEpoch: r.claimed_epoch,
  };
}

/**
 * The catalog's lazy-region and page-source rows (schema version 5). Storage only: the rules
 * live in `lazy/`. Rows go with their region (ON DELETE CASCADE).
 */
export class LazyTable {
  private readonly s: ReturnType<typeof prepare>;

  constructor(db: Database.Database) {
    this.s = prepare(db);
  }

  insertLazy(row: LazyRegionRow): void {
    this.s.insertLazy.run({
      region_id: row.regionId,
      source_memstore: row.sourceMemstore,
      source_region_id: row.sourceRegionId,
      source_identity: row.sourceIdentity,
      source_size: row.sourceSize,
      source_epoch: row.sourceEpoch,
      source_id: row.sourceId,
      state: row.state,
      present_path: row.presentPath,
      started_at: row.startedAt,
      completed_at: row.completedAt,
      source_closed: row.sourceClosed ? 1 : 0,
      error: row.error,
    });
  }

  getLazy(regionId: string): LazyRegionRow | undefined {
    const r = this.s.getLazy.get(regionId) as RawLazyRow | undefined;
    return r === undefined ? undefined : toLazyRow(r);
  }

  listLazy(): LazyRegionRow[] {
    return (this.s.listLazy.all() as RawLazyRow[]).map(toLazyRow);
  }

  /** Sets the fill's state (and its error, start and completion times when given). */
  updateLazy(
    regionId: string,
    change: {
      state: LazyRowState;
      error?: string;
      startedAt?: number;
      completedAt?: number;
      sourceMemstore?: string;
    },
  ): void {
    this.s.updateLazy.run({
      region_id: regionId,
      state: change.state,
      error: change.error ?? '',
      started_at: change.startedAt ?? null,
      completed_at: change.completedAt ?? null,
      source_memstore: change.sourceMemstore ?? null,
    });
  }

  markSourceClosed(regionId: string): void {
    this.s.markSourceClosed.run(regionId);
  }

  deleteLazy(regionId: string): void {
    this.s.deleteLazy.run(regionId);
  }

  insertSource(row: PageSourceRow): void {
    this.s.insertSource.run({
      id: row.id,
      region_id: row.regionId,
      reader: row.reader,
      opened_at: row.openedAt,
      claimed_epoch: row.claimedEpoch,
    });
  }

  getSource(id: string): PageSourceRow | undefined {
    const r = this.s.getSource.get(id) as RawSourceRow | undefined;
    return r === undefined ? undefined : toSourceRow(r);
  }

  sourceOf(regionId: string, reader: string): PageSourceRow | undefined {
    const r = this.s.sourceOf.get(regionId, reader) as RawSourceRow | undefined;
    return r === undefined ? undefined : toSourceRow(r);
  }

  setClaimedEpoch(id: string, epoch: number): void {
    this.s.setClaimed.run(epoch, id);
  }

  deleteSource(id: string): void {
    this.s.deleteSource.run(id);
  }
}

function prepare(db: Database.Database) {
  return {
    insertLazy: db.prepare(
      `INSERT INTO lazy_regions
         (region_id, source_memstore, source_region_id, source_identity, source_size,
          source_epoch, source_id, state, present_path, started_at, completed_at, source_closed,
          error)
       VALUES (@region_id, @source_memstore, @source_region_id, @source_identity, @source_size,
          @source_epoch, @source_id, @state, @present_path, @started_at, @completed_at,
          @source_closed, @error)`,
    ),
    getLazy: db.prepare('SELECT * FROM lazy_regions WHERE region_id = ?'),
    listLazy: db.prepare('SELECT * FROM lazy_regions ORDER BY region_id'),
    updateLazy: db.prepare(
      `UPDATE lazy_regions
          SET state = @state, error = @error,
              started_at = COALESCE(@started_at, started_at),
              completed_at = COALESCE(@completed_at, completed_at),
              source_memstore = COALESCE(@source_memstore, source_memstore)
        WHERE region_id = @region_id`,
    ),
    markSourceClosed: db.prepare('UPDATE lazy_regions SET source_closed = 1 WHERE region_id = ?'),
    deleteLazy: db.prepare('DELETE FROM lazy_regions WHERE region_id = ?'),
    insertSource: db.prepare(
      `INSERT INTO page_sources (id, region_id, reader, opened_at, claimed_epoch)
       VALUES (@id, @region_id, @reader, @opened_at, @claimed_epoch)`,
    ),
    getSource: db.prepare('SELECT * FROM page_sources WHERE id = ?'),
    sourceOf: db.prepare('SELECT * FROM page_sources WHERE region_id = ? AND reader = ?'),
    setClaimed: db.prepare('UPDATE page_sources SET claimed_epoch = ? WHERE id = ?'),
    deleteSource: db.prepare('DELETE FROM page_sources WHERE id = ?'),
  };
}
