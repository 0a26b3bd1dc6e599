import type * as grpc from '@grpc/grpc-js';
import { migrator as pb, timestampToDate } from '@handoff/proto';
import {
  MIGRATION_CAPABILITIES,
  migrationInfoToQapi,
  type MigrationCapabilities,
  type MigrationInfo,
  type MigrationParameterOverrides,
  type QapiMigrationInfo,
} from '@handoff/qapi';
import {
  capabilitiesFromWire,
  capabilitiesToWire,
  migrationInfoFromWire,
  parametersFromWire,
  parametersToWire,
} from '@handoff/qapi/wire';
import { RemoteError, unaryCall } from '@handoff/service';
import type { Clients } from './clients.js';

/** Longest a watch follows one job (a live update of many VMs can take long). */
export const WATCH_DEADLINE_MS = 24 * 3600_000;

/** A job as vmctl shows it (converted from the wire at this edge). */
export interface JobView {
  id: string;
  kind: 'migrate' | 'live-update' | 'save' | 'restore' | 'template' | 'clone' | 'unknown';
  vm: string;
  sourceVmm: string;
  targetVmm: string;
  info: MigrationInfo;
  capabilities: MigrationCapabilities;
  parameters: MigrationParameterOverrides;
  createdAt: string | undefined;
  finishedAt: string | undefined;
  children: string[];
  /** Where a migrate job left its VM, once it ended. */
  outcome: JobOutcomeView | undefined;
  /** What a save, restore, template or clone job made, once it completed. */
  snapshotResult: SnapshotResultView | undefined;
}

/** What a save, restore, template or clone job made. */
export interface SnapshotResultView {
  /** The snapshot or template saved, restored from or cloned. */
  snapshot: string;
  /** The VMs it started (restore, clone), in order. */
  vms: string[];
  /** save: the guest's pause, in µs (0 when it stayed stopped, or not known). */
  pauseUs: number;
  /** The vmm's time for the work, in µs (0 when not known). */
  durationUs: number;
  /** save: bytes written (device state plus copied pages). */
  bytes: number;
  /** restore, clone: request to each VM's guest running, in µs, in the order of `vms`. */
  runningAfterUs: number[];
}

/** Whether a job saves, restores, makes a template or clones (no RAM progress to show). */
export function isSnapshotJob(job: JobView): boolean {
  return ['save', 'restore', 'template', 'clone'].includes(job.kind);
}

/** Where a job left its VM: on the target, the source, lost with a vmm, or unknown. */
export interface JobOutcomeView {
  where: 'target' | 'source' | 'lost' | 'unknown';
  /** The vmm that holds the VM, or the one it was lost with ('' when unknown). */
  vmm: string;
  detail: string;
}

const WHERE: Record<number, JobOutcomeView['where']> = {
  [pb.VmWhereabouts.VM_WHEREABOUTS_TARGET]: 'target',
  [pb.VmWhereabouts.VM_WHEREABOUTS_SOURCE]: 'source',
  [pb.VmWhereabouts.VM_WHEREABOUTS_LOST]: 'lost',
  [pb.VmWhereabouts.VM_WHEREABOUTS_UNKNOWN]: 'unknown',
};

const KIND: Record<number, JobView['kind']> = {
  [pb.JobKind.JOB_KIND_MIGRATE]: 'migrate',
  [pb.JobKind.JOB_KIND_LIVE_UPDATE]: 'live-update',
  [pb.JobKind.JOB_KIND_SAVE]: 'save',
  [pb.JobKind.JOB_KIND_RESTORE]: 'restore',
  [pb.JobKind.JOB_KIND_TEMPLATE]: 'template',
  [pb.JobKind.JOB_KIND_CLONE]: 'clone',
};

