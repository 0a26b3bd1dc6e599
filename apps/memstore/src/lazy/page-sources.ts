import type { Logger } from '@handoff/service';
import { mapFile, type Mapping } from '@handoff/shm';
import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Catalog } from '../catalog/catalog.js';
import type { PageSourceRow } from '../catalog/lazy-table.js';
import type { RegionRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import type { LeaseManager } from '../leases/lease-manager.js';
import type { RegionStore } from '../regions/region-store.js';
import { pageSourceHolder } from './holder.js';
import { PAGE_BYTES } from './wire.js';

/**
 * The source host's side of a lazy region: page sources. A page source lets one reader (another
 * memstore, named by its certificate) read one region over the page channel. OpenPageSource
 * checks the region and hands out a token; ClaimPageSource moves the region's writer lease to
 * the page source (the source VM has stopped: nobody writes the region any more), after which the
 * page channel serves it; ClosePageSource ends it (and, when every page arrived, deletes the
 * region). Rows live in the catalog (`page_sources`) so a restart of this memstore keeps the
 * source and its lease; tokens live in memory only (after a restart the reader opens again).
 */

/** The reader id of a caller that has no certificate (`--insecure` clusters). */
export const INSECURE_READER = 'memstore';

/** What OpenPageSource answers. */
export interface OpenedPageSource {
  readonly sourceId: string;
  readonly token: string;
  readonly pageAddress: string;
}

/**
 * A page source a page-channel connection was admitted to: its region's pages, served only
 * once the source holds the region's lease (before, the source VM may still write them).
 */
export interface ServedSource {
  readonly id: string;
  readonly pages: number;
  /**
   * The region file's bytes (a shared mapping: no copy on the way to the socket) once the page
   * source claimed the region; null before (nothing may be served yet).
   */
  served(): Uint8Array<SharedArrayBuffer> | null;
}

interface LiveSource {
  token: Buffer;
  reader: string;
  mapping: Mapping | null;
  /** Connections serving it: closed with it. */
  readonly connections: Set<{ destroy(): void }>;
}

export class PageSources {
  private readonly live = new Map<string, LiveSource>();

  constructor(
    private readonly catalog: Catalog,
    private readonly regions: RegionStore,
    private readonly leases: LeaseManager,
    private readonly logger: Logger,
    /** The page channel's address (`host:port` or `unix:/path`); '' when not served. */
    private readonly pageAddress: () => string,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * OpenPageSource: checks the region (found, not lost, same identity and size) and answers a
   * page source for `reader` — the same id when this reader already has one over the region
   * (a re-open after a restart), with a fresh token (the previous one stops working).
   */
  open(
    reader: string,
    req: { regionId: string; identity: string; size: number },
  ): OpenedPageSource {
    const address = this.pageAddress();
    if (address === '') {
      throw new MemstoreError(
        'LAZY_SOURCE_UNAVAILABLE',
        'this memstore serves no page channel (--page-channel off); start it with one',
      );
    }
    const row = this.regionRow(req.regionId);
    if (row.identity !== req.identity || row.size !== req.size) {
      throw new MemstoreError(
        'REGION_IDENTITY_MISMATCH',
        `region ${row.id} is not the one referenced (identity ${row.identity}, ${row.size} bytes; ` +
          `the reference says ${JSON.stringify(req.identity.slice(0, 64))}, ${req.size} bytes): ` +
          'the file was recreated; take a new reference',
      );
    }
    let src = this.catalog.lazy.sourceOf(row.id, reader);
    if (src === undefined) {
      src = {
        id: randomUUID(),
        regionId: row.id,
        reader,
        openedAt: this.now(),
        claimedEpoch: null,
      };
      this.catalog.lazy.insertSource(src);
      this.logger.info({ source: src.id, region: row.id, reader }, 'page source opened');
    }
    const token = randomBytes(32).toString('base64url');
    const live = this.live.get(src.id);
    if (live !== undefined) {
      live.token = Buffer.from(token);
    } else {
      this.live.set(src.id, {
        token: Buffer.from(token),
        reader,
        mapping: null,
        connections: new Set(),
      });
    }
    return { sourceId: src.id, token, pageAddress: address };
  }

  /**
   * ClaimPageSource: moves the region's writer lease from whoever holds it at `epoch` (or
   * nobody, released at `epoch`) to the page source, at epoch + 1. Idempotent for the page
   * source that holds it already. LEASE_STALE_EPOCH, PAGE_SOURCE_NOT_FOUND.
   */
  claim(reader: string, sourceId: string, epoch: number): number {
    const src = this.sourceRow(reader, sourceId);
    const holder = pageSourceHolder(reader, sourceId);
    const row = this.regionRow(src.regionId);
    if (row.leaseHolder === holder) return row.leaseEpoch;
    if (row.leaseEpoch !== epoch) {
      throw new MemstoreError(
        'LEASE_STALE_EPOCH',
        `region "${row.name}" is at lease epoch ${row.leaseEpoch}, not ${epoch}: the source VM ` +
          'moved on (another migration, a restart); its pages are not the ones referenced',
      );
    }
    const lease =
      row.leaseHolder === null
        ? this.leases.acquire({ id: row.id }, holder)
        : this.leases.transfer({ id: row.id }, row.leaseHolder, epoch, holder);
    // A record for people: the lease (committed durably above) is what says who holds the
    // region, so this commit need not wait for the disk inside the guest's pause.
    this.catalog.transaction(
      () => this.catalog.lazy.setClaimedEpoch(src.id, lease.epoch),
      'process-crash',
    );
    this.logger.info(
      { source: src.id, region: row.id, reader, epoch: lease.epoch },
      'page source claimed the region',
    );
    return lease.epoch;
  }

  /**
   * ClosePageSource: the reader is done. `complete`: the region is deleted here (every page is
   * on the reader's host now); else the page source's lease, if it took one, is released and the
   * region kept. Unknown sources are already closed (idempotent).
   */
  close(reader: string, sourceId: string, complete: boolean): void {
    const src = this.catalog.lazy.getSource(sourceId);
    if (src === undefined || src.reader !== reader) {
      this.dropLive(sourceId);
      return;
    }
    const holder = pageSourceHolder(reader, sourceId);
    const row = this.catalog.getById(src.regionId);
    this.dropLive(sourceId);
    if (row !== undefined && row.leaseHolder === holder) {
      this.leases.release({ id: row.id }, holder, row.leaseEpoch);
    }
    this.catalog.lazy.deleteSource(sourceId);
    if (complete && row !== undefined) {
      this.regions.delete({ id: row.id });
      this.logger.info(
        { source: sourceId, region: row.id },
        'page source complete: region deleted',
      );
    } else {
      this.logger.info({ source: sourceId, region: src.regionId }, 'page source closed');
    }
  }

  /**
   * The page channel's check of a hello: the token is the source's current one and the peer (its
   * certificate's id; null over a unix socket) is its reader. A reader may connect before its
   * claim (to have the connection ready at the switchover); pages are served only after it
   * ({@link ServedSource.served}). Throws a MemstoreError saying why not.
   */
  admit(sourceId: string, token: string, peer: string | null): ServedSource & LiveSourceHandle {
    const live = this.live.get(sourceId);
    const given = Buffer.from(token);
    if (
      live === undefined ||
      given.length !== live.token.length ||
      !timingSafeEqual(given, live.token)
    ) {
      throw new MemstoreError(
        'PAGE_SOURCE_NOT_FOUND',
        'no page source with that id and token: open it again (OpenPageSource)',
      );
    }
    if (peer !== null && peer !== live.reader) {
      throw new MemstoreError(
        'LEASE_WRONG_HOLDER',
        `this page source was opened for memstore ${live.reader}, not ${peer}`,
      );
    }
    const src = this.catalog.lazy.getSource(sourceId);
    const row = src === undefined ? undefined : this.catalog.getById(src.regionId);
    if (row === undefined) {
      throw new MemstoreError('PAGE_SOURCE_NOT_FOUND', "the page source's region is gone");
    }
    const holder = pageSourceHolder(live.reader, sourceId);
    let bytes: Uint8Array<SharedArrayBuffer> | null = null;
    return {
      id: sourceId,
      pages: row.size / PAGE_BYTES,
      served: () => {
        if (bytes !== null) return bytes;
        // Looked up until the claim is seen once; from then on the lease is the source's.
        if (this.catalog.getById(row.id)?.leaseHolder !== holder) return null;
        live.mapping ??= mapFile(row.path, { sharing: 'shared' });
        bytes = new Uint8Array(live.mapping.buffer, 0, row.size);
        return bytes;
      },
      track: (c) => {
        live.connections.add(c);
        return () => live.connections.delete(c);
      },
    };
  }

  /** Closes every mapping and connection (memstore stopping). */
  closeAll(): void {
    for (const id of [...this.live.keys()]) this.dropLive(id);
  }

  private dropLive(sourceId: string): void {
    const live = this.live.get(sourceId);
    if (live === undefined) return;
    this.live.delete(sourceId);
    for (const c of live.connections) c.destroy();
    live.mapping?.close();
  }

  private sourceRow(reader: string, sourceId: string): PageSourceRow {
    const src = this.catalog.lazy.getSource(sourceId);
    if (src === undefined || src.reader !== reader) {
      throw new MemstoreError(
        'PAGE_SOURCE_NOT_FOUND',
        `no page source ${JSON.stringify(sourceId.slice(0, 64))} of memstore ${reader}: open one ` +
          '(OpenPageSource)',
      );
    }
    return src;
  }

  private regionRow(regionId: string): RegionRow {
    const row = this.catalog.getById(regionId);
    if (row === undefined || row.state === 'creating') {
      throw new MemstoreError(
        'REGION_NOT_FOUND',
        `no region with id ${JSON.stringify(regionId.slice(0, 64))} on this memstore`,
      );
    }
    if (row.lostAt !== null) {
      throw new MemstoreError('REGION_LOST', `region "${row.name}" lost its file; it has no pages`);
    }
    return row;
  }
}

/** Lets the page channel register a connection, closed with its source. */
export interface LiveSourceHandle {
  track(connection: { destroy(): void }): () => void;
}
