import { PresentState, type PresentMap } from '@handoff/bitmap';
import type { Logger, TlsMaterial } from '@handoff/service';
import type { Mapping } from '@handoff/shm';
import type { Catalog } from '../catalog/catalog.js';
import type { LazyRegionRow, LazyRowState } from '../catalog/lazy-table.js';
import { MemstoreError } from '../errors.js';
import { FillStats } from './fill-stats.js';
import { PageConnection, type PageSink } from './page-connection.js';
import type { OpenedPageSource } from './page-sources.js';
import type { SourceConnector, SourceMemstore } from './source.js';
import { MAX_REQUEST_PAGES, PAGE_BYTES } from './wire.js';
import { closeSync, writeSync } from 'node:fs';

/** Pages the background connection keeps asked for and not yet answered (16 MiB). */
export const BACKGROUND_WINDOW_PAGES = 4096;
/** Pages of one background request (1 MiB). */
const BACKGROUND_REQUEST_PAGES = MAX_REQUEST_PAGES;
/** Pages the background fill takes from the neighbourhood of a fault before going back (2 MiB). */
export const FAULT_NEIGHBOURHOOD_PAGES = 512;
/**
 * How long asked-for pages may go without a byte arriving before the source counts as lost (a
 * host that vanished without closing the connection).
 */
export const STALL_TIMEOUT_MS = 5000;
/** How often a filling fill checks for a stall. */
const STALL_CHECK_MS = 1000;
/** How often a completed fill retries telling an unreachable source (ClosePageSource). */
const CLOSE_RETRY_MS = 2000;

/**
 * What StartLazyFill may hear from the source that means its pages are gone for this reference
 * (the VM moved on, the region was recreated or deleted): the fill fails instead of waiting.
 */
const FATAL_AT_START: ReadonlySet<string> = new Set([
  'LEASE_STALE_EPOCH',
  'REGION_IDENTITY_MISMATCH',
  'REGION_NOT_FOUND',
  'REGION_LOST',
]);

/** Bytes gathered from small socket chunks before one write into the region file. */
const STAGING_BYTES = 1024 * 1024;

/** A connection's gathered bytes: `length` bytes for the region at byte `start`. */
interface Staging {
  buf: Buffer | null;
  start: number;
  length: number;
}

/** Where a fill stands, as reported (Region.lazy). */
export interface LazyFillStatus {
  readonly source: {
    readonly memstore: string;
    readonly regionId: string;
    readonly identity: string;
    readonly size: number;
    readonly epoch: number;
  };
  readonly state: LazyRowState;
  readonly presentPages: number;
  readonly totalPages: number;
  readonly presentPath: string;
  readonly demandPages: number;
  readonly backgroundPages: number;
  readonly faultRequests: number;
  readonly faultP50Us: number;
  readonly faultP99Us: number;
  readonly bytesPerSecond: number;
  readonly startedAt: Date | undefined;
  readonly completedAt: Date | undefined;
  readonly error: string;
}

/** Hooks for the memstore's metrics. */
export interface LazyObserver {
  pages(kind: 'demand' | 'background', n: number): void;
  /** A page request that waited, in seconds. */
  fault(seconds: number): void;
}

export const NO_OBSERVER: LazyObserver = { pages: () => {}, fault: () => {} };

interface Waiter {
  readonly first: number;
  readonly count: number;
  readonly at: number;
  readonly resolve: (us: number) => void;
  readonly reject: (err: Error) => void;
}

/** What a fill needs from its memstore. */
export interface LazyFillDeps {
  readonly catalog: Catalog;
  readonly logger: Logger;
  readonly connector: SourceConnector;
  readonly tls: TlsMaterial | null;
  readonly observer: () => LazyObserver;
  readonly now: () => number;
}

/**
 * One lazy region's fill on the target host. Pages arrive over two page-channel connections:
 * one for page requests (FetchPages: asked for at once, ahead of everything else) and one for
 * the background, which asks in address order with a bounded window, first from the
 * neighbourhood of the last fault. Arriving bytes are copied straight into the region's shared
 * mapping, never into a page already present (a vCPU may write it by then); then the pages'
 * bits are set in the present map (the ordering contract of libs/bitmap present-map.ts). When
 * every page is present the fill completes and tells the source (ClosePageSource complete).
 * A connection lost pauses the fill (SOURCE_PAUSED): requests wait for {@link recover}.
 */
