import type { Logger } from '@handoff/service';
import { randomUUID } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Catalog } from '../catalog/catalog.js';
import type { RegionRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { failpoint } from '../failpoints.js';
import type { RegionStore } from '../regions/region-store.js';
import { PAGE_SIZE } from '../regions/size.js';
import { unsealFileMode, type Templates } from '../templates/templates.js';
import { ownedBlockRows } from './block-rows.js';
import { cloneChainOf } from './chain.js';
import { ComposedReader, composedDataSpans, cutSpans, type ComposeLayer } from './compose.js';
import { stateFileName, validateSnapshotName } from './naming.js';
import type { Snapshot, SnapshotRef } from './snapshot.js';
import type { SnapshotStore } from './snapshot-store.js';
import { findSnapshot } from './snapshot-view.js';
import { removeStateFile, writeStateFile } from './state-file.js';

/** What a flatten needs of the memstore. */
export interface FlattenDeps {
  readonly catalog: Catalog;
  readonly regions: RegionStore;
  readonly templates: Templates;
  readonly snapshots: SnapshotStore;
  readonly logger: Logger;
}

/** Pages copied per read/write (1 MiB). */
const COPY_PAGES = 256;

/**
 * FlattenSnapshot: writes the layer `ref` and the layers below it into one standalone snapshot
 * named `name` — new persistent regions of its own (each block composed through its chain:
 * the root's data, then each layer's pages, bottom to top; pages that are holes everywhere
 * stay holes), the same VM spec, device state (a new, CRC-checked state file) and template
 * flag, kind FULL, no parent. The original stays.
 *
 * Crash-safe like ImportSnapshot: until one transaction commits, marks them active, seals them
 * and records the snapshot, the new regions are 'creating' rows (invisible; start-up rolls them
 * back) and the state file has no row (start-up removes it); a failure removes both at once.
 * SNAPSHOT_INVALID (a standalone snapshot, a bad name), SNAPSHOT_EXISTS, SNAPSHOT_NOT_FOUND,
 * SNAPSHOT_CORRUPT, REGION_LOST, REGION_NO_SPACE, REGION_IO_FAILED.
 */
export async function flattenSnapshot(
  deps: FlattenDeps,
  ref: SnapshotRef,
  name: string,
): Promise<Snapshot> {
  validateSnapshotName(name);
  const source = findSnapshot(deps.catalog, ref);
  if (source.parentId === null) {
    throw new MemstoreError(
      'SNAPSHOT_INVALID',
      `snapshot "${source.name}" is standalone (it has no parent); there is nothing to flatten — ` +
        'restore or clone it as it is',
    );
  }
  deps.snapshots.assertNameFree(name);
  const { snapshot, deviceState } = deps.snapshots.get({ id: source.id }, true);
  const chains = snapshot.blocks.map((b) => {
    const region = deps.catalog.getById(b.regionId);
    if (region === undefined) {
      throw new MemstoreError(
        'SNAPSHOT_CORRUPT',
        `snapshot "${snapshot.name}": the region of block "${b.id}" is missing from the catalog`,
      );
    }
    return cloneChainOf(deps.catalog, region).map((c) => ({ path: c.path, pages: c.pages }));
  });

  const id = randomUUID();
  const pending: RegionRow[] = [];
  const statePath = join(deps.snapshots.stateDir, stateFileName(deps.catalog.catalogId, id));
  let stateWritten = false;
  const sealed: string[] = [];
  let dataBytes = 0;
  try {
    for (const [i, b] of snapshot.blocks.entries()) {
      const row = deps.regions.createPending({
        name: `${name.slice(0, 45)}.b${i}-${id.slice(0, 8)}`,
        size: b.size,
        kind: 'persistent',
      });
      pending.push(row);
      dataBytes += await copyComposed(chains[i]!, b.size, row.path);
    }
    writeStateFile(statePath, deviceState!);
    stateWritten = true;
    failpoint('flatten-after-regions');
    deps.catalog.transaction(() => {
      deps.snapshots.assertNameFree(name);
      const rows = pending.map((r) => {
        if (!deps.catalog.markActive(r.id))
          throw new Error(`internal: region ${r.id} is not pending`);
        const row = deps.templates.sealWithin(r.id, undefined);
        sealed.push(row.path);
        return row;
      });
      failpoint('flatten-before-commit');
      deps.snapshots.insertRecord({
        row: {
          ...source,
          id,
          name,
          kind: 'full',
          createdAt: Date.now(),
          statePath,
          parentId: null,
        },
        blocks: ownedBlockRows(id, snapshot.blocks, rows),
      });
    });
  } catch (err) {
    for (const p of sealed) unsealFileMode(p);
    for (const r of pending) deps.regions.discardPending(r);
    if (stateWritten) removeStateFile(statePath);
    throw MemstoreError.from(err, `flattening snapshot "${snapshot.name}" into "${name}"`);
  }
  deps.logger.info(
    { snapshot: id, name, from: snapshot.name, depth: snapshot.depth, dataBytes },
    'snapshot flattened',
  );
  return deps.snapshots.get({ id }).snapshot;
}

/**
 * Writes the composed block into the (new, sparse) file at `to`, skipping pages that are holes
 * in every file of the chain, then flushes it. Returns the bytes written.
 */
async function copyComposed(
  chain: readonly ComposeLayer[],
  size: number,
  to: string,
): Promise<number> {
  const spans = cutSpans(composedDataSpans(chain, size), COPY_PAGES);
  const reader = await ComposedReader.open(chain);
  let out: FileHandle | undefined;
  let written = 0;
  try {
    out = await open(to, 'r+');
    const buffer = new Uint8Array(COPY_PAGES * PAGE_SIZE);
    for (const span of spans) {
      await reader.read(buffer, span);
      const length = span.pageCount * PAGE_SIZE;
      let done = 0;
      while (done < length) {
        const { bytesWritten } = await out.write(
          buffer,
          done,
          length - done,
          span.firstPage * PAGE_SIZE + done,
        );
        done += bytesWritten;
      }
      written += length;
    }
    await out.datasync();
  } catch (err) {
    throw MemstoreError.from(err, `copying the composed pages into ${to}`);
  } finally {
    await reader.close();
    await out?.close().catch(() => undefined);
  }
  return written;
}
