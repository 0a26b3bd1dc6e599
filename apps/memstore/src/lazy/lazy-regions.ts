import { PresentMap, presentMapBytes, PresentState } from '@handoff/bitmap';
import type { Logger, TlsMaterial } from '@handoff/service';
import { mapFile, type Mapping } from '@handoff/shm';
import { closeSync, openSync, rmSync } from 'node:fs';
import type { Catalog } from '../catalog/catalog.js';
import type { LazyRegionRow } from '../catalog/lazy-table.js';
import type { RegionKind } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { validateRegionName } from '../regions/naming.js';
import type { RegionRef } from '../regions/region.js';
import type { RegionStore } from '../regions/region-store.js';
import { findRegion } from '../regions/resolve.js';
import { LazyFill, NO_OBSERVER, type LazyFillStatus, type LazyObserver } from './lazy-fill.js';
import type { SourceConnector } from './source.js';
import { PAGE_BYTES } from './wire.js';

/** A region of another memstore, as CreateLazyRegion names it (RemoteRegion). */
export interface RemoteRegionRef {
  readonly memstore: string;
  readonly regionId: string;
  readonly identity: string;
  readonly size: number;
  readonly epoch: number;
}

/** The present map's file of a region file. */
export function presentPathOf(regionPath: string): string {
  return `${regionPath}.present`;
}

/**
 * The target host's lazy regions (LAZY.md): CreateLazyRegion, StartLazyFill, RecoverLazyRegion,
 * FetchPages, and DeleteRegion of a lazy region. One {@link LazyFill} per lazy region.
 *
 * Across a restart of this memstore the catalog row and the present map (a file) keep what
 * arrived: a fill that was running or paused is resumed by itself once the memstore serves
 * again (a recover, for the missing pages only); if the source cannot be reached it stays
 * SOURCE_PAUSED until RecoverLazyRegion. A completed fill's row is dropped at the next start,
 * after the source was told.
 */
export class LazyRegions {
  private readonly fills = new Map<string, LazyFill>();
  private connector: SourceConnector | null = null;
  private tls: TlsMaterial | null = null;
  /** The metrics' hooks (set when metrics are served). */
  observer: LazyObserver = NO_OBSERVER;

  constructor(
    private readonly catalog: Catalog,
    private readonly regions: RegionStore,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Connects the lazy regions to the network (startMemstore: the gRPC client of other
   * memstores and this memstore's certificate), then reopens the fills the catalog has.
   */
  start(connector: SourceConnector, tls: TlsMaterial | null): void {
    this.connector = connector;
    this.tls = tls;
    for (const row of this.catalog.lazy.listLazy()) this.restore(row);
  }

  /** Lazy regions with a fill in memory, by state (metrics). */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const f of this.fills.values()) out[f.state] = (out[f.state] ?? 0) + 1;
    return out;
  }

  /** The fill of a region, or undefined for an ordinary one. */
  status(regionId: string): LazyFillStatus | undefined {
    return this.fills.get(regionId)?.status();
  }

