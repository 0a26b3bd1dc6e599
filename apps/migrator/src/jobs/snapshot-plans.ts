import { RemoteError, ServiceError } from '@handoff/service';
import type { SnapshotCatalog, SnapshotFacts } from '../clients/memstore-client.js';
import { isUnreachable } from '../clients/vmm-client.js';
import { MigratorError } from '../errors.js';
import type { VmSpec } from '../registry/hosted-vm.js';
import type { VmLocation, VmmRecord, VmmRegistry } from '../registry/vmm-registry.js';
import { snapshotRequest, type SnapshotJobKind, type SnapshotRequest } from './job.js';

/**
 * Validation of save, restore, template and clone requests, before any job exists: every
 * argument error is MIGRATOR_INVALID_ARGUMENT with a message that says what to do, and a plan
 * holds everything the job needs (defaults filled in, the vmm chosen, clone numbers picked).
 */

/** Snapshot names, as memstore takes them: 1 to 63 letters, digits, "-", "_", ".". */
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** VM names, as a vmm takes them. */
const VM_NAME = /^[a-z0-9][a-z0-9._-]{0,47}$/;
/** Longest VM name a vmm takes. */
const VM_NAME_MAX = 48;

/** Most clones one request may start. */
export const MAX_CLONES = 1000;
/** How long a template's guest has to ring its ready doorbell unless the request says. */
export const DEFAULT_READY_TIMEOUT_MS = 30_000;
/** Main RAM of the board (the one block a template's guest gets). */
export const DRAM_BASE = 0x8000_0000;
/** Largest RAM block a vmm maps. */
const MAX_BLOCK = 2 ** 31;

/**
 * Largest template guest image a client may send (16 MiB, the vmm's limit of CreateVm's
 * `guest_image`); the migrator's server accepts CreateTemplate messages up to
 * {@link MAX_CREATE_TEMPLATE_MESSAGE} so that this check, not gRPC's cap, refuses a bigger one.
 */
export const MAX_SENT_GUEST_IMAGE = 16 * 1024 * 1024;

/** Largest message the migrator's server accepts: a sent guest image plus room for the rest. */
export const MAX_CREATE_TEMPLATE_MESSAGE = MAX_SENT_GUEST_IMAGE + 1024 * 1024;

/** A validated snapshot job, ready to be created. */
export interface SnapshotPlan {
  readonly kind: SnapshotJobKind;
  /** The VM saved (save, template from a VM), started (restore, a template's guest), or ''. */
  readonly vm: string;
  /** The instance that does the work. */
  readonly vmm: VmmRecord;
  /**
   * Which side of the job the instance is: `source` when it holds a VM already (save, template
   * from a VM), `target` when it starts one (restore, clone, a template's guest).
   */
  readonly side: 'source' | 'target';
  readonly request: SnapshotRequest;
  /**
   * A template's guest ELF sent by the client: not journaled (a restarted migrator resolves a
   * template job by what exists, and never boots its guest again).
   */
  readonly guestImage?: Uint8Array | undefined;
}

/** What planning asks of the migrator. */
export interface PlanContext {
  readonly registry: VmmRegistry;
  /** memstore's snapshots; undefined when the migrator has no memstore. */
  readonly snapshots: SnapshotCatalog | undefined;
  /** Where a VM runs (the registry, else one GetVm round); MIGRATOR_VM_NOT_FOUND if nowhere. */
  locate(vm: string): Promise<VmLocation>;
  /** Clone numbers of `prefix` that unfinished clone jobs will use. */
  reservedNumbers(prefix: string): number[];
  now(): Date;
}

function invalid(message: string): MigratorError {
  return new MigratorError('MIGRATOR_INVALID_ARGUMENT', message);
}

function checkSnapshotName(name: string, what: string): void {
  if (!SNAPSHOT_NAME.test(name)) {
    throw invalid(
      `${what} "${name}" is not a valid name: use 1 to 63 letters, digits, ".", "_" and "-", ` +
        'starting with a letter or digit',
    );
  }
}

function checkVmName(name: string, what: string): void {
  if (!VM_NAME.test(name)) {
    throw invalid(
      `${what} "${name}" is not a valid VM name: use 1 to ${VM_NAME_MAX} lower-case letters, ` +
        'digits, ".", "_" and "-", starting with a letter or digit',
    );
  }
}

/** A VM name nobody uses on the cluster (as far as the instances reported). */
function checkNameFree(ctx: PlanContext, name: string, hint: string): void {
  if (!ctx.registry.vmNames().has(name)) return;
  const at = ctx.registry.locate(name)?.vmm.id;
  throw invalid(
    `a VM named ${name} already exists${at !== undefined ? ` on ${at}` : ''}; VM names are ` +
      `unique in the cluster: ${hint}`,
  );
}

