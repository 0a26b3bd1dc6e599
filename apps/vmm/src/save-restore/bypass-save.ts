/**
 * A bypass save: the VM's shared regions become the snapshot's memory in place. The guest is
 * paused, its device state encoded, every block remapped MAP_PRIVATE over its own file (nothing
 * copied), and the guest resumes at once: from here on its writes are copy-on-write, so the
 * files keep the save point while memstore seals them and records the snapshot in one
 * transaction (CreateSnapshot, which syncs to disk). The VM then carries on over the sealed
 * files as clone RAM of the snapshot. The pause does not include CreateSnapshot, nor the
 * unmap of the old shared mappings (which drops the page-table entry of every page the guest
 * touched): the remap moves their page tables aside, and they are unmapped once the guest
 * runs again, on a libuv thread, beside the rest of the save.
 *
 * If CreateSnapshot makes nothing, the guest is paused again, the pages it wrote since the
 * remap are put into its regions (the dirty log says which), the blocks are mapped shared and
 * the guest resumes: nothing is lost.
 *
 * @packageDocumentation
 */
import type { PageBitmap } from '@handoff/bitmap';
import { checkLease } from '../leases/protocol.js';
import { PAGE_SIZE } from '../memory/pages.js';
import type { Snapshot } from '../model/snapshot.js';
import type { VmInfo } from '../model/types.js';
import { VmmError } from '../model/vmm-error.js';
import {
  createSnapshot,
  getSnapshot,
  type RamBacking,
  type RamContext,
  type RetiredRam,
} from '../ram/index.js';
import { encodeDeviceState } from '../snapshot/index.js';
import type { VmHost } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';
import { encodeSpecBytes } from '../wire/spec.js';
import { pauseForSave } from './pause.js';
import type { SaveRequest, SaveResult } from './types.js';

/** How long a save whose CreateSnapshot got no answer asks memstore what became of it. */
const SETTLE_WINDOW_MS = 10_000;
const SETTLE_RETRY_MS = 250;

/** The run state a save holds ({@link Vm.beginSave}). */
type SaveRun = ReturnType<Vm['beginSave']>;

/**
 * Saves `vm`, whose blocks are all shared (the caller checked), by sealing its regions in place.
 *
 * While memstore records the snapshot the VM runs on its private mappings, still holding its
 * leases and not yet a clone; pause and resume requests are refused meanwhile and a destroy
 * waits (see {@link Vm.beginSave}); the caller refuses a second save and a migration.
 *
 * On failure the guest's writes since the remap are put into its regions, the blocks are
 * mapped shared again and the guest resumes (if it ran) before the error is answered — unless
 * memstore cannot say whether the snapshot was made: then the VM stays paused on its private
 * mappings and is fenced (it cannot know whether its memory is a snapshot's now), and the
 * error says so.
 */
export async function bypassSave(host: VmHost, vm: Vm, req: SaveRequest): Promise<SaveResult> {
  const run = vm.beginSave();
  let saved: SaveResult;
  try {
    saved = await saveInPlace(host, vm, req, run);
  } finally {
    run.end();
  }
  if (!req.stop) return saved;
  vm.log.info(
    {
      snapshot: saved.snapshot.name,
      job: req.jobId,
      regions: saved.snapshot.blocks.map((b) => b.regionName),
    },
    'VM saved: its regions are the snapshot now (bypass); destroying it (stop)',
  );
  for (const b of vm.ramBlocks) b.abandon(); // the lease went with the seal; the regions are the snapshot's
  await host.destroy(vm.name);
  return saved;
}