  /**
   * CreateLazyRegion: opens the page source on the source memstore (it checks identity and
   * size), then creates the region (a sparse file of the source's size) and its present map
   * (`<region file>.present`, 0600), and records both in one commit. Nothing is fetched yet.
   */
  async create(req: {
    name: string;
    kind: RegionKind;
    source: RemoteRegionRef;
    /** The background fill's limit in bytes per second (0 or absent: none; not kept across a restart). */
    maxBytesPerSecond?: number;
  }): Promise<string> {
    const connector = this.requireConnector();
    const src = req.source;
    validateRegionName(req.name);
    if (src.memstore === '' || src.regionId === '' || src.identity === '') {
      throw new MemstoreError(
        'REGION_INVALID_ARGUMENT',
        'source: give the source memstore address, region id and identity (RemoteRegion)',
      );
    }
    if (!Number.isSafeInteger(src.size) || src.size <= 0 || src.size % PAGE_BYTES !== 0) {
      throw new MemstoreError(
        'REGION_INVALID_SIZE',
        `source size ${src.size} is not a positive multiple of ${PAGE_BYTES}`,
      );
    }
    if (this.catalog.getByName(req.name) !== undefined) {
      throw new MemstoreError(
        'REGION_ALREADY_EXISTS',
        `region "${req.name}" already exists; pick another name or delete it first`,
      );
    }
    const source = connector(src.memstore);
    let opened;
    try {
      opened = await source.open({
        regionId: src.regionId,
        identity: src.identity,
        size: src.size,
      });
    } catch (err) {
      source.dispose();
      throw err;
    }
    const pages = src.size / PAGE_BYTES;
    let row;
    try {
      row = this.regions.createPending({ name: req.name, size: src.size, kind: req.kind });
    } catch (err) {
      void source.close(opened.sourceId, false).catch(() => {});
      throw err;
    }
    const presentPath = presentPathOf(row.path);
    let presentMapping: Mapping | undefined;
    let regionFd: number | undefined;
    try {
      presentMapping = mapFile(presentPath, {
        create: true,
        exclusive: true,
        size: presentMapBytes(pages),
        mode: 0o600,
      });
      const present = PresentMap.initialize(presentMapping.buffer, pages);
      regionFd = openSync(row.path, 'r+');
      const lazyRow: LazyRegionRow = {
        regionId: row.id,
        sourceMemstore: src.memstore,
        sourceRegionId: src.regionId,
        sourceIdentity: src.identity,
        sourceSize: src.size,
        sourceEpoch: src.epoch,
        sourceId: opened.sourceId,
        state: 'waiting',
        presentPath,
        startedAt: null,
        completedAt: null,
        sourceClosed: false,
        error: '',
      };
      this.catalog.transaction(() => {
        this.catalog.markActive(row.id);
        this.catalog.lazy.insertLazy(lazyRow);
      });
      const fill = new LazyFill(this.fillDeps(), lazyRow, regionFd, presentMapping, present);
      fill.adopt(source, opened);
      fill.limitBackground(req.maxBytesPerSecond ?? 0);
      this.fills.set(row.id, fill);
    } catch (err) {
      if (regionFd !== undefined) closeSync(regionFd);
      presentMapping?.close();
      rmSync(presentPath, { force: true });
      this.regions.discardPending(row);
      void source.close(opened.sourceId, false).catch(() => {});
      source.dispose();
      throw MemstoreError.from(err, `creating lazy region "${req.name}"`);
    }
    this.logger.info(
      { region: row.id, name: req.name, source: src.memstore, sourceRegion: src.regionId, pages },
      'lazy region created',
    );
    return row.id;
  }

  /** StartLazyFill. REGION_NOT_LAZY for an ordinary region. */
  async startFill(ref: RegionRef): Promise<string> {
    const fill = this.fillOf(ref);
    await fill.start();
    return fill.regionId;
  }

  /** RecoverLazyRegion. REGION_NOT_LAZY for an ordinary region. */
  async recover(ref: RegionRef, address: string): Promise<string> {
    const fill = this.fillOf(ref);
    await fill.recover(address);
    return fill.regionId;
  }

  /**
   * FetchPages: microseconds waited for `[first, first + count)` to be present; 0 at once for
   * an ordinary region. REGION_OUT_OF_RANGE, REGION_INVALID_ARGUMENT, LAZY_FILL_FAILED.
   */
  fetch(ref: RegionRef, first: number, count: number): Promise<number> {
    const row = findRegion(this.catalog, ref);
    if (count <= 0) {
      throw new MemstoreError('REGION_INVALID_ARGUMENT', 'page_count must be at least 1');
    }
    const pages = row.size / PAGE_BYTES;
    if (first < 0 || first + count > pages) {
      throw new MemstoreError(
        'REGION_OUT_OF_RANGE',
        `pages ${first}+${count} lie outside region "${row.name}" (${pages} pages)`,
      );
    }
    const fill = this.fills.get(row.id);
    if (fill === undefined) return Promise.resolve(0);
    return fill.fetch(first, count);
  }