/** `<vm>-<UTC yyyymmdd-hhmmss>`, the VM part shortened to keep the name within 63 characters. */
export function defaultSnapshotName(vm: string, at: Date): string {
  const iso = at.toISOString(); // 2026-11-25T22:10:00.000Z
  const stamp = `${iso.slice(0, 10).replaceAll('-', '')}-${iso.slice(11, 19).replaceAll(':', '')}`;
  return `${vm.slice(0, 63 - 1 - stamp.length)}-${stamp}`;
}

/**
 * Snapshot `name` from memstore; SNAPSHOT_NOT_FOUND when it has none. undefined when the
 * migrator has no memstore or memstore does not answer (the vmm will find out, and say).
 */
async function lookUp(ctx: PlanContext, name: string): Promise<SnapshotFacts | undefined> {
  if (ctx.snapshots === undefined) return undefined;
  let facts: SnapshotFacts | null;
  try {
    facts = await ctx.snapshots.snapshotOf(name);
  } catch (err) {
    if (err instanceof RemoteError && !isUnreachable(err)) throw err;
    return undefined;
  }
  if (facts === null) {
    throw new ServiceError(
      'SNAPSHOT_NOT_FOUND',
      `memstore has no snapshot named ${name}; list them with \`vmctl snapshot list\``,
    );
  }
  return facts;
}

/** Save(vm, snapshot, full, stop). */
export async function planSave(
  req: { vm: string; snapshot: string; full: boolean; stop: boolean },
  ctx: PlanContext,
): Promise<SnapshotPlan> {
  if (req.vm === '') throw invalid('a VM name is required (vmctl save VM [--as SNAPSHOT])');
  const snapshot = req.snapshot !== '' ? req.snapshot : defaultSnapshotName(req.vm, ctx.now());
  checkSnapshotName(snapshot, 'snapshot name');
  const at = await ctx.locate(req.vm);
  return {
    kind: 'save',
    vm: req.vm,
    vmm: at.vmm,
    side: 'source',
    request: snapshotRequest({ snapshot, full: req.full, stop: req.stop }),
  };
}

/** Restore(snapshot, name, vmm, paused). */
export async function planRestore(
  req: { snapshot: string; name: string; vmm: string; paused: boolean },
  ctx: PlanContext,
): Promise<SnapshotPlan> {
  if (req.snapshot === '') {
    throw invalid('a snapshot name is required (vmctl restore SNAPSHOT [--name VM])');
  }
  if (req.name !== '') checkVmName(req.name, 'the VM name');
  const facts = await lookUp(ctx, req.snapshot);
  const name = req.name !== '' ? req.name : (facts?.vmName ?? '');
  if (name === '') {
    throw invalid(
      `memstore could not be asked for the name VM ${req.snapshot} was saved with; name the ` +
        'restored VM (vmctl restore SNAPSHOT --name VM)',
    );
  }
  checkNameFree(ctx, name, 'give the restored VM another name with --name, or destroy that VM');
  const vmm = ctx.registry.place(req.vmm);
  return {
    kind: 'restore',
    vm: name,
    vmm,
    side: 'target',
    request: snapshotRequest({ snapshot: req.snapshot, paused: req.paused }),
  };
}

/** CreateTemplate(name, guest | from_vm, memory, vmm, args, ready_timeout_ms). */
export async function planTemplate(
  req: {
    name: string;
    source: { guest: string; image?: Uint8Array | undefined } | { fromVm: string } | undefined;
    memory: number;
    vmm: string;
    args: Record<string, string>;
    readyTimeoutMs: number;
  },
  ctx: PlanContext,
): Promise<SnapshotPlan> {
  if (req.name === '') {
    throw invalid('a template name is required (vmctl template create NAME --guest G --memory M)');
  }
  checkSnapshotName(req.name, 'template name');
  if (req.source === undefined) {
    throw invalid(
      'a template needs a source: a guest to boot (--guest G --memory 256M) or a running VM ' +
        '(--from-vm VM)',
    );
  }
  if ('fromVm' in req.source) {
    if (req.source.fromVm === '') throw invalid('--from-vm needs the name of a running VM');
    if (req.memory !== 0 || Object.keys(req.args).length > 0) {
      throw invalid(
        'memory and args are for a booted guest: a template of a running VM keeps its own RAM ' +
          'and arguments; leave them out with from_vm',
      );
    }
    const at = await ctx.locate(req.source.fromVm);
    if (req.vmm !== '' && req.vmm !== at.vmm.id) {
      throw invalid(
        `VM ${req.source.fromVm} runs on ${at.vmm.id}, not ${req.vmm}: a template of a running ` +
          'VM is saved where it runs; leave --vmm out',
      );
    }
    return {
      kind: 'template',
      vm: req.source.fromVm,
      vmm: at.vmm,
      side: 'source',
      // shared RAM is sealed in place, clone RAM becomes a layer over its snapshot, anything
      // else is copied (the run asks the vmm again, as the VM's blocks may have changed since
      // its report)
      request: snapshotRequest({ snapshot: req.name, full: needsCopy(at.vm.spec) }),
    };
  }
  const guest = req.source.guest;
  if (guest === '') throw invalid('--guest needs a guest name (e.g. kvserver)');
  const image = req.source.image;
  if (image !== undefined && image.length > MAX_SENT_GUEST_IMAGE) {
    throw invalid(
      `the guest image is ${image.length} bytes, over the 16 MiB a client may send; put the ELF ` +
        "in the vmm's guest folder (--guest-dir) and name it instead",
    );
  }
  checkMemory(req.memory);
  // the guest boots as a VM of the template's name (its region becomes the template's memory)
  checkVmName(req.name, 'the template name, which its guest boots as,');
  checkNameFree(ctx, req.name, 'pick another template name, or destroy that VM');
  const vmm = ctx.registry.place(req.vmm);
  return {
    kind: 'template',
    vm: req.name,
    vmm,
    side: 'target',
    request: snapshotRequest({
      snapshot: req.name,
      guest,
      memory: req.memory,
      args: { ...req.args },
      readyTimeoutMs: req.readyTimeoutMs > 0 ? req.readyTimeoutMs : DEFAULT_READY_TIMEOUT_MS,
    }),
    ...(image !== undefined ? { guestImage: image } : {}),
  };
}

