/**
 * A bypass save of a clone: a **layer** over the snapshot it runs from. The clone's own pages
 * are all that differ from that snapshot, so the layer holds only those: one new persistent
 * region per block, of the block's size, sparse (pages not in the layer stay holes), created
 * while the guest still runs; then, paused, the device state is taken and the pages the clone
 * wrote since it started are written into the regions through the files (`pwrite`); the guest
 * resumes as it was (still a clone of its snapshot), and the regions are synced and
 * CreateSnapshot records the layer with `parent` = the clone's snapshot and each block's
 * `layer_pages` = those pages. The pause is the page writes, O(pages written), not O(RAM). Any
 * failure deletes the regions (and resumes the guest if it is still paused).
 *
 * @packageDocumentation
 */
import { PageBitmap } from '@handoff/bitmap';
import { PAGE_SIZE } from '../memory/pages.js';
import type { Snapshot } from '../model/snapshot.js';
import { VmmError } from '../model/vmm-error.js';
import {
  createSaveRegions,
  findSnapshotOfRegions,
  getSnapshot,
  type RamContext,
} from '../ram/index.js';
import { encodeDeviceState } from '../snapshot/index.js';
import type { VmHost } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';
import { createFilledSnapshot } from './full-save.js';
import { copyPages } from './page-copy.js';
import { pauseForSave, resumeAfterCopy } from './pause.js';
import type { SaveRequest, SaveResult } from './types.js';

/**
 * Saves `vm`, whose blocks are all clone RAM (the caller checked), as a layer over the
 * snapshot it runs from.
 *
 * @throws VmmError `VMM_INVALID_ARGUMENT` (the VM's regions are no snapshot's: save it with
 *   --full), `VMM_MEMSTORE_UNAVAILABLE`; memstore's codes (SNAPSHOT_EXISTS, SNAPSHOT_INVALID, ...)
 */
export async function layerSave(host: VmHost, vm: Vm, req: SaveRequest): Promise<SaveResult> {
  const ctx = host.ramContext(vm.name);
  const parent = await parentOf(ctx, vm);
  const regions = await createSaveRegions(ctx, req.snapshot, vm.ramBlocks);
  const wasRunning = vm.currentState === 'running';
  let pausedAtMs = 0;
  let deviceState: Uint8Array;
  let layerPages: PageBitmap[];
  let bytes = 0;
  let pages = 0;
  const t0 = performance.now();
  const marks = { paused: t0, copied: t0, resumed: t0, synced: t0, created: t0 };
  try {
    const stopped = await pauseForSave(vm);
    pausedAtMs = stopped.pausedAtMs;
    marks.paused = performance.now();
    deviceState = encodeDeviceState(stopped.state);
    layerPages = await layerPagesOf(vm);
    for (const [k, b] of vm.ramBlocks.entries()) {
      bytes += await copyPages(b, layerPages[k]!, regions[k]!);
      pages += layerPages[k]!.popcount();
    }
    marks.copied = performance.now();
  } catch (err) {
    await Promise.all(regions.map((r) => r.discard()));
    if (wasRunning) await vm.resume().catch(() => undefined); // as it was; the error is the save's
    throw err;
  }
  // The layer's pages are in its files now, and the guest's later writes go to its own private
  // pages: it need not wait for the sync and CreateSnapshot (unless it is to stop).
  const resumeEarly = wasRunning && !req.stop;
  let info = resumeEarly ? await resumeAfterCopy(vm, regions) : null;
  marks.resumed = performance.now();
  let snapshot: Snapshot;
  try {
    for (const r of regions) await r.finish();
    marks.synced = performance.now();
    snapshot = await createFilledSnapshot(ctx, vm, req, regions, deviceState, {
      parent,
      pages: layerPages,
    });
    marks.created = performance.now();
    bytes += deviceState.length;
  } catch (err) {
    await Promise.all(regions.map((r) => r.discard()));
    if (wasRunning && !resumeEarly) await vm.resume().catch(() => undefined);
    throw err;
  }
  if (req.stop) {
    vm.log.info(
      { snapshot: snapshot.name, parent: parent.name, job: req.jobId, pages, bytes },
      'VM saved as a layer of its own pages over its snapshot; destroying it (stop)',
    );
    await host.destroy(vm.name);
    return { snapshot, pauseUs: 0, bytes, vm: null };
  }
  info ??= vm.info();
  const pauseUs = wasRunning ? Math.max(0, Math.round((vm.lastRunAtMs - pausedAtMs) * 1000)) : 0;
  vm.log.info(
    {
      snapshot: snapshot.name,
      parent: parent.name,
      job: req.jobId,
      pages,
      bytes,
      pauseUs,
      // in ms: the pause (the vCPU's stop, the page writes, the resume), then — while the guest
      // runs — the regions' fsync and CreateSnapshot
      parts: {
        stop: ms(marks.paused - t0),
        copy: ms(marks.copied - marks.paused),
        resume: ms(marks.resumed - marks.copied),
        sync: ms(marks.synced - marks.resumed),
        createSnapshot: ms(marks.created - marks.synced),
      },
    },
    'VM saved as a layer of its own pages over its snapshot',
  );
  return { snapshot, pauseUs, bytes, vm: info };
}

/** Milliseconds, rounded to µs, for logs. */
function ms(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/**
 * The snapshot the clone runs from: the one it was restored or cloned from (by name), else the
 * one whose blocks are its regions (a clone migrated here does not know the name). Its blocks
 * must be the VM's regions.
 *
 * @throws VmmError `VMM_INVALID_ARGUMENT` when no snapshot holds the VM's regions
 */
async function parentOf(ctx: RamContext, vm: Vm): Promise<Snapshot> {
  const regionIds = vm.ramBlocks.map((b) => b.regionRef!.regionId);
  const ours = (s: Snapshot): boolean =>
    s.blocks.length === regionIds.length && s.blocks.every((b, k) => b.regionId === regionIds[k]);
  const runsFrom = vm.info().snapshot;
  if (runsFrom !== '') {
    const named = await getSnapshot(ctx, runsFrom, false).catch((err: unknown) => {
      if ((err as { code?: unknown }).code === 'SNAPSHOT_NOT_FOUND') return null;
      throw err;
    });
    if (named !== null && ours(named.snapshot)) return named.snapshot;
  }
  const found = await findSnapshotOfRegions(ctx, regionIds);
  if (found !== null) return found;
  throw new VmmError(
    'VMM_INVALID_ARGUMENT',
    `VM ${vm.name} is clone RAM of regions (${vm.ramBlocks.map((b) => b.spec.region).join(', ')}) ` +
      'that are no snapshot’s, so a layer has no parent to name; save it with --full',
  );
}

/**
 * Per block, the pages the layer holds: main RAM's pages the clone wrote since it started (its
 * touched bitmap; a restored or cloned VM starts with none), and every page of any other block
 * (which pages of those the clone wrote is not tracked).
 */
async function layerPagesOf(vm: Vm): Promise<PageBitmap[]> {
  // A harvest orders every store the vCPU made before its stop before the reads that follow.
  await vm.harvestDirty();
  return vm.ramBlocks.map((b, k) => {
    if (k === 0) return vm.touchedPages.clone();
    const all = new PageBitmap(b.spec.size / PAGE_SIZE);
    all.setAll();
    return all;
  });
}