/** {@link bypassSave} while it holds the VM's run state; with `stop`, the VM stays paused. */
async function saveInPlace(
  host: VmHost,
  vm: Vm,
  req: SaveRequest,
  run: SaveRun,
): Promise<SaveResult> {
  const blocks = [...vm.ramBlocks];
  const wasRunning = vm.currentState === 'running';
  const runsOn = wasRunning && !req.stop; // the guest runs while memstore records the snapshot
  const t0 = performance.now();
  const stopped = await pauseForSave(vm);
  const tPaused = performance.now();
  let remapped = false;
  const retired: RetiredRam[] = [];
  try {
    // A new dirty epoch: what the guest writes from the remap on is what a refused save puts
    // back into the regions (a save and a migration of one VM never run together). The paused
    // vCPU answers while the blocks are remapped.
    const epochBegun = vm.harvestDirty();
    epochBegun.catch(() => undefined);
    remapAll(blocks, 'private', retired);
    remapped = true;
    await epochBegun;
  } catch (err) {
    if (remapped) remapAll(blocks, 'shared', retired); // the guest wrote nothing meanwhile
    if (wasRunning) await run.resume();
    await unmapAll(retired);
    throw err;
  }
  const tRemapped = performance.now();
  if (runsOn) await run.resume();
  const tResumed = performance.now();
  // The old shared mappings, reachable by no view, go on a libuv thread while the guest runs
  // (or waits); the save does not wait for them (they cost no memory: the file's pages).
  void unmapAll(retired).then(() =>
    vm.log.debug(
      { snapshot: req.snapshot, ms: ms(performance.now() - tResumed) },
      'bypass save: the old shared mappings are unmapped',
    ),
  );
  return sealAndRunOn(host, vm, req, run, {
    blocks,
    stopped,
    wasRunning,
    runsOn,
    parts: { stop: tPaused - t0, remap: tRemapped - tPaused, resume: tResumed - tRemapped },
  });
}

/** Where {@link saveInPlace} stands once the guest runs on its private mappings. */
interface Remapped {
  readonly blocks: readonly RamBacking[];
  readonly stopped: Awaited<ReturnType<typeof pauseForSave>>;
  readonly wasRunning: boolean;
  /** Whether the guest runs while memstore records the snapshot. */
  readonly runsOn: boolean;
  /** ms of the pause's parts. */
  readonly parts: { readonly stop: number; readonly remap: number; readonly resume: number };
}

/**
 * The rest of a bypass save after the remap: CreateSnapshot (or the write-back when it made
 * nothing), then the blocks become clone RAM of the snapshot.
 */
async function sealAndRunOn(
  host: VmHost,
  vm: Vm,
  req: SaveRequest,
  run: SaveRun,
  at: Remapped,
): Promise<SaveResult> {
  const ctx = host.ramContext(vm.name);
  const { blocks, stopped, wasRunning, runsOn } = at;
  const tResumed = performance.now();
  let pauseUs = runsOn ? pauseUsOf(stopped.pausedAtMs, vm.lastRunAtMs) : 0;
  let paused = !runsOn; // whether this save holds the guest paused now
  let snapshot: Snapshot;
  let deviceState: Uint8Array = new Uint8Array(0);
  try {
    deviceState = encodeDeviceState(stopped.state); // a copy the vCPU sent: encoded while it runs
    snapshot = await createSnapshot(ctx, {
      name: req.snapshot,
      template: req.template,
      kind: 'bypass',
      vmName: vm.name,
      vmSpec: encodeSpecBytes(vm.spec),
      deviceState,
      blocks: blocks.map((b) => ({
        id: b.spec.id,
        guestBase: b.spec.guestBase,
        size: b.spec.size,
        regionId: b.regionRef!.regionId,
        epoch: b.regionRef!.epoch,
        owned: b.spec.regionOwned === true,
      })),
    });
  } catch (err) {
    if (!paused && vm.currentState === 'running') {
      await pauseAgain(vm, run, err); // (a guest that powered off meanwhile runs no more anyway)
      paused = true;
    }
    const made = await settleFailedCreate(ctx, vm, blocks, req.snapshot, err);
    if (made === null) {
      const retired: RetiredRam[] = [];
      try {
        const pages = await writeBackAndShare(vm, blocks, err, retired);
        vm.log.info(
          { snapshot: req.snapshot, job: req.jobId, pagesWrittenBack: pages },
          'bypass save failed: the pages the guest wrote meanwhile are in its regions again',
        );
        if (wasRunning && paused) await run.resume();
      } finally {
        await unmapAll(retired); // the private mappings the remap back moved aside
      }
      throw err;
    }
    snapshot = made;
  }
  const tCreated = performance.now();
  const bytes = deviceState.length;
  if (req.stop) return { snapshot, pauseUs: 0, bytes, vm: null };
  const attached = runOverSnapshot(host, vm, blocks, snapshot);
  let info: VmInfo = vm.info();
  if (wasRunning && paused) {
    const pausedAgainAt = vm.lastPauseAtMs;
    info = await run.resume();
    pauseUs += pauseUsOf(pausedAgainAt, vm.lastRunAtMs);
  }
  await attached; // pins the snapshot; the guest need not wait for it
  vm.log.info(
    {
      snapshot: snapshot.name,
      job: req.jobId,
      regions: snapshot.blocks.map((b) => b.regionName),
      pauseUs,
      // where the time went, in ms: the vCPU's stop and state, the dirty epoch and remap, the
      // resume (the pause ends there), then encoding the state and CreateSnapshot while the
      // guest ran (the unmap of the old shared mappings runs beside it: a debug line says when
      // it is done)
      parts: {
        stop: ms(at.parts.stop),
        remap: ms(at.parts.remap),
        resume: ms(at.parts.resume),
        createSnapshot: ms(tCreated - tResumed),
      },
    },
    'VM saved: its regions are the snapshot now (bypass)',
  );
  return { snapshot, pauseUs, bytes, vm: info };
}