function checkMemory(memory: number): void {
  if (memory === 0) {
    throw invalid('--memory is required with --guest: the RAM of the booted guest (e.g. 256M)');
  }
  if (memory % 4096 !== 0 || memory > MAX_BLOCK) {
    throw invalid(
      `memory ${memory} bytes is not a multiple of 4 KiB up to 2 GiB; pick e.g. 128M or 256M`,
    );
  }
}

function needsCopy(spec: VmSpec | undefined): boolean {
  return spec === undefined ? false : copyNeeded(spec.ram);
}

/**
 * Whether a VM with these blocks must be saved by copying (SaveVm `full`): a bypass save seals
 * shared blocks in place or makes a layer of clone blocks, but not private blocks nor both
 * kinds at once.
 */
export function copyNeeded(ram: readonly { readonly backend: string }[]): boolean {
  if (ram.some((b) => b.backend === 'private')) return true;
  const clones = ram.filter((b) => b.backend === 'clone').length;
  return clones !== 0 && clones !== ram.length;
}

/** Clone(template, count, vmm, name_prefix, paused). */
export async function planClone(
  req: { template: string; count: number; vmm: string; namePrefix: string; paused: boolean },
  ctx: PlanContext,
): Promise<SnapshotPlan> {
  if (req.template === '') throw invalid('a template name is required (vmctl clone TEMPLATE)');
  if (!Number.isInteger(req.count) || req.count < 1 || req.count > MAX_CLONES) {
    throw invalid(`count ${req.count} is out of range: clone 1 to ${MAX_CLONES} VMs at once`);
  }
  const prefix = req.namePrefix !== '' ? req.namePrefix : req.template;
  if (!VM_NAME.test(`${prefix}-1`)) {
    throw invalid(
      `clone names would start with "${prefix}", which is not a valid VM name: pass ` +
        '--name-prefix with lower-case letters, digits, ".", "_" and "-"',
    );
  }
  const first = firstFreeIndex(prefix, ctx);
  const last = `${prefix}-${first + req.count - 1}`;
  if (last.length > VM_NAME_MAX) {
    throw invalid(
      `the last clone's name, ${last}, is longer than ${VM_NAME_MAX} characters; pass a ` +
        'shorter --name-prefix',
    );
  }
  await lookUp(ctx, req.template);
  const vmm = ctx.registry.place(req.vmm);
  return {
    kind: 'clone',
    vm: '',
    vmm,
    side: 'target',
    request: snapshotRequest({
      snapshot: req.template,
      count: req.count,
      namePrefix: prefix,
      firstIndex: first,
      paused: req.paused,
    }),
  };
}

/**
 * The first clone number after every `<prefix>-<k>` the cluster has or a running clone job will
 * make, so a clone's names never meet a VM of the same name.
 */
function firstFreeIndex(prefix: string, ctx: PlanContext): number {
  const pattern = new RegExp(`^${prefix.replace(/[.]/g, '\\.')}-([0-9]{1,9})$`);
  let max = 0;
  for (const name of ctx.registry.vmNames()) {
    const m = pattern.exec(name);
    if (m !== null) max = Math.max(max, Number(m[1]));
  }
  for (const k of ctx.reservedNumbers(prefix)) max = Math.max(max, k);
  return max + 1;
}
