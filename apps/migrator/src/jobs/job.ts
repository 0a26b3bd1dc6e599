import {
  LEGAL_TRANSITIONS,
  MIGRATION_CAPABILITIES,
  isMigrationCapability,
  isMigrationStatus,
  isTerminal,
  type MigrationCapabilities,
  type MigrationCapability,
  type MigrationInfo,
  type MigrationParameterOverrides,
  type MigrationStatus,
} from '@handoff/qapi';

/** What a job does. Save/restore/template/clone arrive with later milestones. */
export type JobKind = 'migrate' | 'live-update';

/**
 * Where a migrate job left its VM: on the `target` (it arrived), on the `source` (it stayed),
 * `lost` with a vmm whose process is gone (or restarted), or `unknown` (nothing could tell).
 */
export type VmWhereabouts = 'target' | 'source' | 'lost' | 'unknown';

/** Where a job left its VM, as the migrator established it when the job ended. */
export interface JobOutcome {
  readonly where: VmWhereabouts;
  /** The instance that holds the VM, or the one it was lost with ('' when unknown). */
  readonly vmm: string;
  /** One sentence for people: what happened to the VM and what to do. */
  readonly detail: string;
}

/**
 * One job as the migrator keeps it (domain type; the gRPC edge converts).
 * `info.status` is the job's status: it mirrors QAPI MigrationStatus and only
 * moves along qapi's legal transitions.
 */
export interface Job {
  readonly id: string;
  readonly kind: JobKind;
  /** The VM (migrate); '' for a live update. */
  readonly vm: string;
  readonly sourceVmm: string;
  readonly targetVmm: string;
  /** Addresses of the instances when the job was created (the journal keeps them for restart). */
  readonly sourceAddress: string;
  readonly targetAddress: string;
  readonly capabilities: MigrationCapabilities;
  readonly parameters: MigrationParameterOverrides;
  readonly info: MigrationInfo;
  readonly createdAt: Date;
  readonly finishedAt: Date | undefined;
  /** Child jobs (a live update has one migrate job per VM). */
  readonly children: readonly string[];
  /** The live update this migrate job belongs to, or ''. */
  readonly parent: string;
  /**
   * The memstore regions of the VM's shared blocks when the job was created: whose lease they
   * are in says which vmm may run the VM after an uncertain end. Undefined when the migrator
   * had no spec of the VM (and older journal lines).
   */
  readonly regions: readonly string[] | undefined;
  /** Where the job left the VM (migrate jobs, once ended); undefined before. */
  readonly outcome: JobOutcome | undefined;
}

/** True once the job can no longer change. */
export function isFinished(job: Job): boolean {
  return isTerminal(job.info.status);
}

/** Statuses a path passes through only when they are its end. */
const DETOURS = new Set<MigrationStatus>(['cancelling', 'postcopy-active', 'pre-switchover']);

/**
 * The shortest legal path from `from` to `to` through qapi's transition table
 * (without `from`, with `to`); [] when already there, undefined when `to`
 * cannot be reached. Intermediate steps never pass through a terminal status
 * or a detour (`cancelling`, `postcopy-active`, `pre-switchover`): a vmm reporting `device` while we saw only `setup` walks
 * setup → active → device.
 */
export function statusPath(
  from: MigrationStatus,
  to: MigrationStatus,
): MigrationStatus[] | undefined {
  if (from === to) return [];
  const previous = new Map<MigrationStatus, MigrationStatus>();
  const queue: MigrationStatus[] = [from];
  while (queue.length > 0) {
    const at = queue.shift()!;
    for (const next of LEGAL_TRANSITIONS[at]) {
      if (previous.has(next) || next === from) continue;
      previous.set(next, at);
      if (next === to) {
        const path: MigrationStatus[] = [to];
        let step = at;
        while (step !== from) {
          path.unshift(step);
          step = previous.get(step)!;
        }
        return path;
      }
      const detour = DETOURS.has(next) && !(next === 'cancelling' && to === 'cancelled');
      if (!isTerminal(next) && !detour) queue.push(next);
    }
  }
  return undefined;
}

/** The JSON form of a job in the journal (version 1). */
export interface JournalJob {
  id: string;
  kind: JobKind;
  vm: string;
  sourceVmm: string;
  targetVmm: string;
  sourceAddress: string;
  targetAddress: string;
  /** Enabled capabilities. */
  capabilities: MigrationCapability[];
  parameters: MigrationParameterOverrides;
  info: MigrationInfo;
  createdAt: string;
  finishedAt?: string;
  children: string[];
  parent: string;
  /** Since the outcome work; absent in older lines (read as none). */
  regions?: string[];
  outcome?: JobOutcome;
}

/** A job as one journal line stores it. */
export function jobToJournal(job: Job): JournalJob {
  const out: JournalJob = {
    id: job.id,
    kind: job.kind,
    vm: job.vm,
    sourceVmm: job.sourceVmm,
    targetVmm: job.targetVmm,
    sourceAddress: job.sourceAddress,
    targetAddress: job.targetAddress,
    capabilities: MIGRATION_CAPABILITIES.filter((c) => job.capabilities[c]),
    parameters: { ...job.parameters },
    info: job.info,
    createdAt: job.createdAt.toISOString(),
    children: [...job.children],
    parent: job.parent,
  };
  if (job.regions !== undefined) out.regions = [...job.regions];
  if (job.outcome !== undefined) out.outcome = { ...job.outcome };
  if (job.finishedAt !== undefined) out.finishedAt = job.finishedAt.toISOString();
  return out;
}

/** A job read back from the journal; throws on a record that is not one. */
export function jobFromJournal(j: JournalJob): Job {
  if (
    typeof j.id !== 'string' ||
    (j.kind !== 'migrate' && j.kind !== 'live-update') ||
    typeof j.info !== 'object' ||
    !isMigrationStatus(j.info.status)
  ) {
    throw new Error('not a job record');
  }
  const caps = {} as Record<MigrationCapability, boolean>;
  for (const c of MIGRATION_CAPABILITIES) caps[c] = false;
  for (const c of j.capabilities ?? []) if (isMigrationCapability(c)) caps[c] = true;
  return {
    id: j.id,
    kind: j.kind,
    vm: j.vm ?? '',
    sourceVmm: j.sourceVmm ?? '',
    targetVmm: j.targetVmm ?? '',
    sourceAddress: j.sourceAddress ?? '',
    targetAddress: j.targetAddress ?? '',
    capabilities: caps,
    parameters: j.parameters ?? {},
    info: j.info,
    createdAt: new Date(j.createdAt),
    finishedAt: j.finishedAt !== undefined ? new Date(j.finishedAt) : undefined,
    children: j.children ?? [],
    parent: j.parent ?? '',
    regions: Array.isArray(j.regions) ? j.regions.filter((r) => typeof r === 'string') : undefined,
    outcome: outcomeFromJournal(j.outcome),
  };
}

const WHEREABOUTS: readonly VmWhereabouts[] = ['target', 'source', 'lost', 'unknown'];

function outcomeFromJournal(o: unknown): JobOutcome | undefined {
  if (typeof o !== 'object' || o === null) return undefined;
  const { where, vmm, detail } = o as Record<string, unknown>;
  if (!WHEREABOUTS.includes(where as VmWhereabouts)) return undefined;
  return {
    where: where as VmWhereabouts,
    vmm: typeof vmm === 'string' ? vmm : '',
    detail: typeof detail === 'string' ? detail : '',
  };
}
