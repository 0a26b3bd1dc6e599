/**
 * A full save: the snapshot gets regions of its own. One persistent region per block is created
 * and leased first (while the guest runs); then, with the guest paused, the device state is
 * taken and each block's written pages are copied into its region (never-written pages stay
 * holes; each run's write-back to disk starts as soon as it is copied); the guest resumes on
 * its own RAM, unchanged, while the regions are synced and memstore seals them into the
 * snapshot. The only save of private RAM.
 *
 * @packageDocumentation
 */
import type { PageBitmap } from '@handoff/bitmap';
import type { Snapshot } from '../model/snapshot.js';
import { VmmError } from '../model/vmm-error.js';
import {
  bitmapToLayerPages,
  createSaveRegions,
  createSnapshot,
  getSnapshot,
  type RamContext,
  type SaveRegion,
} from '../ram/index.js';
import { encodeDeviceState } from '../snapshot/index.js';
import type { VmHost } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';
import { encodeSpecBytes } from '../wire/spec.js';
import { copyPages, pagesToCopy } from './page-copy.js';
import { pauseForSave, resumeAfterCopy } from './pause.js';
import type { SaveRequest, SaveResult } from './types.js';

/**
 * Saves `vm` by copying. The guest is paused only while its pages are copied into the
 * regions' files: it resumes before they are synced and recorded (unless it is to stop), and
 * the save answers once they are. Nothing is left behind when it fails: the regions are
 * deleted and the guest resumes (if it ran) before the error is answered.
 */
export async function fullSave(host: VmHost, vm: Vm, req: SaveRequest): Promise<SaveResult> {
  const ctx = host.ramContext(vm.name);
  const blocks = [...vm.ramBlocks];
  const regions = await createSaveRegions(ctx, req.snapshot, blocks);
  const wasRunning = vm.currentState === 'running';
  let pausedAtMs = 0;
  let deviceState: Uint8Array;
  let bytes = 0;
  const t0 = performance.now();
  const marks = { paused: t0, copied: t0, resumed: t0, synced: t0, created: t0 };
  try {
    const stopped = await pauseForSave(vm);
    pausedAtMs = stopped.pausedAtMs;
    marks.paused = performance.now();
    deviceState = encodeDeviceState(stopped.state);
    bytes = await copyBlocks(vm, regions);
    marks.copied = performance.now();
  } catch (err) {
    await Promise.all(regions.map((r) => r.discard()));
    if (wasRunning) await vm.resume().catch(() => undefined); // as it was; the error is the save's
    throw err;
  }
  // The copies are in the regions' files now and the guest's later writes go to its own RAM,
  // never to them: it need not wait for the sync and CreateSnapshot (unless it is to stop).
  const resumeEarly = wasRunning && !req.stop;
  let info = resumeEarly ? await resumeAfterCopy(vm, regions) : null;
  marks.resumed = performance.now();
  let snapshot: Snapshot;
  try {
    await Promise.all(regions.map((r) => r.finish()));
    marks.synced = performance.now();
    snapshot = await createFilledSnapshot(ctx, vm, req, regions, deviceState);
    marks.created = performance.now();
    bytes += deviceState.length;
  } catch (err) {
    await Promise.all(regions.map((r) => r.discard()));
    if (wasRunning && !resumeEarly) await vm.resume().catch(() => undefined);
    throw err;
  }
  // in ms: the pause (the vCPU's stop, the page copies, the resume), then — while the guest
  // runs — the regions' fsync and CreateSnapshot
  const parts = {
    stop: ms(marks.paused - t0),
    copy: ms(marks.copied - marks.paused),
    resume: ms(marks.resumed - marks.copied),
    sync: ms(marks.synced - marks.resumed),
    createSnapshot: ms(marks.created - marks.synced),
  };
  if (req.stop) {
    vm.log.info(
      { snapshot: snapshot.name, job: req.jobId, bytes, parts },
      'VM saved: its written pages copied into the snapshot (full); destroying it (stop)',
    );
    await host.destroy(vm.name); // its own RAM goes as at any destroy; the copies are the snapshot's
    return { snapshot, pauseUs: 0, bytes, vm: null };
  }
  info ??= vm.info();
  const pauseUs = wasRunning ? Math.max(0, Math.round((vm.lastRunAtMs - pausedAtMs) * 1000)) : 0;
  vm.log.info(
    { snapshot: snapshot.name, job: req.jobId, bytes, pauseUs, parts },
    'VM saved: its written pages copied into the snapshot (full)',
  );
  return { snapshot, pauseUs, bytes, vm: info };
}

/** Milliseconds, rounded to µs, for logs. */
function ms(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Copies every block's pages that may hold data into its region; returns the bytes copied. */
async function copyBlocks(vm: Vm, regions: readonly SaveRegion[]): Promise<number> {
  // A harvest orders every store the vCPU made before its stop before the reads below.
  await vm.harvestDirty();
  let bytes = 0;
  for (const [k, b] of vm.ramBlocks.entries()) {
    const touched = k === 0 ? vm.touchedPages : null;
    const pages = pagesToCopy(b, touched, k === 0 && vm.untouchedAreZero);
    bytes += await copyPages(b, pages, regions[k]!);
  }
  return bytes;
}

/** What makes a snapshot of filled regions a layer: its parent and each block's pages. */
export interface LayerOf {
  readonly parent: Snapshot;
  readonly pages: readonly PageBitmap[];
}

/**
 * CreateSnapshot of the filled regions (owned by the snapshot): standalone (`full`), or a layer
 * over `layer.parent` holding `layer.pages`. When memstore's answer was lost, it is asked
 * whether the snapshot exists with these regions.
 */
export async function createFilledSnapshot(
  ctx: RamContext,
  vm: Vm,
  req: SaveRequest,
  regions: readonly SaveRegion[],
  deviceState: Uint8Array,
  layer?: LayerOf,
): Promise<Snapshot> {
  try {
    return await createSnapshot(ctx, {
      name: req.snapshot,
      template: req.template,
      kind: layer === undefined ? 'full' : 'bypass',
      vmName: vm.name,
      vmSpec: encodeSpecBytes(vm.spec),
      deviceState,
      ...(layer === undefined ? {} : { parent: layer.parent.id }),
      blocks: vm.ramBlocks.map((b, k) => ({
        id: b.spec.id,
        guestBase: b.spec.guestBase,
        size: b.spec.size,
        regionId: regions[k]!.regionId,
        epoch: regions[k]!.epoch,
        owned: true,
        ...(layer === undefined ? {} : { layerPages: bitmapToLayerPages(layer.pages[k]!) }),
      })),
    });
  } catch (err) {
    if (!VmmError.is(err, 'VMM_MEMSTORE_UNAVAILABLE')) throw err;
    const found = await getSnapshot(ctx, req.snapshot, false).catch(() => null);
    const ours = regions.every((r) =>
      found?.snapshot.blocks.some((s) => s.regionId === r.regionId),
    );
    if (found !== null && ours) return found.snapshot;
    throw err;
  }
}
