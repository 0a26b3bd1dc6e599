/**
 * SaveVm, RestoreVm and CloneVms of one vmm instance, over its VM host: the checks that pick
 * the route of a save, one save per VM at a time, and the VMs started from snapshots.
 *
 * @packageDocumentation
 */
import { stillArriving } from '../ram/lazy.js';
import { VmmError } from '../model/vmm-error.js';
import type { VmHost } from '../vm/host.js';
import { VM_NAME_PATTERN } from '../vm/spec.js';
import type { Vm } from '../vm/vm.js';
import { bypassSave } from './bypass-save.js';
import { fullSave } from './full-save.js';
import { layerSave } from './layer-save.js';
import { prepareSnapshot, startFromSnapshot } from './restore.js';
import {
  MAX_CLONES,
  type CloneRequest,
  type RestoreRequest,
  type SaveRequest,
  type SaveResult,
  type StartedVm,
} from './types.js';

/** Clones started at once by one CloneVms (each starts a vCPU thread). */
const CLONE_CONCURRENCY = 4;

export class SaveRestore {
  /** VMs being saved now. */
  private readonly saving = new Set<string>();

  constructor(private readonly host: VmHost) {}

  /** True while VM `name` is being saved (a migration of it waits for the end). */
  isSaving(name: string): boolean {
    return this.saving.has(name);
  }

  /**
   * SaveVm: bypass unless `full` — every block shared (sealed in place), or every block clone
   * RAM (a layer of the clone's pages over its snapshot) — or full.
   *
   * @throws VmmError `VMM_INVALID_ARGUMENT` (no snapshot name; a bypass save of private RAM or
   *   of shared and clone RAM mixed), `VMM_INVALID_STATE` (not running or paused, or being saved already),
   *   `VMM_VM_NOT_FOUND`; memstore's codes (SNAPSHOT_EXISTS, ...)
   */
  async save(req: SaveRequest): Promise<SaveResult> {
    const vm = this.host.get(req.name);
    if (req.snapshot === '') {
      throw new VmmError(
        'VMM_INVALID_ARGUMENT',
        'SaveVm names no snapshot; set "snapshot" to the name the snapshot gets',
      );
    }
    const route = req.full ? 'full' : bypassRoute(vm);
    if (vm.currentState !== 'running' && vm.currentState !== 'paused') {
      throw new VmmError(
        'VMM_INVALID_STATE',
        `cannot save VM ${vm.name}: it is ${vm.currentState}; only a running or paused VM is saved`,
      );
    }
    if (this.saving.has(vm.name)) {
      throw new VmmError(
        'VMM_INVALID_STATE',
        `VM ${vm.name} is being saved already; wait for that save to end`,
      );
    }
    const arriving = stillArriving(vm.ramBlocks);
    if (arriving !== null) {
      throw new VmmError(
        'VMM_INVALID_STATE',
        `VM ${vm.name}'s memory is still arriving by post-copy (${arriving}); save it once its ` +
          'migration completed (`vmctl jobs list`)',
      );
    }
    this.saving.add(vm.name);
    try {
      if (route === 'layer') return await layerSave(this.host, vm, req);
      return route === 'full'
        ? await fullSave(this.host, vm, req)
        : await bypassSave(this.host, vm, req);
    } finally {
      this.saving.delete(vm.name);
    }
  }

  /**
   * RestoreVm: one VM from a snapshot, named `name` or as the saved VM was.
   *
   * @throws VmmError `VMM_VM_EXISTS`, `VMM_SNAPSHOT_INVALID`, ...; see {@link startFromSnapshot}
   */
  async restore(req: RestoreRequest): Promise<StartedVm> {
    const prepared = await prepareSnapshot(this.host, req.snapshot);
    const name = req.name !== '' ? req.name : prepared.snapshot.vmName;
    const release = this.host.reserveNames([name]);
    try {
      return await startFromSnapshot(this.host, prepared, name, req.paused);
    } finally {
      release();
    }
  }