/** µs from a vCPU stop to its next start, both epoch ms stamped by the vCPU thread. */
function pauseUsOf(pausedAtMs: number, ranAtMs: number): number {
  return Math.max(0, Math.round((ranAtMs - pausedAtMs) * 1000));
}

/** Milliseconds, rounded to µs, for logs. */
function ms(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/**
 * CreateSnapshot failed while the guest ran: it is paused again before anything else, so that
 * its pages can be written back or its memory handed to the snapshot. A vCPU that does not
 * stop leaves the VM fenced (it ran on private mappings that may be a snapshot's now).
 *
 * @throws VmmError `VMM_VCPU_FAILED` with the save's error as its cause
 */
async function pauseAgain(vm: Vm, run: SaveRun, saveError: unknown): Promise<void> {
  try {
    await run.pause();
  } catch (err) {
    const why = `its vCPU did not stop after a failed save (${(err as Error).message})`;
    vm.fence(why);
    throw new VmmError('VMM_VCPU_FAILED', `VM ${vm.name}: ${why}; destroy it`, {
      cause: saveError,
    });
  }
}

/**
 * Remaps every block, adding the old mappings it moved aside to `retired` (to unmap once the
 * guest runs: {@link unmapAll}); if one fails, those done are mapped back and the error thrown.
 */
function remapAll(
  blocks: readonly RamBacking[],
  sharing: 'shared' | 'private',
  retired: RetiredRam[],
): void {
  const done: RamBacking[] = [];
  const keep = (r: RetiredRam | null) => {
    if (r !== null) retired.push(r);
  };
  try {
    for (const b of blocks) {
      keep(b.remap!(sharing));
      done.push(b);
    }
  } catch (err) {
    const back = sharing === 'private' ? 'shared' : 'private';
    for (const b of done) keep(b.remap!(back));
    throw err;
  }
}

/** Unmaps the old mappings `retired` holds (and forgets them); never rejects. */
async function unmapAll(retired: RetiredRam[]): Promise<void> {
  const now = retired.splice(0);
  await Promise.all(now.map((r) => r.unmap()));
}

/**
 * A save that made nothing, the guest paused: the pages of main RAM it wrote since the remap
 * (the dirty log's epoch begun then) are copied out of the private mapping, every block is
 * mapped shared again (which drops the private copies) and the pages are copied back through
 * the shared mapping, into the region. Only main RAM is dirty-tracked, and it is the only
 * block the machine maps: the guest cannot have written another. Returns the pages put back;
 * the private mappings the remap moved aside are added to `retired`, for the caller to unmap.
 *
 * Should that fail, the VM must not run (its writes would miss the region others see): it is
 * fenced — its own view of its memory kept — and a `VMM_INVALID_STATE` thrown, with the save's
 * error as its cause.
 */
async function writeBackAndShare(
  vm: Vm,
  blocks: readonly RamBacking[],
  saveError: unknown,
  retired: RetiredRam[],
): Promise<number> {
  let kept: KeptPages | null = null;
  try {
    kept = keepPages(blocks[0]!, await vm.harvestDirty());
    remapAll(blocks, 'shared', retired);
    return kept.pages;
  } catch (err) {
    const why = `its RAM could not be mapped shared again after a failed save (${(err as Error).message})`;
    vm.fence(why);
    throw new VmmError('VMM_INVALID_STATE', `VM ${vm.name}: ${why}; destroy it`, {
      cause: saveError,
    });
  } finally {
    kept?.putBack();
  }
}

/** Pages copied out of a block, and how to copy them back into whatever it maps then. */
interface KeptPages {
  readonly pages: number;
  putBack(): void;
}

/** Copies the pages set in `dirty` out of `block`'s memory. */
function keepPages(block: RamBacking, dirty: PageBitmap): KeptPages {
  const runs: number[] = [];
  let pages = 0;
  dirty.forEachRun((start, length) => {
    runs.push(start, length);
    pages += length;
  });
  const memory = new Uint8Array(block.buffer);
  const copy = new Uint8Array(pages * PAGE_SIZE);
  let at = 0;
  for (let k = 0; k < runs.length; k += 2) {
    const from = runs[k]! * PAGE_SIZE;
    const bytes = runs[k + 1]! * PAGE_SIZE;
    copy.set(memory.subarray(from, from + bytes), at);
    at += bytes;
  }
  return {
    pages,
    putBack: () => {
      let back = 0;
      for (let k = 0; k < runs.length; k += 2) {
        const bytes = runs[k + 1]! * PAGE_SIZE;
        memory.set(copy.subarray(back, back + bytes), runs[k]! * PAGE_SIZE);
        back += bytes;
      }
    },
  };
}

/**
 * The saved VM's blocks become clone RAM of the snapshot's (sealed) regions, at once; the
 * returned promise is their AttachClone calls (never rejects).
 */
function runOverSnapshot(
  host: VmHost,
  vm: Vm,
  blocks: readonly RamBacking[],
  snapshot: Snapshot,
): Promise<unknown> {
  const attached: Promise<void>[] = [];
  for (const [k, b] of blocks.entries()) {
    const sealed = snapshot.blocks.find((s) => s.id === b.spec.id);
    const regionRef = b.regionRef!;
    const next = b.becomeClone!({
      regionId: regionRef.regionId,
      regionName: sealed?.regionName ?? regionRef.regionName,
      identity: sealed?.identity ?? regionRef.identity,
    });
    host.rebacked(vm, k, next.backing);
    attached.push(next.attached);
  }
  vm.runsFrom(snapshot.name);
  return Promise.all(attached);
}

/**
 * CreateSnapshot failed. Returns null when the snapshot was certainly not made (memstore
 * answered with an error, or the VM still holds every lease it presented: a seal releases it in
 * the same transaction), or the snapshot when it was made after all (its answer was lost).
 *
 * @throws VmmError `VMM_LEASE_LOST` (a lease moved and no snapshot holds it: the VM is fenced),
 *   `VMM_MEMSTORE_UNAVAILABLE` (memstore did not answer for {@link SETTLE_WINDOW_MS}: the VM
 *   is fenced and stays paused)
 */
async function settleFailedCreate(
  ctx: RamContext,
  vm: Vm,
  blocks: readonly RamBacking[],
  name: string,
  err: unknown,
): Promise<Snapshot | null> {
  if (!VmmError.is(err, 'VMM_MEMSTORE_UNAVAILABLE')) return null; // memstore answered: not made
  const deadline = performance.now() + SETTLE_WINDOW_MS;
  for (;;) {
    try {
      let held = true;
      for (const b of blocks) held &&= (await checkLease(ctx, b.regionRef!)).valid;
      if (held) return null;
      const found = await getSnapshot(ctx, name, false).catch((e: unknown) => {
        if (VmmError.is(e, 'VMM_MEMSTORE_UNAVAILABLE')) throw e;
        return null;
      });
      const ours = blocks.every((b) =>
        found?.snapshot.blocks.some((s) => s.regionId === b.regionRef!.regionId),
      );
      if (found !== null && ours) return found.snapshot;
      const why = `its lease moved while the save of snapshot ${name} failed`;
      vm.fence(why);
      throw new VmmError(
        'VMM_LEASE_LOST',
        `VM ${vm.name}: ${why}; it must not run here again: destroy it`,
        { cause: err },
      );
    } catch (e) {
      if (!VmmError.is(e, 'VMM_MEMSTORE_UNAVAILABLE')) throw e;
    }
    if (performance.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, SETTLE_RETRY_MS));
  }
  const why = `memstore did not say whether snapshot ${name} was made`;
  vm.fence(why);
  throw new VmmError(
    'VMM_MEMSTORE_UNAVAILABLE',
    `VM ${vm.name}: ${why} (its regions may be sealed by now), so the VM stays paused and will ` +
      `not resume here; once memstore answers, see whether snapshot ${name} exists, then ` +
      'destroy the VM',
    { cause: err },
  );
}