function toView(j: pb.Job | undefined): JobView {
  if (j === undefined) throw new Error('the migrator answered without a job');
  return {
    id: j.id,
    kind: KIND[j.kind] ?? 'unknown',
    vm: j.vm,
    sourceVmm: j.sourceVmm,
    targetVmm: j.targetVmm,
    info:
      j.info !== undefined ? migrationInfoFromWire(j.info) : ({ status: 'none' } as MigrationInfo),
    capabilities: capabilitiesFromWire(j.capabilities),
    parameters: j.parameters !== undefined ? parametersFromWire(j.parameters) : {},
    createdAt: timestampToDate(j.createdAt)?.toISOString(),
    finishedAt: timestampToDate(j.finishedAt)?.toISOString(),
    children: [...j.children],
    outcome:
      j.outcome !== undefined
        ? {
            where: WHERE[j.outcome.where] ?? 'unknown',
            vmm: j.outcome.vmm,
            detail: j.outcome.detail,
          }
        : undefined,
    snapshotResult:
      j.snapshotResult !== undefined
        ? {
            snapshot: j.snapshotResult.snapshot,
            vms: [...j.snapshotResult.vms],
            pauseUs: Number(j.snapshotResult.pauseUs),
            durationUs: Number(j.snapshotResult.durationUs),
            bytes: Number(j.snapshotResult.bytes),
            runningAfterUs: j.snapshotResult.runningAfterUs.map(Number),
          }
        : undefined,
  };
}

/** True once a job can no longer change. */
export function jobEnded(job: JobView): boolean {
  return ['completed', 'failed', 'cancelled'].includes(job.info.status);
}

/** The JSON document of a job: its fields plus QAPI MigrationInfo (kebab-case) as `info`. */
export interface JobJson {
  id: string;
  kind: string;
  vm?: string;
  sourceVmm: string;
  targetVmm: string;
  status: string;
  error?: string;
  capabilities: string[];
  parameters: MigrationParameterOverrides;
  createdAt?: string;
  finishedAt?: string;
  children?: string[];
  /** Where a migrate job left its VM, once it ended. */
  outcome?: JobOutcomeView;
  /** What a snapshot job made, once it completed. */
  snapshotResult?: SnapshotResultView;
  info: QapiMigrationInfo;
}

/** A job as `--output json` prints it. */
export function jobJson(job: JobView): JobJson {
  const out: JobJson = {
    id: job.id,
    kind: job.kind,
    ...(job.vm !== '' ? { vm: job.vm } : {}),
    sourceVmm: job.sourceVmm,
    targetVmm: job.targetVmm,
    status: job.info.status,
    capabilities: MIGRATION_CAPABILITIES.filter((c) => job.capabilities[c]),
    parameters: job.parameters,
    info: migrationInfoToQapi(job.info),
  };
  if (job.info.errorDesc !== undefined) out.error = job.info.errorDesc;
  if (job.createdAt !== undefined) out.createdAt = job.createdAt;
  if (job.finishedAt !== undefined) out.finishedAt = job.finishedAt;
  if (job.children.length > 0) out.children = job.children;
  if (job.outcome !== undefined) out.outcome = job.outcome;
  if (job.snapshotResult !== undefined) out.snapshotResult = job.snapshotResult;
  return out;
}

