import { RemoteError, type Logger } from '@handoff/service';
import type { ReadyWait, Saved, VmmCalls } from '../clients/vmm-client.js';
import type { VmSpec, VmStatus } from '../registry/hosted-vm.js';
import { cloneNames, type Job, type SnapshotRequest, type SnapshotResult } from './job.js';
import { copyNeeded, DRAM_BASE } from './snapshot-plans.js';

/**
 * The vmm calls of save, restore, template and clone jobs. Each job makes one call (a template
 * from a guest: CreateVm, a wait for the ready doorbell, then SaveVm) and ends with the vmm's
 * answer. An end the vmm did not decide — the connection broke, the deadline passed, the vmm
 * shut down — is `uncertain`: the job's runner then looks at what exists
 * (snapshot-resolve.ts) instead of guessing.
 */

/** How a snapshot job ended, or `uncertain` when only looking can tell. */
export type SnapshotEnd =
  | {
      readonly status: 'completed';
      readonly result: SnapshotResult;
      /** The VMs it started, as their vmm answered (the registry learns them at once). */
      readonly started: readonly VmStatus[];
    }
  | { readonly status: 'failed' | 'cancelled'; readonly error: string }
  | { readonly status: 'uncertain'; readonly error: string };

/** What the calls need. */
export interface SnapshotRunDeps {
  readonly vmms: VmmCalls;
  /** Deadline of SaveVm, RestoreVm and CloneVms. */
  readonly deadlineMs: number;
  /** Aborted when the job is cancelled (only a template's wait for its guest stops for it). */
  readonly signal: AbortSignal;
  readonly log: Logger;
  /**
   * A template's guest ELF as the client sent it (CreateTemplate's `guest_image`), passed to the
   * vmm's CreateVm; undefined when the vmm finds the guest by name. Kept in memory only.
   */
  readonly guestImage?: Uint8Array | undefined;
}

/** The instance a snapshot job works on: its source (save, template of a VM) or target. */
export function workerOf(job: Job): { id: string; address: string } {
  return job.sourceVmm !== ''
    ? { id: job.sourceVmm, address: job.sourceAddress }
    : { id: job.targetVmm, address: job.targetAddress };
}

/** Codes that come from the service runtime rather than the vmm's decision. */
const UNDECIDED = new Set([
  'SERVICE_INTERNAL',
  'SERVICE_SHUTTING_DOWN',
  'SERVICE_UNAVAILABLE',
  'SERVICE_DEADLINE_EXCEEDED',
]);

/**
 * Whether a call's error is the vmm's decision (a coded error: nothing was made) rather than an
 * end nobody decided (a broken connection, a passed deadline, a vmm shutting down, an internal
 * error).
 */
export function isDecided(err: unknown): boolean {
  return err instanceof RemoteError && !err.code.startsWith('GRPC_') && !UNDECIDED.has(err.code);
}

/** The vmm calls whose name a RemoteError's message starts with (the job's words say it). */
const CALL_PREFIX = /^(saveVm|restoreVm|cloneVms|createVm|destroyVm|watchVm): /;

/** What an error says, without the name of the call it came from. */
export function messageOf(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(CALL_PREFIX, '');
}

/** The vmm's error as the job's end: decided errors fail it, the others are uncertain. */
function ended(err: unknown, what: string): SnapshotEnd {
  const error = `${what}: ${messageOf(err)}`;
  return isDecided(err) ? { status: 'failed', error } : { status: 'uncertain', error };
}

/** A save's (or a template's) completed end, from the vmm's answer. */
function completedSave(saved: Saved): SnapshotEnd {
  return {
    status: 'completed',
    result: {
      snapshot: saved.snapshot,
      vms: [],
      pauseUs: saved.pauseUs,
      durationUs: saved.durationUs,
      bytes: saved.bytes,
      runningAfterUs: [],
    },
    started: [],
  };
}

