import type { Catalog } from '../catalog/catalog.js';
import { MemstoreError } from '../errors.js';
import { cloneChainOf } from './chain.js';
import { composedDataSpans, cutSpans } from './compose.js';
import type { ExportHeader } from './export-format.js';
import { MAX_RUN_PAGES, PAGE_BYTES } from './export-format.js';
import { exportLength, type ExportPlan, type ExportSource } from './export-writer.js';
import type { SnapshotRef } from './snapshot.js';
import type { SnapshotStore } from './snapshot-store.js';

/**
 * Decides what an export of the snapshot `ref` writes: its header, its checked device state,
 * and for each block the runs that hold data. A layer is exported composed — each block read
 * through its chain, the parent's pages under the layer's — so the file is standalone and its
 * format is the one of every snapshot; it imports as a standalone snapshot. SNAPSHOT_NOT_FOUND,
 * SNAPSHOT_CORRUPT (device state or chain), REGION_LOST, REGION_IO_FAILED.
 */
export function planExport(
  catalog: Catalog,
  snapshots: SnapshotStore,
  ref: SnapshotRef,
): ExportPlan {
  const { snapshot, deviceState } = snapshots.get(ref, true);
  const sources: ExportSource[] = snapshot.blocks.map((b) => {
    const region = catalog.getById(b.regionId);
    if (region === undefined || region.lostAt !== null) {
      throw new MemstoreError(
        'REGION_LOST',
        `snapshot "${snapshot.name}": the region of block "${b.id}" has lost its file; the snapshot cannot be exported — delete it`,
      );
    }
    const layers = cloneChainOf(catalog, region).map((c) => ({ path: c.path, pages: c.pages }));
    try {
      return { layers, runs: cutSpans(composedDataSpans(layers, b.size), MAX_RUN_PAGES) };
    } catch (err) {
      throw new MemstoreError(
        'REGION_IO_FAILED',
        `snapshot "${snapshot.name}": cannot find the data of block "${b.id}" (${(err as Error).message}); check the files of its regions`,
        { cause: err },
      );
    }
  });
  const header: ExportHeader = {
    name: snapshot.name,
    kind: snapshot.kind,
    template: snapshot.template,
    vmName: snapshot.vmName,
    createdAt: snapshot.createdAt.getTime(),
    vmSpec: snapshot.vmSpec,
    deviceStateBytes: deviceState!.length,
    deviceStateCrc32c: snapshot.deviceStateCrc32c,
    blocks: snapshot.blocks.map((b, i) => ({
      id: b.id,
      guestBase: b.guestBase,
      size: b.size,
      runCount: sources[i]!.runs.length,
      storedPages: sources[i]!.runs.reduce((n, r) => n + r.pageCount, 0),
    })),
  };
  return {
    header,
    deviceState: deviceState!,
    sources,
    totalBytes: exportLength(header, deviceState!.length, sources),
  };
}

/** Bytes of page data a plan carries (for logs). */
export function exportedDataBytes(plan: ExportPlan): number {
  return plan.header.blocks.reduce((n, b) => n + b.storedPages * PAGE_BYTES, 0);
}
