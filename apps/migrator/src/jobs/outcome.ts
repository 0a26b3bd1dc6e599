import { isTerminal, type MigrationInfo } from '@handoff/qapi';
import { unreachableHow, type ArrivalEnd, type VmmCalls } from '../clients/vmm-client.js';
import type { RegionLease, RegionLeases } from '../clients/memstore-client.js';
import { ownsVm, type VmState } from '../registry/hosted-vm.js';
import type { Job, JobOutcome } from './job.js';

/**
 * Where a migrate job's VM is once its migration ended without the source's final word — the
 * connection to the source dropped, the call ended without its final info, the source said
 * MIGRATION_UNCERTAIN, the migrator restarted — and after any other end that is not a
 * completion. The migrator asks (gathers {@link Evidence}) and then judges, never guesses:
 *
 * - the source: how its migration of the VM ended (waiting while it still runs) and the VM's
 *   state there;
 * - the target: CancelIncoming for the job (which also frees the VM's name there unless the VM
 *   arrived) and the VM's state there;
 * - memstore: who holds the lease of the VM's shared regions (`<vmm-id>/<vm>`).
 *
 * Nothing here changes where the VM runs: the cancels only stop what has not reached its point
 * of no return, and the lease already decided the rest.
 */

/** What one vmm said about the VM. */
export interface Sighting {
  /** Whether it answered, or why not (`refused`: its process is gone; `silent`: no answer). */
  readonly reach: 'answers' | 'refused' | 'silent';
  /** The VM's state there; null when it has no VM of that name; undefined when not known. */
  readonly state: VmState | null | undefined;
}

/** Everything the verdict is made of. */
export interface Evidence {
  readonly source: Sighting & {
    /** Its last migration of the VM once it ended (null: it knows none; undefined: not known). */
    readonly migration: MigrationInfo | null | undefined;
  };
  readonly target: Sighting & {
    /** How the job's arrival ended there (undefined: not known). */
    readonly arrival: ArrivalEnd | undefined;
  };
  /** The leases of the VM's shared regions; undefined when memstore could not be asked. */
  readonly leases: readonly RegionLease[] | undefined;
}

/** What the job becomes. */
export interface Verdict {
  readonly status: 'completed' | 'failed' | 'cancelled';
  readonly outcome: JobOutcome;
  /** The source's final info, when it reported the migration completed. */
  readonly info: MigrationInfo | undefined;
  /** How the source said its migration failed, when it did. */
  readonly sourceError: string | undefined;
}