  /**
   * DeleteRegion of any region: the region store's rules and, for a lazy region, its fill
   * stopped (pending requests fail), its present map removed and its source closed (not
   * complete, unless it was).
   */
  delete(ref: RegionRef): void {
    const row = findRegion(this.catalog, ref);
    const fill = this.fills.get(row.id);
    this.regions.delete({ id: row.id });
    if (fill === undefined) return;
    this.fills.delete(row.id);
    fill.present.setState(PresentState.Failed);
    fill.dispose(
      new MemstoreError('REGION_NOT_FOUND', `region "${row.name}" was deleted while it filled`),
    );
    rmSync(presentPathOf(row.path), { force: true });
    void fill
      .closeSource()
      .catch((err: unknown) =>
        this.logger.warn(
          { region: row.id, error: (err as Error).message },
          'lazy region deleted; its source memstore was not told (its page source stays open)',
        ),
      );
  }

  /** Stops every fill (memstore stopping); the catalog keeps where each stood. */
  close(): void {
    for (const fill of this.fills.values()) {
      fill.dispose(
        new MemstoreError(
          'LAZY_SOURCE_UNAVAILABLE',
          'memstore is stopping; ask again after its restart',
        ),
      );
    }
    this.fills.clear();
  }

  private restore(row: LazyRegionRow): void {
    const region = this.catalog.getById(row.regionId);
    if (region === undefined) return;
    const pages = row.sourceSize / PAGE_BYTES;
    if (row.state === 'complete') {
      if (row.sourceClosed) {
        this.catalog.lazy.deleteLazy(row.regionId);
        rmSync(row.presentPath, { force: true });
        return;
      }
    }
    let presentMapping: Mapping;
    let present: PresentMap;
    try {
      presentMapping = mapFile(row.presentPath, { sharing: 'shared' });
      present = PresentMap.open(presentMapping.buffer, pages);
    } catch (err) {
      // The present map is gone (an OS restart took the tmpfs): nothing says which pages came.
      this.catalog.lazy.updateLazy(row.regionId, {
        state: 'failed',
        error: `present map unreadable at start (${(err as Error).message})`,
      });
      this.logger.error(
        { region: row.regionId, err },
        'lazy region failed: its present map is lost',
      );
      return;
    }
    const regionFd =
      row.state === 'complete' || region.lostAt !== null ? null : openSync(region.path, 'r+');
    let current = row;
    if (row.state === 'filling') {
      this.catalog.lazy.updateLazy(row.regionId, {
        state: 'paused',
        error: 'memstore restarted during the fill',
      });
      current = this.catalog.lazy.getLazy(row.regionId)!;
      present.setState(PresentState.SourcePaused);
    }
    const fill = new LazyFill(this.fillDeps(), current, regionFd, presentMapping, present);
    this.fills.set(row.regionId, fill);
    if (current.state === 'complete') {
      fill.resumeClose();
      return;
    }
    if (current.state === 'paused') {
      // Carry on by itself; stays paused (for RecoverLazyRegion) if the source is away.
      setImmediate(() => {
        fill
          .recover()
          .catch((err: unknown) =>
            this.logger.warn(
              { region: row.regionId, error: (err as Error).message },
              'lazy fill not resumed at start: the source is away; RecoverLazyRegion resumes it',
            ),
          );
      });
    }
  }

  private fillOf(ref: RegionRef): LazyFill {
    const row = findRegion(this.catalog, ref);
    const fill = this.fills.get(row.id);
    if (fill === undefined) {
      throw new MemstoreError(
        'REGION_NOT_LAZY',
        `region "${row.name}" is an ordinary region, not filled from another memstore`,
      );
    }
    return fill;
  }

  private requireConnector(): SourceConnector {
    if (this.connector === null) {
      throw new MemstoreError(
        'LAZY_SOURCE_UNAVAILABLE',
        'this memstore was opened without its network side; lazy regions need a running memstore',
      );
    }
    return this.connector;
  }

  private fillDeps() {
    return {
      catalog: this.catalog,
      logger: this.logger,
      connector: this.requireConnector(),
      tls: this.tls,
      observer: () => this.observer,
      now: this.now,
    };
  }
}
