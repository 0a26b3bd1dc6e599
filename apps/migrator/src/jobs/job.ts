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

/** The jobs that save, restore, make templates of or clone VMs (snapshots in memstore). */
export type SnapshotJobKind = 'save' | 'restore' | 'template' | 'clone';

/** What a job does. */
export type JobKind = 'migrate' | 'live-update' | SnapshotJobKind;

const JOB_KINDS: readonly JobKind[] = [
  'migrate',
  'live-update',
  'save',
  'restore',
  'template',
  'clone',
];

/** Whether a job of `kind` is a save, restore, template or clone job. */
export function isSnapshotKind(kind: JobKind): kind is SnapshotJobKind {
  return kind !== 'migrate' && kind !== 'live-update';
}

/**
 * What a save, restore, template or clone job was asked to do, as validated (defaults filled
 * in). Journaled: after a restart the migrator resolves the job from it. Fields a kind does not
 * use keep their zero value.
 */
export interface SnapshotRequest {
  /** The snapshot saved (save, template), restored from (restore) or cloned (clone). */
  readonly snapshot: string;
  /** save: copy the RAM instead of sealing the VM's regions in place (template from a VM too). */
  readonly full: boolean;
  /** save: destroy the VM after the save. */
  readonly stop: boolean;
  /** restore, clone: leave the new VMs paused. */
  readonly paused: boolean;
  /** template: the guest booted for it; '' when it is saved from a running VM (`Job.vm`). */
  readonly guest: string;
  /** template from a guest: its RAM in bytes. */
  readonly memory: number;
  /** template from a guest: its host args. */
  readonly args: Readonly<Record<string, string>>;
  /** template from a guest: how long to wait for its ready doorbell. */
  readonly readyTimeoutMs: number;
  /** clone: how many VMs, named `<namePrefix>-<k>` for k = firstIndex, firstIndex + 1, .... */
  readonly count: number;
  readonly namePrefix: string;
  readonly firstIndex: number;
}

/** A snapshot request with every field at its zero value (kinds fill in what they use). */
export function snapshotRequest(fields: Partial<SnapshotRequest>): SnapshotRequest {
  return {
    snapshot: '',
    full: false,
    stop: false,
    paused: false,
    guest: '',
    memory: 0,
    args: {},
    readyTimeoutMs: 0,
    count: 0,
    namePrefix: '',
    firstIndex: 0,
    ...fields,
  };
}

/** The names a clone job gives its VMs, in order. */
export function cloneNames(r: SnapshotRequest): string[] {
  return Array.from({ length: r.count }, (_, i) => `${r.namePrefix}-${r.firstIndex + i}`);
}

/** What a save, restore, template or clone job made (Job.snapshot_result on the wire). */
export interface SnapshotResult {
  /** The snapshot or template saved, restored from or cloned. */
  readonly snapshot: string;
  /** The VMs it started (restore, clone), in order. */
  readonly vms: readonly string[];
  /** save: the guest's pause, vCPU stop to resume (0 when it stayed stopped, or not known). */
  readonly pauseUs: number;
  /** The vmm's time for the work, request to answer (0 when not known). */
  readonly durationUs: number;
  /** save: bytes written, device state plus copied pages (0 when not known). */
  readonly bytes: number;
  /** restore, clone: request to each VM's guest running, in the order of `vms`. */
  readonly runningAfterUs: readonly number[];
}

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
  /** What a save, restore, template or clone job was asked to do; undefined for the others. */
  readonly snapshot: SnapshotRequest | undefined;
  /** What such a job made, once it completed; undefined before and for the others. */
  readonly snapshotResult: SnapshotResult | undefined;
}

/** True once the job can no longer change. */
export function isFinished(job: Job): boolean {
  return isTerminal(job.info.status);
}

/** Statuses a path passes through only when they are its end. */
const DETOURS = new Set<MigrationStatus>([
  'cancelling',
  'postcopy-active',
  'postcopy-paused',
  'postcopy-recover',
  'pre-switchover',
]);

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
      const detour =
        DETOURS.has(next) &&
        !(next === 'cancelling' && to === 'cancelled') &&
        !(next.startsWith('postcopy-') && to.startsWith('postcopy-'));
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
  /** Since the snapshot jobs; absent for the other kinds. */
  snapshot?: SnapshotRequest;
  snapshotResult?: SnapshotResult;
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
  if (job.snapshot !== undefined)
    out.snapshot = { ...job.snapshot, args: { ...job.snapshot.args } };
  if (job.snapshotResult !== undefined) {
    out.snapshotResult = {
      ...job.snapshotResult,
      vms: [...job.snapshotResult.vms],
      runningAfterUs: [...job.snapshotResult.runningAfterUs],
    };
  }
  if (job.finishedAt !== undefined) out.finishedAt = job.finishedAt.toISOString();
  return out;
}

/** A job read back from the journal; throws on a record that is not one. */
export function jobFromJournal(j: JournalJob): Job {
  if (
    typeof j.id !== 'string' ||
    !JOB_KINDS.includes(j.kind) ||
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
    snapshot: isSnapshotKind(j.kind) ? snapshotRequestFromJournal(j.snapshot) : undefined,
    snapshotResult: snapshotResultFromJournal(j.snapshotResult),
  };
}

/** A journaled snapshot request; a field of the wrong type reads as its zero value. */
function snapshotRequestFromJournal(o: unknown): SnapshotRequest {
  const r = (typeof o === 'object' && o !== null ? o : {}) as Record<string, unknown>;
  const str = (k: string) => (typeof r[k] === 'string' ? (r[k] as string) : '');
  const num = (k: string) => (typeof r[k] === 'number' ? (r[k] as number) : 0);
  const bool = (k: string) => r[k] === true;
  const args: Record<string, string> = {};
  if (typeof r.args === 'object' && r.args !== null) {
    for (const [k, v] of Object.entries(r.args)) if (typeof v === 'string') args[k] = v;
  }
  return snapshotRequest({
    snapshot: str('snapshot'),
    full: bool('full'),
    stop: bool('stop'),
    paused: bool('paused'),
    guest: str('guest'),
    memory: num('memory'),
    args,
    readyTimeoutMs: num('readyTimeoutMs'),
    count: num('count'),
    namePrefix: str('namePrefix'),
    firstIndex: num('firstIndex'),
  });
}

function snapshotResultFromJournal(o: unknown): SnapshotResult | undefined {
  if (typeof o !== 'object' || o === null) return undefined;
  const r = o as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === 'number' ? v : 0);
  const list = (v: unknown) => (Array.isArray(v) ? v : []);
  return {
    snapshot: typeof r.snapshot === 'string' ? r.snapshot : '',
    vms: list(r.vms).filter((v): v is string => typeof v === 'string'),
    pauseUs: num(r.pauseUs),
    durationUs: num(r.durationUs),
    bytes: num(r.bytes),
    runningAfterUs: list(r.runningAfterUs).map(num),
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