/** How long gathering may wait and retry; `closed` stops it (the migrator is stopping). */
export interface GatherTiming {
  /** How long to wait for a source whose migration still runs to end it. */
  readonly settleMs: number;
  /** How often to ask such a source (GetMigration). */
  readonly pollMs: number;
  /** How long to keep trying a target that does not answer CancelIncoming. */
  readonly retryMs: number;
  readonly closed: () => boolean;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

/** How long a source whose connection just broke is asked again before it counts as silent. */
const PROBE_MS = 2000;

/**
 * Asks both ends and memstore where the job's VM is (see the module comment). Waits for the
 * source's migration to end first; then gives up the job's arrival on the target (unless the
 * VM arrived there), so a VM that stayed on the source leaves no reservation behind. Never
 * rejects: what cannot be asked is left unknown.
 */
export async function gatherEvidence(
  deps: { vmms: VmmCalls; leases: RegionLeases | undefined },
  job: Job,
  timing: GatherTiming,
): Promise<Evidence> {
  const { vmms } = deps;
  // 1. The source's migration, once it ended.
  let sourceReach: Sighting['reach'] = 'answers';
  let migration: MigrationInfo | null | undefined;
  const deadline = Date.now() + timing.settleMs;
  // A connection that just broke fails the first calls as broken ('silent'); a process that is
  // gone refuses the reconnection moments later: ask again for a little while to tell the two.
  const probeUntil = Date.now() + Math.min(timing.retryMs, PROBE_MS);
  for (let delay = 50; ;) {
    try {
      migration = await vmms.migration(job.sourceAddress, job.vm, job.id);
    } catch (err) {
      sourceReach = unreachableHow(err) ?? 'silent';
      migration = undefined;
      if (sourceReach === 'silent' && Date.now() < probeUntil && !timing.closed()) {
        await sleep(delay);
        delay = Math.min(delay * 2, 500);
        continue;
      }
      break;
    }
    if (migration === null || isTerminal(migration.status) || migration.status === 'none') break;
    if (Date.now() > deadline || timing.closed()) {
      migration = undefined; // still running: it has not ended
      break;
    }
    await sleep(Math.max(timing.pollMs, 20));
  }
  // 2. The target gives the arrival up unless it arrived, and says how it ended.
  let targetReach: Sighting['reach'] = 'answers';
  let arrival: ArrivalEnd | undefined;
  const until = Date.now() + timing.retryMs;
  for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
    try {
      arrival = await vmms.cancelIncoming(job.targetAddress, job.vm, job.id);
      targetReach = 'answers';
      break;
    } catch (err) {
      const how = unreachableHow(err);
      if (how === undefined) break; // it answered with an error (an older vmm): not known
      targetReach = how;
      if (Date.now() > until || timing.closed()) break;
      await sleep(delay);
    }
  }
  // 3. The VM on each end, and 4. the leases, at once.
  const stateOn = async (
    address: string,
  ): Promise<[VmState | null | undefined, Sighting['reach'] | undefined]> => {
    try {
      const vm = await vmms.vm(address, job.vm);
      return [vm?.state ?? null, 'answers'];
    } catch (err) {
      return [undefined, unreachableHow(err)];
    }
  };
  const leasesNow = async (): Promise<RegionLease[] | undefined> => {
    const names = job.regions;
    if (names?.length === 0) return [];
    if (names === undefined || deps.leases === undefined) return undefined;
    try {
      const found = await Promise.all(names.map((r) => deps.leases!.leaseOf(r)));
      return found.filter((l): l is RegionLease => l !== null);
    } catch {
      return undefined;
    }
  };
  const [[srcState, srcReach], [dstState, dstReach], leases] = await Promise.all([
    sourceReach === 'answers'
      ? stateOn(job.sourceAddress)
      : Promise.resolve([undefined, sourceReach] as const),
    stateOn(job.targetAddress),
    leasesNow(),
  ]);
  return {
    source: { reach: srcReach ?? sourceReach, state: srcState, migration },
    target: { reach: dstReach ?? targetReach, state: dstState, arrival },
    leases,
  };
}

/**
 * Who the leases name: one end, nobody, several, or none to ask about / not known; or another
 * host's page source (`<memstore-id>/lazy/<source>`): a post-copy across hosts took the memory
 * there when the source stopped.
 */
type LeaseSays =
  'target' | 'source' | 'nobody' | 'mixed' | 'none' | 'unknown' | 'elsewhere' | 'page-source';

/** A lease holder that is another memstore's page source (post-copy across hosts). */
const PAGE_SOURCE_HOLDER = /^[^/]+\/lazy\/[^/]+$/;

/**
 * Who a lease names: its holder; for a lease memstore fenced because its holder's process was
 * gone, that holder (the VM was theirs when they died; nobody may run it since).
 */
function holderOf(l: RegionLease): string | null {
  if (l.holder !== null) return l.holder;
  return l.fenced?.because === 'holder-gone' ? l.fenced.from : null;
}

function leaseSays(job: Job, leases: readonly RegionLease[] | undefined): LeaseSays {
  if (leases === undefined) return 'unknown';
  if (job.regions?.length === 0 || leases.length === 0) return 'none';
  const holders = new Set(leases.map(holderOf));
  if (holders.size > 1) return 'mixed';
  const holder = [...holders][0]!;
  if (holder === null) return 'nobody';
  if (holder === `${job.targetVmm}/${job.vm}`) return 'target';
  if (holder === `${job.sourceVmm}/${job.vm}`) return 'source';
  return PAGE_SOURCE_HOLDER.test(holder) ? 'page-source' : 'elsewhere';
}

/** Whether a vmm reporting the VM in `state` holds it (not a postmigrate husk, not arriving). */
function holds(state: VmState | null | undefined): boolean {
  return state !== null && state !== undefined && state !== 'unknown' && ownsVm(state);
}