/** Runs the job's vmm call(s); never rejects. */
export async function runSnapshotJob(deps: SnapshotRunDeps, job: Job): Promise<SnapshotEnd> {
  const r = job.snapshot!;
  switch (job.kind) {
    case 'save':
      return save(deps, job, r, false);
    case 'template':
      return r.guest === '' ? save(deps, job, r, true) : templateFromGuest(deps, job, r);
    case 'restore':
      return restore(deps, job, r);
    case 'clone':
      return clone(deps, job, r);
    default:
      return { status: 'failed', error: `job ${job.id} is not a snapshot job` };
  }
}

async function save(
  deps: SnapshotRunDeps,
  job: Job,
  r: SnapshotRequest,
  template: boolean,
): Promise<SnapshotEnd> {
  const at = workerOf(job);
  try {
    // A template of a running VM is whatever that VM holds now: its RAM is sealed in place when
    // every block is shared, becomes a layer over its snapshot when every block is clone RAM,
    // else is copied (private RAM, or both kinds). The VM's vmm says what its blocks are now.
    const full = template ? await needsCopy(deps, at.address, job.vm, r.full) : r.full;
    const saved = await deps.vmms.saveVm(
      at.address,
      {
        vm: job.vm,
        jobId: job.id,
        snapshot: r.snapshot,
        full,
        stop: r.stop,
        template,
      },
      deps.deadlineMs,
    );
    return completedSave(saved);
  } catch (err) {
    return ended(err, `save of VM ${job.vm} on ${at.id} as ${r.snapshot} failed`);
  }
}

/**
 * Whether VM `name` must be saved by copying: a private block, or shared and clone blocks
 * mixed (asked of its vmm; else `guess`).
 */
async function needsCopy(
  deps: SnapshotRunDeps,
  address: string,
  name: string,
  guess: boolean,
): Promise<boolean> {
  const vm = await deps.vmms.vm(address, name).catch(() => null);
  if (vm?.spec === undefined) return guess;
  return copyNeeded(vm.spec.ram);
}

async function restore(deps: SnapshotRunDeps, job: Job, r: SnapshotRequest): Promise<SnapshotEnd> {
  const at = workerOf(job);
  try {
    const { vm, durationUs } = await deps.vmms.restoreVm(
      at.address,
      { name: job.vm, snapshot: r.snapshot, paused: r.paused, jobId: job.id },
      deps.deadlineMs,
    );
    return {
      status: 'completed',
      result: {
        snapshot: r.snapshot,
        vms: [vm.name],
        pauseUs: 0,
        durationUs,
        bytes: 0,
        runningAfterUs: [durationUs],
      },
      started: [vm],
    };
  } catch (err) {
    return ended(err, `restore of ${r.snapshot} as VM ${job.vm} on ${at.id} failed`);
  }
}

async function clone(deps: SnapshotRunDeps, job: Job, r: SnapshotRequest): Promise<SnapshotEnd> {
  const at = workerOf(job);
  const names = cloneNames(r);
  const span = names.length === 1 ? names[0] : `${names[0]} .. ${names.at(-1)}`;
  try {
    const cloned = await deps.vmms.cloneVms(
      at.address,
      {
        snapshot: r.snapshot,
        count: r.count,
        namePrefix: r.namePrefix,
        firstIndex: r.firstIndex,
        paused: r.paused,
        jobId: job.id,
      },
      deps.deadlineMs,
    );
    return {
      status: 'completed',
      result: {
        snapshot: r.snapshot,
        vms: cloned.vms.map((v) => v.name),
        pauseUs: 0,
        durationUs: cloned.durationUs,
        bytes: 0,
        runningAfterUs: [...cloned.runningAfterUs],
      },
      started: cloned.vms,
    };
  } catch (err) {
    return ended(err, `clone of ${r.snapshot} as ${span} on ${at.id} failed`);
  }
}