export class LazyFill {
  private row: LazyRegionRow;
  readonly pages: number;
  /** The region file, open read-write while pages may arrive; -1 once closed. */
  private regionFd: number;
  private source: SourceMemstore | null = null;
  private opened: OpenedPageSource | null = null;
  private demand: PageConnection | null = null;
  private background: PageConnection | null = null;
  private readonly waiters = new Set<Waiter>();
  private readonly demandAsked: Uint8Array;
  private readonly backgroundAsked: Uint8Array;
  private cursor = 0;
  private hint = 0;
  private hintBudget = 0;
  private backgroundInFlight = 0;
  /** The background's limit (bytes/s, 0: none), bytes it asked for since `rateFrom`, and its wake-up. */
  private rateLimit = 0;
  private rateFrom = 0;
  private rateAsked = 0;
  private rateTimer: NodeJS.Timeout | null = null;
  private busy: Promise<void> | null = null;
  /** The page connections made at creation, for the start (null once used or without). */
  private preconnected: Promise<PagePair> | null = null;
  private closeTimer: NodeJS.Timeout | null = null;
  private stallTimer: NodeJS.Timeout | null = null;
  /** When a byte last arrived (performance.now()). */
  private lastArrival = 0;
  private disposed = false;
  readonly stats = new FillStats();

  constructor(
    private readonly deps: LazyFillDeps,
    row: LazyRegionRow,
    regionFd: number | null,
    private readonly presentMapping: Mapping,
    readonly present: PresentMap,
  ) {
    this.row = row;
    this.pages = row.sourceSize / PAGE_BYTES;
    this.regionFd = regionFd ?? -1;
    this.demandAsked = new Uint8Array(this.pages);
    this.backgroundAsked = new Uint8Array(this.pages);
  }

  get regionId(): string {
    return this.row.regionId;
  }

  get state(): LazyRowState {
    return this.row.state;
  }

  /** The report of GetRegion / ListRegions. */
  status(): LazyFillStatus {
    const r = this.row;
    return {
      source: {
        memstore: r.sourceMemstore,
        regionId: r.sourceRegionId,
        identity: r.sourceIdentity,
        size: r.sourceSize,
        epoch: r.sourceEpoch,
      },
      state: r.state,
      presentPages: r.state === 'complete' ? this.pages : this.present.presentPages,
      totalPages: this.pages,
      presentPath: r.presentPath,
      demandPages: this.stats.demandPages,
      backgroundPages: this.stats.backgroundPages,
      faultRequests: this.stats.faultRequests,
      faultP50Us: this.stats.quantileUs(0.5),
      faultP99Us: this.stats.quantileUs(0.99),
      bytesPerSecond: this.stats.bytesPerSecond(),
      startedAt: r.startedAt === null ? undefined : new Date(r.startedAt),
      completedAt: r.completedAt === null ? undefined : new Date(r.completedAt),
      error: r.error,
    };
  }

  /**
   * The page source opened at creation (CreateLazyRegion). Its two page-channel connections are
   * made now, while the source VM still runs (the source serves nothing before the claim), so
   * that StartLazyFill, inside the guest's pause, only claims the region.
   */
  adopt(source: SourceMemstore, opened: OpenedPageSource): void {
    this.source = source;
    this.opened = opened;
    const ready = this.connectPair(opened);
    ready.catch(() => undefined); // connected again at the start if this failed
    this.preconnected = ready;
  }

  /** Both page-channel connections to `opened`, made at once; neither is left open on failure. */
  private async connectPair(opened: OpenedPageSource): Promise<PagePair> {
    const one = (kind: 'demand' | 'background') =>
      PageConnection.connect({
        address: opened.pageAddress,
        tls: this.deps.tls,
        sourceId: opened.sourceId,
        token: opened.token,
        pages: this.pages,
        sink: this.sink(kind),
      });
    const [demand, background] = await Promise.allSettled([one('demand'), one('background')]);
    if (demand.status === 'fulfilled' && background.status === 'fulfilled') {
      return { demand: demand.value, background: background.value };
    }
    for (const c of [demand, background]) if (c.status === 'fulfilled') c.value.close();
    throw (
      demand.status === 'rejected' ? demand.reason : (background as PromiseRejectedResult).reason
    ) as Error;
  }