/**
 * The verdict on evidence `e` for `job`. `cancelled`: the job was asked to stop (by a user, or
 * by the migrator that restarted), so a VM that stayed on the source is a cancelled job.
 */
export function judge(job: Job, e: Evidence, opts: { cancelled: boolean }): Verdict {
  const { vm, sourceVmm: src, targetVmm: dst } = job;
  const lease = leaseSays(job, e.leases);
  const onTarget =
    holds(e.target.state) || (e.target.state === undefined && e.target.arrival === 'arrived');
  const onSource = holds(e.source.state);
  const regions = (job.regions ?? []).join(', ');
  const memory =
    job.regions === undefined
      ? 'the migrator had no spec of it, so whether its memory outlives it is unknown'
      : job.regions.length > 0
        ? `its memory is in region ${regions} (kept)`
        : 'its RAM was private to that process and is gone';
  const verdict = (
    status: Verdict['status'],
    where: JobOutcome['where'],
    vmm: string,
    detail: string,
  ): Verdict => ({
    status,
    outcome: { where, vmm, detail },
    info: e.source.migration?.status === 'completed' ? e.source.migration : undefined,
    sourceError: e.source.migration?.status === 'failed' ? e.source.migration.errorDesc : undefined,
  });
  const unknown = (why: string): Verdict =>
    verdict(
      'failed',
      'unknown',
      '',
      `could not tell where VM ${vm} runs (${why}): ${src} ${describe(e.source)}, ${dst} ` +
        `${describe(e.target)}, memstore ${describeLeases(e.leases)}; look with \`vmctl vm list\``,
    );

  // A copy migration lands the VM in the target's private memory: the source's regions (and
  // their leases) say nothing about the target then.
  const copied = job.capabilities['bypass-shared-memory'] !== true;
  if (onTarget) {
    const fits = lease === 'target' || lease === 'none' || lease === 'unknown';
    if (!copied && !fits && lease !== 'page-source') {
      return unknown(`${dst} has the VM but the lease is not its own`);
    }
    const holdsLease =
      lease === 'target'
        ? ` with the lease of region ${regions}`
        : lease === 'page-source'
          ? ` (post-copy: its host's memstore took region ${regions} from ${src}'s at the stop)`
          : '';
    let aside = '';
    if (onSource) {
      aside =
        `; ${src} keeps a ${e.source.state} copy that must never run: destroy it there ` +
        `(\`vmctl vm destroy ${vm} --vmm ${src}\`)`;
    } else if (e.source.reach !== 'answers') {
      aside = `; ${src} did not answer (${reasonOf(e.source.reach, 'unknown')})`;
    }
    return verdict('completed', 'target', dst, `VM ${vm} runs on ${dst}${holdsLease}${aside}`);
  }
  const holder = liveness(e.leases);
  const sourceKnowsJob = e.source.migration !== null && e.source.migration !== undefined;
  const targetKnowsJob = e.target.arrival !== undefined && e.target.arrival !== 'none';
  if (onSource) {
    if (lease === 'target') {
      if (!lostWith(e.target, holder, targetKnowsJob)) {
        return unknown(`${dst} holds the lease but did not answer whether it runs the VM`);
      }
      return verdict(
        'failed',
        'lost',
        dst,
        `VM ${vm} was lost with ${dst} (${reasonOf(e.target.reach, holder)}), which took its ` +
          `lease; ${src} keeps a ${e.source.state} copy that can never run again; ${memory}`,
      );
    }
    if (lease !== 'source' && lease !== 'none' && lease !== 'unknown') {
      return unknown(`the lease of region ${regions} is not ${src}'s`);
    }
    // cancelled: the source stopped it on the cancel, or never began it (MigrateVm never came)
    const m = e.source.migration;
    const cancelled = opts.cancelled && (m === null || m?.status === 'cancelled');
    const how = e.source.state === 'running' ? 'runs on' : `is ${e.source.state} on`;
    return verdict(cancelled ? 'cancelled' : 'failed', 'source', src, `VM ${vm} ${how} ${src}`);
  }
  // Neither end holds the VM: it was lost with the one whose process is gone (or restarted
  // without it), as long as the other one cannot be running it.
  const handedOver =
    lease === 'target' ||
    e.source.state === 'postmigrate' ||
    e.source.migration?.status === 'completed';
  if (handedOver) {
    if (!lostWith(e.target, lease === 'target' ? holder : 'unknown', targetKnowsJob)) {
      return unknown(`${dst} got the VM but did not answer whether it runs it`);
    }
    return verdict(
      'failed',
      'lost',
      dst,
      `VM ${vm} was lost with ${dst} (${reasonOf(e.target.reach, holder)}) after it arrived ` +
        `there; ${memory}`,
    );
  }
  const targetHasNot = e.target.reach === 'answers' || lease === 'source';
  if (
    (lease === 'source' || lease === 'none' || lease === 'unknown') &&
    targetHasNot &&
    lostWith(e.source, lease === 'source' ? holder : 'unknown', sourceKnowsJob)
  ) {
    return verdict(
      'failed',
      'lost',
      src,
      `VM ${vm} was lost with ${src} (${reasonOf(e.source.reach, holder)}); ${memory}`,
    );
  }
  if (e.source.reach === 'silent') {
    return unknown(`${src} does not answer: the VM may still run there`);
  }
  return unknown('neither end holds it');
}

