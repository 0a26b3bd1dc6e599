import type { Logger } from '@handoff/service';
import type { SnapshotCatalog, SnapshotFacts } from '../clients/memstore-client.js';
import type { VmmCalls } from '../clients/vmm-client.js';
import type { VmStatus } from '../registry/hosted-vm.js';
import { cloneNames, type Job } from './job.js';
import { destroyBootVm, messageOf, workerOf, type SnapshotEnd } from './snapshot-run.js';

/**
 * How a snapshot job ended when the migrator did not see its end: it restarted while the job
 * ran, or the vmm call ended without the vmm's word (a broken connection, a passed deadline).
 * The migrator looks at what exists and claims nothing it cannot see:
 *
 * - save, template: the job completed when memstore has the snapshot, made for this job's VM
 *   after the job began; otherwise it failed, saying what the VM's vmm says of the VM. A
 *   template's boot VM that was never saved is destroyed (nothing else would ever save it).
 * - restore, clone: the job completed when the vmm runs every VM it was to start, each from the
 *   job's snapshot; otherwise it failed, naming the ones that exist.
 *
 * Both wait up to `settleMs` for the work to show (a vmm may still be doing it). The statistics
 * of work the migrator did not see end (pause, duration, bytes) are unknown and stay 0.
 */

/** How long to look, how often, and when to stop (the migrator is stopping). */
export interface ResolveTiming {
  readonly settleMs: number;
  readonly pollMs: number;
  readonly closed: () => boolean;
}

/** What resolving asks. */
export interface ResolveDeps {
  readonly vmms: VmmCalls;
  readonly snapshots: SnapshotCatalog | undefined;
  readonly log: Logger;
}

/** A snapshot made by `job` may be this much older than the job (clocks of two processes). */
const CLOCK_SLACK_MS = 2000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

/**
 * Asks `look` until it answers something, `settleMs` passed, or the migrator stops; the last
 * answer (undefined: nothing yet), or the error of the last attempt when none succeeded.
 */
async function poll<T>(
  look: () => Promise<T | undefined>,
  timing: ResolveTiming,
): Promise<{ value: T | undefined; error: unknown }> {
  const deadline = Date.now() + timing.settleMs;
  let error: unknown;
  for (;;) {
    try {
      const value = await look();
      error = undefined;
      if (value !== undefined) return { value, error };
    } catch (err) {
      error = err;
    }
    if (Date.now() >= deadline || timing.closed()) return { value: undefined, error };
    await sleep(Math.max(timing.pollMs, 20));
  }
}

/** Resolves a snapshot job whose end the migrator did not see (see the module comment). */
export async function resolveSnapshotJob(
  deps: ResolveDeps,
  job: Job,
  timing: ResolveTiming,
): Promise<SnapshotEnd> {
  switch (job.kind) {
    case 'save':
    case 'template':
      return resolveSave(deps, job, timing);
    case 'restore':
    case 'clone':
      return resolveStart(deps, job, timing);
    default:
      return { status: 'failed', error: `job ${job.id} is not a snapshot job` };
  }
}

async function resolveSave(
  deps: ResolveDeps,
  job: Job,
  timing: ResolveTiming,
): Promise<SnapshotEnd> {
  const name = job.snapshot!.snapshot;
  const at = workerOf(job);
  if (deps.snapshots === undefined) {
    return {
      status: 'failed',
      error:
        `this migrator has no memstore to ask whether snapshot ${name} was made; check with ` +
        `\`vmctl snapshot show ${name}\``,
    };
  }
  const catalog = deps.snapshots;
  const made = (s: SnapshotFacts | null) =>
    s !== null &&
    s.vmName === job.vm &&
    (s.createdAt === undefined ||
      s.createdAt.getTime() >= job.createdAt.getTime() - CLOCK_SLACK_MS);
  const { value: found, error } = await poll(async () => {
    const s = await catalog.snapshotOf(name);
    return made(s) ? s! : undefined;
  }, timing);
  if (found !== undefined) {
    deps.log.info({ job: job.id, snapshot: name }, 'the snapshot exists: the save completed');
    return {
      status: 'completed',
      result: { snapshot: name, vms: [], pauseUs: 0, durationUs: 0, bytes: 0, runningAfterUs: [] },
      started: [],
    };
  }
  if (error !== undefined) {
    return {
      status: 'failed',
      error:
        `memstore did not answer (${messageOf(error)}): whether snapshot ${name} was made is ` +
        `unknown; check with \`vmctl snapshot show ${name}\``,
    };
  }
  const none = `memstore has no snapshot ${name} of VM ${job.vm} (looked for ${(timing.settleMs / 1000).toFixed(1)} s): the save did not complete`;
  const vm = await deps.vmms.vm(at.address, job.vm).catch((err: unknown) => err as Error);
  if (
    job.kind === 'template' &&
    job.snapshot!.guest !== '' &&
    vm !== null &&
    !(vm instanceof Error)
  ) {
    return { status: 'failed', error: `${none}; ${await destroyBootVm(deps, at.address, job.vm)}` };
  }
  return { status: 'failed', error: `${none}; ${whereIs(job.vm, at.id, vm)}` };
}

/** "VM vm1 runs on vmm-a" and the like, from GetVm's answer (or its error). */
function whereIs(name: string, vmm: string, vm: VmStatus | null | Error): string {
  if (vm instanceof Error) return `${vmm} did not answer about VM ${name} (${messageOf(vm)})`;
  if (vm === null) return `VM ${name} is not on ${vmm}`;
  if (vm.state === 'running') return `VM ${name} runs on ${vmm}`;
  return `VM ${name} is ${vm.state} on ${vmm}`;
}

async function resolveStart(
  deps: ResolveDeps,
  job: Job,
  timing: ResolveTiming,
): Promise<SnapshotEnd> {
  const r = job.snapshot!;
  const at = workerOf(job);
  const names = job.kind === 'clone' ? cloneNames(r) : [job.vm];
  let seen: VmStatus[] = [];
  const { value: all, error } = await poll(async () => {
    const vms = await deps.vmms.vms(at.address);
    seen = names
      .map((n) => vms.find((v) => v.name === n))
      .filter((v): v is VmStatus => v !== undefined && v.snapshot === r.snapshot);
    return seen.length === names.length ? seen : undefined;
  }, timing);
  if (all !== undefined) {
    return {
      status: 'completed',
      result: {
        snapshot: r.snapshot,
        vms: names,
        pauseUs: 0,
        durationUs: 0,
        bytes: 0,
        runningAfterUs: [],
      },
      started: all,
    };
  }
  if (error !== undefined) {
    return {
      status: 'failed',
      error:
        `${at.id} did not answer (${messageOf(error)}): whether it runs the VMs of this job is ` +
        'unknown; look with `vmctl vm list`',
    };
  }
  const what =
    job.kind === 'clone' ? `the ${names.length} clone(s) of ${r.snapshot}` : `VM ${job.vm}`;
  if (seen.length === 0) {
    return {
      status: 'failed',
      error: `${at.id} runs none of ${what} from ${r.snapshot}: it did not complete`,
    };
  }
  return {
    status: 'failed',
    error:
      `${at.id} runs ${seen.length} of ${what} (${seen.map((v) => v.name).join(', ')}): it did ` +
      'not complete; destroy those it made with `vmctl vm destroy NAME` before trying again',
  };
}