  /**
   * StartLazyFill: claims the source region at the epoch of the reference, connects and starts.
   * Idempotent once started (a fill that runs, paused or completed is reported as it is).
   */
  async start(): Promise<void> {
    if (this.busy !== null) return this.busy;
    if (this.row.state !== 'waiting') return;
    this.busy = this.connect(this.row.sourceMemstore)
      .catch((err: unknown) => {
        // The reference names pages the source no longer has: they will never come.
        if (MemstoreError.is(err) && FATAL_AT_START.has(err.code)) this.fail(err.message);
        throw err;
      })
      .finally(() => (this.busy = null));
    return this.busy;
  }

  /**
   * RecoverLazyRegion: reconnects a paused fill (re-open and an idempotent claim), at `address`
   * when the source memstore moved, and goes on with the pages still missing.
   */
  async recover(address?: string): Promise<void> {
    if (this.busy !== null) await this.busy.catch(() => {});
    if (this.row.state === 'failed') {
      throw new MemstoreError('LAZY_FILL_FAILED', `the fill failed: ${this.row.error}`);
    }
    if (this.row.state === 'complete' || this.row.state === 'waiting') {
      if (address !== undefined && address !== '' && this.row.state === 'waiting') {
        this.update({ state: 'waiting', sourceMemstore: address });
      }
      return;
    }
    if (this.row.state === 'filling' && this.demand !== null) return;
    const to = address !== undefined && address !== '' ? address : this.row.sourceMemstore;
    this.busy = this.connect(to).finally(() => (this.busy = null));
    return this.busy;
  }

  /**
   * FetchPages: resolves with the microseconds waited once every page of the range is present
   * (0 when it already was). Waits while the fill is waiting or paused.
   */
  fetch(first: number, count: number): Promise<number> {
    if (this.row.state === 'failed') {
      return Promise.reject(
        new MemstoreError(
          'LAZY_FILL_FAILED',
          `the fill of this region failed (${this.row.error}); its missing pages will not come`,
        ),
      );
    }
    if (this.row.state === 'complete' || this.present.allPresent(first, count)) {
      this.stats.fault(0);
      return Promise.resolve(0);
    }
    return new Promise<number>((resolve, reject) => {
      this.waiters.add({ first, count, at: performance.now(), resolve, reject });
      if (this.row.state === 'filling') {
        this.askDemand(first, count);
        this.hint = first + count;
        this.hintBudget = FAULT_NEIGHBOURHOOD_PAGES;
        this.pumpBackground();
      }
    });
  }

  /** After a restart: a completed fill whose source was not told yet tells it now. */
  resumeClose(): void {
    if (this.row.state === 'complete') void this.tellSourceComplete();
  }