  /**
   * CloneVms: `count` VMs `<prefix>-<k>` from one snapshot, read and decoded once. Every name
   * must be free before the first starts; if one fails to start, those started are destroyed.
   *
   * @throws VmmError `VMM_INVALID_ARGUMENT` (count), `VMM_VM_EXISTS`, and what a restore throws
   */
  async clone(req: CloneRequest): Promise<StartedVm[]> {
    if (!Number.isInteger(req.count) || req.count < 1 || req.count > MAX_CLONES) {
      throw new VmmError(
        'VMM_INVALID_ARGUMENT',
        `CloneVms asks for ${req.count} clones; ask for 1 to ${MAX_CLONES}`,
      );
    }
    const first = req.firstIndex === 0 ? 1 : req.firstIndex;
    const namesOf = (prefix: string): string[] => {
      const names = Array.from({ length: req.count }, (_, k) => `${prefix}-${first + k}`);
      const bad = names.find((n) => !VM_NAME_PATTERN.test(n));
      if (bad !== undefined) {
        throw new VmmError(
          'VMM_INVALID_ARGUMENT',
          `CloneVms would name a clone "${bad}", which is not a VM name (1-48 lower-case ` +
            'letters, digits, ".", "_" or "-", starting with a letter or digit); pick a shorter ' +
            'or plainer name prefix',
        );
      }
      return names;
    };
    // With a prefix, the names are checked before memstore is asked anything.
    let release = req.namePrefix !== '' ? this.host.reserveNames(namesOf(req.namePrefix)) : null;
    const started: StartedVm[] = [];
    try {
      const prepared = await prepareSnapshot(this.host, req.snapshot);
      const names = namesOf(req.namePrefix !== '' ? req.namePrefix : prepared.snapshot.name);
      release ??= this.host.reserveNames(names);
      let next = 0;
      let failed = false;
      const worker = async (): Promise<void> => {
        while (next < names.length && !failed) {
          const k = next++;
          try {
            started[k] = await startFromSnapshot(this.host, prepared, names[k]!, req.paused);
          } catch (err) {
            failed = true; // the other workers start no more
            throw err;
          }
        }
      };
      const workers = Array.from({ length: Math.min(CLONE_CONCURRENCY, names.length) }, worker);
      const ends = await Promise.allSettled(workers);
      const refused = ends.find((e): e is PromiseRejectedResult => e.status === 'rejected');
      if (refused !== undefined) throw refused.reason;
      return started;
    } catch (err) {
      await Promise.all(
        started.map((s) => s && this.host.destroy(s.vm.name).catch(() => undefined)),
      );
      throw err;
    } finally {
      release?.();
    }
  }
}

/**
 * How a bypass save goes: every block shared → its regions are sealed in place (`'bypass'`);
 * every block clone RAM → a layer of the clone's pages over its snapshot (`'layer'`).
 *
 * @throws VmmError `VMM_INVALID_ARGUMENT` naming the block and what to do
 */
function bypassRoute(vm: Vm): 'bypass' | 'layer' {
  for (const b of vm.ramBlocks) {
    if (b.spec.backend === 'private') {
      throw new VmmError(
        'VMM_INVALID_ARGUMENT',
        `VM ${vm.name}: RAM block ${b.spec.id} is private memory of this vmm, which a bypass ` +
          'save cannot seal in place; save it with --full (copies the written pages)',
      );
    }
  }
  const clones = vm.ramBlocks.filter((b) => b.spec.backend === 'clone').length;
  if (clones === 0) return 'bypass';
  if (clones === vm.ramBlocks.length) return 'layer';
  throw new VmmError(
    'VMM_INVALID_ARGUMENT',
    `VM ${vm.name} has both shared and clone RAM blocks; a bypass save seals shared blocks or ` +
      'layers clone blocks, not both at once: save it with --full',
  );
}
