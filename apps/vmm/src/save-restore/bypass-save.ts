/**
 * A bypass save: the VM's shared regions become the snapshot's memory in place. The guest is
 * paused, its device state encoded, every block remapped MAP_PRIVATE over its own file (nothing
 * copied), then memstore seals the regions and records the snapshot in one transaction; the VM
 * carries on copy-on-write over the sealed files as clone RAM of the snapshot. O(1) in RAM size.
 *
 * @packageDocumentation
 */
import { checkLease } from '../leases/protocol.js';
import type { Snapshot } from '../model/snapshot.js';
import { VmmError } from '../model/vmm-error.js';
import { createSnapshot, getSnapshot, type RamBacking, type RamContext } from '../ram/index.js';
import { encodeDeviceState } from '../snapshot/index.js';
import type { VmHost } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';
import { encodeSpecBytes } from '../wire/spec.js';
import { pauseForSave } from './pause.js';
import type { SaveRequest, SaveResult } from './types.js';

/** How long a save whose CreateSnapshot got no answer asks memstore what became of it. */
const SETTLE_WINDOW_MS = 10_000;
const SETTLE_RETRY_MS = 250;

/**
 * Saves `vm`, whose blocks are all shared (the caller checked), by sealing its regions in place.
 *
 * On failure the blocks are mapped shared again and the guest resumes (if it ran) before the
 * error is answered — unless memstore cannot say whether the snapshot was made: then the VM
 * stays paused on its private mappings and is fenced (it cannot know whether its memory is a
 * snapshot's now), and the error says so.
 */
export async function bypassSave(host: VmHost, vm: Vm, req: SaveRequest): Promise<SaveResult> {
  const ctx = host.ramContext(vm.name);
  const blocks = [...vm.ramBlocks];
  const wasRunning = vm.currentState === 'running';
  const t0 = performance.now();
  const stopped = await pauseForSave(vm);
  const tPaused = performance.now();
  const resumeIfRan = async (): Promise<void> => {
    if (wasRunning) await vm.resume();
  };
  let deviceState: Uint8Array;
  try {
    deviceState = encodeDeviceState(stopped.state);
    remapAll(blocks, 'private');
  } catch (err) {
    await resumeIfRan();
    throw err;
  }
  const tRemapped = performance.now();
  let snapshot: Snapshot;
  try {
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
    const made = await settleFailedCreate(ctx, vm, blocks, req.snapshot, err);
    if (made === null) {
      backToShared(vm, blocks, err);
      await resumeIfRan();
      throw err;
    }
    snapshot = made;
  }
  const tCreated = performance.now();
  const bytes = deviceState.length;
  if (req.stop) {
    vm.log.info(
      {
        snapshot: snapshot.name,
        job: req.jobId,
        regions: snapshot.blocks.map((b) => b.regionName),
      },
      'VM saved: its regions are the snapshot now (bypass); destroying it (stop)',
    );
    for (const b of blocks) b.abandon(); // the lease went with the seal; the regions are the snapshot's
    await host.destroy(vm.name);
    return { snapshot, pauseUs: 0, bytes, vm: null };
  }
  const attached = runOverSnapshot(host, vm, blocks, snapshot);
  const info = wasRunning ? await vm.resume() : vm.info();
  const tResumed = performance.now();
  await attached; // pins the snapshot; the guest need not wait for it
  const pauseUs = wasRunning
    ? Math.max(0, Math.round((vm.lastRunAtMs - stopped.pausedAtMs) * 1000))
    : 0;
  vm.log.info(
    {
      snapshot: snapshot.name,
      job: req.jobId,
      regions: snapshot.blocks.map((b) => b.regionName),
      pauseUs,
      // where the pause went, in ms: the vCPU's stop and state, the remap, CreateSnapshot, resume
      pauseParts: {
        stop: ms(tPaused - t0),
        remap: ms(tRemapped - tPaused),
        createSnapshot: ms(tCreated - tRemapped),
        resume: ms(tResumed - tCreated),
      },
    },
    'VM saved: its regions are the snapshot now (bypass)',
  );
  return { snapshot, pauseUs, bytes, vm: wasRunning ? info : vm.info() };
}

/** Milliseconds, rounded to µs, for logs. */
function ms(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Remaps every block; if one fails, those done are mapped back and the error thrown. */
function remapAll(blocks: readonly RamBacking[], sharing: 'shared' | 'private'): void {
  const done: RamBacking[] = [];
  try {
    for (const b of blocks) {
      b.remap!(sharing);
      done.push(b);
    }
  } catch (err) {
    const back = sharing === 'private' ? 'shared' : 'private';
    for (const b of done) b.remap!(back);
    throw err;
  }
}

/**
 * A save that made nothing: the blocks are mapped shared again, so the guest's writes reach its
 * regions once more. Should that fail, the VM must not run (its writes would miss the region
 * others see): it is fenced and the remap's error thrown, with the save's as its cause.
 */
function backToShared(vm: Vm, blocks: readonly RamBacking[], saveError: unknown): void {
  try {
    remapAll(blocks, 'shared');
  } catch (err) {
    const why = `its RAM could not be mapped shared again after a failed save (${(err as Error).message})`;
    vm.fence(why);
    throw new VmmError('VMM_INVALID_STATE', `VM ${vm.name}: ${why}; destroy it`, {
      cause: saveError,
    });
  }
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