  /** Stops for good: the region was deleted (requests fail) or memstore stops (they fail too). */
  dispose(reason: MemstoreError): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.closeTimer !== null) clearTimeout(this.closeTimer);
    if (this.rateTimer !== null) clearTimeout(this.rateTimer);
    closeLater(this.preconnected);
    this.preconnected = null;
    this.dropConnections();
    for (const w of this.waiters) w.reject(reason);
    this.waiters.clear();
    this.closeRegionFile();
    this.presentMapping.close();
    this.source?.dispose();
    this.source = null;
  }

  /** The deleted region's source is told nothing more will be read (best effort). */
  async closeSource(): Promise<void> {
    const source = this.source ?? this.deps.connector(this.row.sourceMemstore);
    try {
      await source.close(this.opened?.sourceId ?? this.row.sourceId, this.row.state === 'complete');
    } finally {
      source.dispose();
      this.source = null;
    }
  }

  private async connect(address: string): Promise<void> {
    const log = this.deps.logger;
    this.dropConnections();
    if (this.source === null || address !== this.row.sourceMemstore) {
      this.source?.dispose();
      this.source = this.deps.connector(address);
    }
    const source = this.source;
    const r = this.row;
    const opened =
      this.opened !== null && this.row.state === 'waiting'
        ? this.opened
        : await source.open({
            regionId: r.sourceRegionId,
            identity: r.sourceIdentity,
            size: r.sourceSize,
          });
    this.opened = opened;
    const early = this.preconnected;
    this.preconnected = null;
    try {
      await source.claim(opened.sourceId, r.sourceEpoch);
    } catch (err) {
      closeLater(early);
      throw err;
    }
    let pair = early !== null ? await early.catch(() => null) : null;
    if (pair !== null && (!pair.demand.open || !pair.background.open)) {
      closePair(pair);
      pair = null;
    }
    pair ??= await this.connectPair(opened);
    if (this.disposed) {
      closePair(pair);
      return;
    }
    const { demand, background } = pair;
    this.demand = demand;
    this.background = background;
    const first = this.row.startedAt === null;
    this.update({
      state: 'filling',
      sourceMemstore: address,
      ...(first ? { startedAt: this.deps.now() } : {}),
    });
    this.present.setState(PresentState.Filling);
    const lost = (which: PageConnection) => (err: Error | null) => {
      if (this.demand !== which && this.background !== which) return; // dropped on purpose
      this.pause(err?.message ?? 'the page channel closed');
    };
    demand.closed = lost(demand);
    background.closed = lost(background);
    if (this.demand === null) return; // lost already: paused
    this.watchForStalls();
    log.info(
      { region: r.regionId, source: opened.sourceId, address: opened.pageAddress },
      first ? 'lazy fill started' : 'lazy fill resumed',
    );
    for (const w of this.waiters) this.askDemand(w.first, w.count);
    this.pumpBackground();
    if (this.present.presentPages === this.pages) this.complete();
  }

  private sink(kind: 'demand' | 'background'): PageSink {
    const stage: Staging = { buf: null, start: 0, length: 0 };
    return {
      data: (first, offset, chunk) => this.copyIn(stage, first * PAGE_BYTES + offset, chunk),
      done: (first, count) => {
        this.flush(stage);
        this.arrived(kind, first, count);
      },
    };
  }

  /**
   * Takes arriving bytes at byte `at` of the region. Small chunks (a TLS socket hands over 16 KiB
   * at a time) are gathered into one write; large ones are written at once.
   */
  private copyIn(stage: Staging, at: number, chunk: Buffer): void {
    this.lastArrival = performance.now();
    if (
      stage.length > 0 &&
      (at !== stage.start + stage.length || stage.length + chunk.length > STAGING_BYTES)
    ) {
      this.flush(stage);
    }
    if (chunk.length >= STAGING_BYTES / 4 && stage.length === 0) {
      this.writeRuns(at, chunk);
      return;
    }
    stage.buf ??= Buffer.allocUnsafe(STAGING_BYTES);
    if (stage.length === 0) stage.start = at;
    chunk.copy(stage.buf, stage.length);
    stage.length += chunk.length;
  }

  private flush(stage: Staging): void {
    if (stage.length === 0) return;
    this.writeRuns(stage.start, stage.buf!.subarray(0, stage.length));
    stage.length = 0;
  }

  /**
   * Writes bytes at byte `start` of the region, skipping every page already present (written by
   * the other connection, and maybe by a vCPU since): the present bits are checked now, just
   * before the write, on the one thread that sets them.
   */
  private writeRuns(start: number, bytes: Buffer): void {
    const fd = this.regionFd;
    if (fd < 0) return;
    const end = start + bytes.length;
    let at = start;
    while (at < end) {
      const page = Math.floor(at / PAGE_BYTES);
      const pageEnd = Math.min(end, (page + 1) * PAGE_BYTES);
      if (this.present.isPresent(page)) {
        at = pageEnd;
        continue;
      }
      // Extend over following missing pages: one write per run (pwrite into the page cache,
      // which every mapping of the file shares).
      let runEnd = pageEnd;
      while (runEnd < end && !this.present.isPresent(runEnd / PAGE_BYTES)) {
        runEnd = Math.min(end, runEnd + PAGE_BYTES);
      }
      writeAll(fd, bytes, at - start, runEnd - at, at);
      at = runEnd;
    }
  }

  private arrived(kind: 'demand' | 'background', first: number, count: number): void {
    if (this.disposed) return;
    const added = this.present.markPresent(first, count);
    this.stats.arrived(count * PAGE_BYTES);
    if (kind === 'demand') {
      this.stats.demandPages += added;
      this.demandAsked.fill(0, first, first + count);
      if (this.demand?.inFlight === 0) this.background?.resume();
    } else {
      this.stats.backgroundPages += added;
      this.backgroundInFlight -= count;
    }
    if (added > 0) this.deps.observer().pages(kind, added);
    this.wake(first, count);
    if (this.present.presentPages >= this.pages) this.complete();
    else if (kind === 'background') this.pumpBackground();
  }

  /** Answers the requests the range `[first, first + count)` may have completed. */
  private wake(first: number, count: number): void {
    if (this.waiters.size === 0) return;
    const now = performance.now();
    for (const w of this.waiters) {
      if (w.first >= first + count || w.first + w.count <= first) continue;
      if (!this.present.allPresent(w.first, w.count)) continue;
      this.waiters.delete(w);
      const us = Math.max(1, Math.round((now - w.at) * 1000));
      this.stats.fault(us);
      this.deps.observer().fault(us / 1e6);
      w.resolve(us);
    }
  }

  /** Asks the demand connection for the missing pages of a range not asked for yet. */
  private askDemand(first: number, count: number): void {
    const conn = this.demand;
    if (conn === null) return;
    const end = first + count;
    let p = first;
    while (p < end) {
      if (this.present.isPresent(p) || this.demandAsked[p] === 1) {
        p++;
        continue;
      }
      const runStart = p;
      while (
        p < end &&
        p - runStart < MAX_REQUEST_PAGES &&
        !this.present.isPresent(p) &&
        this.demandAsked[p] === 0
      ) {
        this.demandAsked[p] = 1;
        p++;
      }
      conn.request(runStart, p - runStart);
      // A page request goes first: the background stops being read (so this thread and the
      // source's serve the request) until the demand connection has answered everything.
      this.background?.pause();
    }
  }

  /**
   * Limits the background fill to `bytesPerSecond` (0: none; max-postcopy-bandwidth). Pages a
   * vmm asks for (FetchPages) are never held back by it.
   */
  limitBackground(bytesPerSecond: number): void {
    this.rateLimit = Math.max(0, bytesPerSecond);
    this.rateFrom = 0;
    this.rateAsked = 0;
  }

  /** Pages the background may ask for now under its limit (Infinity without one). */
  private backgroundBudget(): number {
    if (this.rateLimit === 0) return Infinity;
    const now = performance.now();
    if (this.rateFrom === 0) this.rateFrom = now;
    // One request's worth of burst, then the limit's pace from the first request on.
    const allowed =
      (this.rateLimit * (now - this.rateFrom)) / 1000 + BACKGROUND_REQUEST_PAGES * PAGE_BYTES;
    const pages = Math.floor((allowed - this.rateAsked) / PAGE_BYTES);
    if (pages <= 0 && this.rateTimer === null && !this.disposed) {
      const waitMs = Math.max(1, ((this.rateAsked + PAGE_BYTES - allowed) * 1000) / this.rateLimit);
      this.rateTimer = setTimeout(() => {
        this.rateTimer = null;
        this.pumpBackground();
      }, waitMs);
      this.rateTimer.unref();
    }
    return Math.max(0, pages);
  }

  /** Keeps the background window full: the fault neighbourhood first, then address order. */
  private pumpBackground(): void {
    const conn = this.background;
    if (conn === null) return;
    while (this.backgroundInFlight < BACKGROUND_WINDOW_PAGES) {
      const budget = this.backgroundBudget();
      if (budget <= 0) return;
      const most = Math.min(BACKGROUND_REQUEST_PAGES, budget);
      let run: [number, number] | null = null;
      if (this.hintBudget > 0) {
        run = this.nextRun(this.hint, Math.min(most, this.hintBudget));
        if (run === null) this.hintBudget = 0;
        else {
          this.hint = run[0] + run[1];
          this.hintBudget -= run[1];
        }
      }
      if (run === null) {
        run = this.nextRun(this.cursor, most);
        if (run === null) return;
        this.cursor = run[0] + run[1];
      }
      const [first, count] = run;
      this.backgroundAsked.fill(1, first, first + count);
      this.backgroundInFlight += count;
      this.rateAsked += count * PAGE_BYTES;
      conn.request(first, count);
    }
  }

  /** The next run of missing, not yet background-asked pages at or after `from`. */
  private nextRun(from: number, max: number): [number, number] | null {
    let p = from;
    for (;;) {
      p = p >= this.pages ? -1 : this.present.nextMissing(p);
      if (p < 0) return null;
      if (this.backgroundAsked[p] === 0) break;
      p++;
    }
    const first = p;
    while (
      p < this.pages &&
      p - first < max &&
      this.backgroundAsked[p] === 0 &&
      !this.present.isPresent(p)
    ) {
      p++;
    }
    return [first, p - first];
  }

  /** Pauses the fill when asked-for pages stop arriving (the source host went silent). */
  private watchForStalls(): void {
    this.lastArrival = performance.now();
    this.stallTimer = setInterval(() => {
      const waiting = (this.demand?.inFlight ?? 0) > 0 || (this.background?.inFlight ?? 0) > 0;
      if (!waiting) {
        this.lastArrival = performance.now();
        return;
      }
      const silent = performance.now() - this.lastArrival;
      if (silent > STALL_TIMEOUT_MS) {
        this.pause(`no page arrived for ${Math.round(silent)} ms while pages were asked for`);
      }
    }, STALL_CHECK_MS);
    this.stallTimer.unref();
  }

  /** Gives up for good: requests fail with LAZY_FILL_FAILED. */
  private fail(why: string): void {
    this.dropConnections();
    this.present.setState(PresentState.Failed);
    this.update({ state: 'failed', error: why });
    const err = new MemstoreError('LAZY_FILL_FAILED', `the fill failed: ${why}`);
    for (const w of this.waiters) w.reject(err);
    this.waiters.clear();
    this.deps.logger.warn({ region: this.row.regionId, error: why }, 'lazy fill failed');
  }

  /** The source stopped answering: requests wait for a recover. */
  private pause(why: string): void {
    if (this.row.state !== 'filling' || this.disposed) return;
    this.dropConnections();
    this.present.setState(PresentState.SourcePaused);
    this.update({ state: 'paused', error: `source lost: ${why}` });
    this.deps.logger.warn(
      { region: this.row.regionId, error: why, missing: this.pages - this.present.presentPages },
      'lazy fill paused: the source stopped answering; RecoverLazyRegion resumes it',
    );
  }

  private dropConnections(): void {
    if (this.stallTimer !== null) clearInterval(this.stallTimer);
    this.stallTimer = null;
    const { demand, background } = this;
    this.demand = null;
    this.background = null;
    demand?.close();
    background?.close();
    this.demandAsked.fill(0);
    this.backgroundAsked.fill(0);
    this.backgroundInFlight = 0;
    this.cursor = 0;
    this.hintBudget = 0;
  }

  /** Every page is here: the region is ordinary; the source deletes its copy. */
  private complete(): void {
    if (this.row.state === 'complete') return;
    this.dropConnections();
    this.present.setState(PresentState.Complete);
    this.update({ state: 'complete', completedAt: this.deps.now() });
    this.wake(0, this.pages);
    this.deps.logger.info(
      {
        region: this.row.regionId,
        demandPages: this.stats.demandPages,
        backgroundPages: this.stats.backgroundPages,
      },
      'lazy fill complete',
    );
    this.closeRegionFile();
    void this.tellSourceComplete();
  }

  private closeRegionFile(): void {
    if (this.regionFd >= 0) closeSync(this.regionFd);
    this.regionFd = -1;
  }

  private async tellSourceComplete(): Promise<void> {
    if (this.disposed || this.row.sourceClosed) return;
    try {
      await (this.source ?? this.deps.connector(this.row.sourceMemstore)).close(
        this.opened?.sourceId ?? this.row.sourceId,
        true,
      );
      if (this.disposed) return;
      this.deps.catalog.lazy.markSourceClosed(this.row.regionId);
      this.row = { ...this.row, sourceClosed: true };
      this.source?.dispose();
      this.source = null;
    } catch (err) {
      if (this.disposed) return;
      this.deps.logger.warn(
        { region: this.row.regionId, error: (err as Error).message },
        'lazy fill complete but the source memstore was not told; retrying',
      );
      this.closeTimer = setTimeout(() => void this.tellSourceComplete(), CLOSE_RETRY_MS);
      this.closeTimer.unref();
    }
  }

  private update(change: {
    state: LazyRowState;
    error?: string;
    startedAt?: number;
    completedAt?: number;
    sourceMemstore?: string;
  }): void {
    if (this.disposed) return;
    this.deps.catalog.lazy.updateLazy(this.row.regionId, change);
    this.row = this.deps.catalog.lazy.getLazy(this.row.regionId) ?? this.row;
  }
}

/** Writes `length` bytes of `from` at `offset` to `fd` at `position` (short writes retried). */
function writeAll(
  fd: number,
  from: Buffer,
  offset: number,
  length: number,
  position: number,
): void {
  while (length > 0) {
    const n = writeSync(fd, from, offset, length, position);
    offset += n;
    length -= n;
    position += n;
  }
}

/** The two page-channel connections of a fill. */
interface PagePair {
  readonly demand: PageConnection;
  readonly background: PageConnection;
}

function closePair(p: PagePair): void {
  p.demand.close();
  p.background.close();
}

/** Closes a pair still being connected once it is (nothing when it fails or there is none). */
function closeLater(p: Promise<PagePair> | null): void {
  void p?.then(closePair, () => undefined);
}