/** The spec of a template's guest: one shared block in a region the vmm creates for it. */
export function bootSpec(name: string, r: SnapshotRequest): VmSpec {
  return {
    name,
    guest: r.guest,
    ram: [
      {
        id: 'ram0',
        guestBase: DRAM_BASE,
        size: r.memory,
        backend: 'shared',
        region: '',
        regionOwned: false,
      },
    ],
    args: { ...r.args },
  };
}

/**
 * A template from a guest: CreateVm (shared RAM in a region created for it), a wait for its
 * ready doorbell, then SaveVm with stop and template (its region is sealed in place as the
 * template's memory and the VM freed). A guest that never rings ready, or a save that fails,
 * leaves nothing: the VM is destroyed (best effort; the error says when that failed too).
 */
async function templateFromGuest(
  deps: SnapshotRunDeps,
  job: Job,
  r: SnapshotRequest,
): Promise<SnapshotEnd> {
  const at = workerOf(job);
  const name = job.vm;
  const destroyed = async (why: string, status: 'failed' | 'cancelled' = 'failed') => {
    const left = await destroyBootVm(deps, at.address, name);
    return { status, error: `${why}; ${left}` } as const;
  };
  try {
    await deps.vmms.createVm(at.address, bootSpec(name, r), deps.guestImage);
  } catch (err) {
    if (isDecided(err)) {
      return {
        status: 'failed',
        error: `guest ${r.guest} could not boot on ${at.id}: ${messageOf(err)}`,
      };
    }
    return destroyed(
      `creating the VM of guest ${r.guest} on ${at.id} did not complete (${messageOf(err)})`,
    );
  }
  deps.log.info({ vm: name, vmm: at.id, guest: r.guest }, 'template guest booting');
  let wait: ReadyWait;
  try {
    wait = await deps.vmms.awaitReady(at.address, name, {
      timeoutMs: r.readyTimeoutMs,
      signal: deps.signal,
    });
  } catch (err) {
    return destroyed(
      `lost the watch of VM ${name} on ${at.id} before its guest rang ready (${messageOf(err)})`,
    );
  }
  if (!wait.ready) {
    if (wait.why === 'cancelled')
      return destroyed(`cancelled while guest ${r.guest} booted`, 'cancelled');
    const what =
      wait.why === 'timeout'
        ? `guest ${r.guest} on ${at.id} never rang its ready doorbell within ` +
          `${(r.readyTimeoutMs / 1000).toFixed(1)} s`
        : `guest ${r.guest} on ${at.id} never rang its ready doorbell: ${wait.detail}`;
    return destroyed(
      `${what}. A template needs a guest that rings READY once it is set up (kvserver does); ` +
        'if it is only slow, raise --ready-timeout',
    );
  }
  if (deps.signal.aborted)
    return destroyed(`cancelled once guest ${r.guest} was ready`, 'cancelled');
  try {
    const saved = await deps.vmms.saveVm(
      at.address,
      { vm: name, jobId: job.id, snapshot: r.snapshot, full: false, stop: true, template: true },
      deps.deadlineMs,
    );
    return completedSave(saved);
  } catch (err) {
    if (!isDecided(err))
      return ended(err, `saving VM ${name} on ${at.id} as template ${r.snapshot}`);
    return destroyed(
      `saving VM ${name} on ${at.id} as template ${r.snapshot} failed: ${messageOf(err)}`,
    );
  }
}

/** Destroys a template's boot VM; says what became of it. */
export async function destroyBootVm(
  deps: Pick<SnapshotRunDeps, 'vmms' | 'log'>,
  address: string,
  name: string,
): Promise<string> {
  try {
    await deps.vmms.destroyVm(address, name);
    return `its VM ${name} was destroyed`;
  } catch (err) {
    deps.log.warn({ vm: name, err }, 'could not destroy the template guest');
    return `destroying its VM ${name} failed (${messageOf(err)}): destroy it with \`vmctl vm destroy ${name}\``;
  }
}
