import type { Catalog } from '../catalog/catalog.js';
import { MemstoreError } from '../errors.js';
import type { ExportHeader } from './export-format.js';
import { PAGE_BYTES } from './export-format.js';
import { exportLength, pageRunsOf, type ExportPlan, type ExportSource } from './export-writer.js';
import type { SnapshotRef } from './snapshot.js';
import type { SnapshotStore } from './snapshot-store.js';

/**
 * Decides what an export of the snapshot `ref` writes: its header, its checked device state,
 * and for each block the runs of its region that hold data. SNAPSHOT_NOT_FOUND,
 * SNAPSHOT_CORRUPT (device state), REGION_LOST, REGION_IO_FAILED.
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
    try {
      return { path: region.path, runs: pageRunsOf(region.path, b.size) };
    } catch (err) {
      throw new MemstoreError(
        'REGION_IO_FAILED',
        `snapshot "${snapshot.name}": cannot find the data of region "${region.name}" (${(err as Error).message}); check its file ${region.path}`,
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