/**
 * Whether verdict `v` leaves the VM paused on its source although the target is known not to run
 * it: the target's process is gone (nothing listens; a restarted vmm has no VMs) or it answered
 * without the VM after the arrival was given up, and the VM's shared memory (if any) is still
 * leased by the source. Then only the source can run it, and nothing else will resume it.
 */
export function leftPausedOnSource(job: Job, v: Verdict, e: Evidence): boolean {
  if (v.outcome.where !== 'source' || e.source.state !== 'paused') return false;
  const targetHasNone =
    e.target.reach === 'refused' || (e.target.reach === 'answers' && e.target.state === null);
  const leasesOk =
    e.leases !== undefined && e.leases.every((l) => l.holder === `${job.sourceVmm}/${job.vm}`);
  return targetHasNone && leasesOk;
}

/**
 * Whether a vmm that does not hold the VM lost it: its process is gone (nothing listens at its
 * address, or memstore says the lease holder is gone) or it answers without the VM and without
 * any memory of the job (it restarted). One that does not answer may still run it; one that
 * remembers the job but not the VM had it destroyed, which is no loss the job can tell.
 */
function lostWith(s: Sighting, holder: RegionLease['holderLiveness'], knowsJob: boolean): boolean {
  if (s.reach === 'refused' || holder === 'gone') return true;
  // answering without the VM is a restart only if it knows nothing of this job either
  return s.reach === 'answers' && s.state === null && !knowsJob;
}

/** The liveness memstore reports of the leases' one holder ('unknown' until it reports it). */
function liveness(leases: readonly RegionLease[] | undefined) {
  const all = new Set((leases ?? []).map((l) => l.holderLiveness));
  return all.size === 1 ? [...all][0]! : 'unknown';
}

/**
 * Why a vmm lost or did not confirm the VM: its process is gone (nothing listens, or memstore
 * says its lease holder is gone), it does not answer, or it answers but restarted without it.
 */
function reasonOf(reach: Sighting['reach'], holder: RegionLease['holderLiveness']): string {
  if (reach === 'refused' || holder === 'gone') return 'its process is gone';
  if (reach === 'silent') return 'it does not answer';
  return 'its process restarted without it';
}

function describe(s: Sighting): string {
  if (s.reach !== 'answers') return s.reach === 'refused' ? 'is gone' : 'does not answer';
  if (s.state === null) return 'has no such VM';
  return s.state === undefined ? 'was not asked' : `has it ${s.state}`;
}

function describeLeases(leases: readonly RegionLease[] | undefined): string {
  if (leases === undefined) return 'could not be asked';
  if (leases.length === 0) return 'knows no lease of it';
  return leases
    .map(
      (l) =>
        `${l.region}: ${l.holder ?? (l.fenced !== null ? `nobody (fenced from ${l.fenced.from})` : 'nobody')}`,
    )
    .join(', ');
}