/** Job calls of the migrator. */
export function jobs(c: Clients) {
  const opts = () => ({ deadlineMs: c.endpoints.timeoutMs });
  return {
    async migrate(req: {
      vm: string;
      targetVmm: string;
      capabilities: MigrationCapabilities;
      parameters: MigrationParameterOverrides;
    }): Promise<JobView> {
      const res = await unaryCall(
        c.migrator,
        'migrate',
        {
          vm: req.vm,
          targetVmm: req.targetVmm,
          capabilities: capabilitiesToWire(req.capabilities),
          parameters: parametersToWire(req.parameters),
        },
        opts(),
      );
      return toView(res.job);
    },
    /** Reconnects a paused post-copy of `vm` to its source; the regions reconnected and where the VM runs. */
    async recover(req: {
      vm: string;
      sourceMemstore: string;
    }): Promise<{ regions: string[]; vmm: string }> {
      const res = await unaryCall(
        c.migrator,
        'recoverMigration',
        { vm: req.vm, sourceMemstore: req.sourceMemstore },
        opts(),
      );
      return { regions: res.regions, vmm: res.vmm };
    },
    async liveUpdate(req: {
      fromVmm: string;
      toVmm: string;
      concurrency: number;
      parameters: MigrationParameterOverrides;
    }): Promise<JobView> {
      const res = await unaryCall(
        c.migrator,
        'liveUpdate',
        { ...req, parameters: parametersToWire(req.parameters) },
        opts(),
      );
      return toView(res.job);
    },
    /** Save: a snapshot of a VM (default name: `<vm>-<UTC time>`). */
    async save(req: {
      vm: string;
      snapshot: string;
      full: boolean;
      stop: boolean;
    }): Promise<JobView> {
      return toView((await unaryCall(c.migrator, 'save', req, opts())).job);
    },
    /** Restore: a VM from a snapshot (name and vmm '' = defaults). */
    async restore(req: {
      snapshot: string;
      name: string;
      vmm: string;
      paused: boolean;
    }): Promise<JobView> {
      return toView((await unaryCall(c.migrator, 'restore', req, opts())).job);
    },
    /**
     * CreateTemplate: from a guest booted to its ready doorbell, or from a running VM. A guest
     * with `image` sends the ELF itself (the migrator passes it to the vmm's CreateVm).
     */
    async createTemplate(req: {
      name: string;
      source: { guest: string; image?: Uint8Array | undefined } | { fromVm: string };
      memory: bigint;
      vmm: string;
      args: Record<string, string>;
      readyTimeoutMs: number;
    }): Promise<JobView> {
      const { source, ...rest } = req;
      const res = await unaryCall(
        c.migrator,
        'createTemplate',
        {
          ...rest,
          ...('guest' in source && source.image !== undefined ? { guestImage: source.image } : {}),
          source:
            'guest' in source
              ? { $case: 'guest', value: source.guest }
              : { $case: 'fromVm', value: source.fromVm },
        },
        opts(),
      );
      return toView(res.job);
    },
    /** Clone: `count` VMs from a template. */
    async clone(req: {
      template: string;
      count: number;
      vmm: string;
      namePrefix: string;
      paused: boolean;
    }): Promise<JobView> {
      return toView((await unaryCall(c.migrator, 'clone', req, opts())).job);
    },
    async get(id: string): Promise<JobView> {
      return toView((await unaryCall(c.migrator, 'getJob', { id }, opts())).job);
    },
    async list(all: boolean): Promise<JobView[]> {
      return (await unaryCall(c.migrator, 'listJobs', { all }, opts())).jobs.map(toView);
    },
    async cancel(id: string): Promise<JobView> {
      return toView((await unaryCall(c.migrator, 'cancelJob', { id }, opts())).job);
    },
    /**
     * Follows a job: `onChange` gets every snapshot; resolves with the last
     * one when the job ended. The stream's deadline is generous
     * ({@link WATCH_DEADLINE_MS}): jobs take as long as they take; Ctrl-C
     * stops watching and leaves the job running.
     */
    watch(id: string, onChange: (job: JobView) => void): Promise<JobView> {
      return new Promise((resolve, reject) => {
        let last: JobView | undefined;
        const stream = c.migrator.watchJob({ id }, { deadline: Date.now() + WATCH_DEADLINE_MS });
        stream.on('data', (res: pb.WatchJobResponse) => {
          last = toView(res.job);
          onChange(last);
        });
        stream.on('error', (err: grpc.ServiceError) =>
          reject(RemoteError.fromGrpc(err, 'WatchJob')),
        );
        stream.on('end', () => {
          if (last !== undefined && jobEnded(last)) resolve(last);
          else
            reject(
              new Error(
                `the watch of job ${id} ended before the job did; run \`vmctl jobs watch ${id}\``,
              ),
            );
        });
      });
    },
  };
}
