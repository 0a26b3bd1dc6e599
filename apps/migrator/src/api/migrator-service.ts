import type * as grpc from '@grpc/grpc-js';
import { dateToTimestamp, migrator as pb, serviceNames } from '@handoff/proto';
import {
  capabilitiesFromWire,
  capabilitiesToWire,
  migrationInfoToWire,
  parametersFromWire,
  parametersToWire,
} from '@handoff/qapi/wire';
import { QapiError } from '@handoff/qapi';
import {
  ANY_ROLE,
  callerId,
  serverStream,
  ServiceError,
  unary,
  HANDOFF_VERSION,
  type AccessTable,
  type Logger,
  type ServiceRegistration,
} from '@handoff/service';
import { hostedVmsFromWire } from '../clients/vm-wire.js';
import { MigratorError } from '../errors.js';
import type { JobManager } from '../jobs/job-manager.js';
import { isFinished, type Job, type JobKind, type VmWhereabouts } from '../jobs/job.js';
import type { VmmRegistry, VmmRecord } from '../registry/vmm-registry.js';

const KIND_TO_WIRE: Record<JobKind, pb.JobKind> = {
  migrate: pb.JobKind.JOB_KIND_MIGRATE,
  'live-update': pb.JobKind.JOB_KIND_LIVE_UPDATE,
  save: pb.JobKind.JOB_KIND_SAVE,
  restore: pb.JobKind.JOB_KIND_RESTORE,
  template: pb.JobKind.JOB_KIND_TEMPLATE,
  clone: pb.JobKind.JOB_KIND_CLONE,
};

function toVmmInstance(r: VmmRecord): pb.VmmInstance {
  return {
    id: r.id,
    address: r.address,
    version: r.version,
    lastSeen: dateToTimestamp(r.lastSeen),
    alive: r.alive,
    vmCount: r.vmCount,
    hostId: r.hostId,
    memstoreAddress: r.memstoreAddress,
  };
}

/** The wire form of a job (the one place jobs meet generated types). */
export function jobToWire(job: Job): pb.Job {
  return {
    id: job.id,
    kind: KIND_TO_WIRE[job.kind],
    vm: job.vm,
    sourceVmm: job.sourceVmm,
    targetVmm: job.targetVmm,
    info: migrationInfoToWire(job.info),
    capabilities: capabilitiesToWire(job.capabilities),
    parameters: parametersToWire(job.parameters),
    createdAt: dateToTimestamp(job.createdAt),
    finishedAt: job.finishedAt !== undefined ? dateToTimestamp(job.finishedAt) : undefined,
    children: [...job.children],
    outcome:
      job.outcome === undefined
        ? undefined
        : {
            where: WHERE_TO_WIRE[job.outcome.where],
            vmm: job.outcome.vmm,
            detail: job.outcome.detail,
          },
    snapshotResult:
      job.snapshotResult === undefined
        ? undefined
        : {
            snapshot: job.snapshotResult.snapshot,
            vms: [...job.snapshotResult.vms],
            pauseUs: BigInt(Math.round(job.snapshotResult.pauseUs)),
            durationUs: BigInt(Math.round(job.snapshotResult.durationUs)),
            bytes: BigInt(Math.round(job.snapshotResult.bytes)),
            runningAfterUs: job.snapshotResult.runningAfterUs.map((us) => BigInt(Math.round(us))),
          },
  };
}

const WHERE_TO_WIRE: Record<VmWhereabouts, pb.VmWhereabouts> = {
  target: pb.VmWhereabouts.VM_WHEREABOUTS_TARGET,
  source: pb.VmWhereabouts.VM_WHEREABOUTS_SOURCE,
  lost: pb.VmWhereabouts.VM_WHEREABOUTS_LOST,
  unknown: pb.VmWhereabouts.VM_WHEREABOUTS_UNKNOWN,
};

/** A uint64 of a request as a number; beyond 2^53 it is the caller's INVALID_ARGUMENT. */
function wireCount(what: string, value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new MigratorError('MIGRATOR_INVALID_ARGUMENT', `${what} ${value} is too large`);
  }
  return Number(value);
}

/** Wire input converted to domain values; a bad value is the caller's INVALID_ARGUMENT. */
function fromWire<T>(what: string, convert: () => T): T {
  try {
    return convert();
  } catch (err) {
    if (err instanceof QapiError) {
      throw new MigratorError('MIGRATOR_INVALID_ARGUMENT', `${what}: ${err.message}`);
    }
    throw err;
  }
}

/**
 * Streams snapshots of a job: one at once, then one per change (coalesced
 * while the client is slow: only the newest pending snapshot is written),
 * until the job ends or the client cancels.
 */
async function streamJob(
  jobs: JobManager,
  id: string,
  call: grpc.ServerWritableStream<pb.WatchJobRequest, pb.WatchJobResponse>,
): Promise<void> {
  const first = jobs.get(id);
  await new Promise<void>((resolve) => {
    let pending: Job | undefined;
    let blocked = false;
    let ended = false;
    const finish = () => {
      if (ended) return;
      ended = true;
      unsubscribe();
      resolve();
    };
    const send = (job: Job) => {
      if (ended) return;
      if (blocked) {
        pending = job;
        return;
      }
      blocked = !call.write({ job: jobToWire(job) });
      if (isFinished(job) && !blocked) finish();
      else if (isFinished(job)) pending = undefined;
    };
    call.on('drain', () => {
      blocked = false;
      const next = pending;
      pending = undefined;
      if (next !== undefined) send(next);
      else if (isFinished(jobs.get(id))) finish();
    });
    call.on('cancelled', finish);
    call.on('close', finish);
    const unsubscribe = jobs.watch(id, send);
    send(first);
  });
}

/** What the operator (vmctl) does with the migrator. */
const OPERATOR = ['operator'] as const;

/**
 * Who may call what on the migrator (roles of the caller's certificate; startServer enforces
 * it). Only vmms register and report their VMs, each under its own id (checked in the handlers
 * against the certificate); jobs and the vmm list are the operator's.
 */
export const MIGRATOR_ACCESS: AccessTable = {
  GetInfo: ANY_ROLE,
  RegisterVmm: ['vmm'],
  ReportVms: ['vmm'],
  ListVmms: OPERATOR,
  Migrate: OPERATOR,
  LiveUpdate: OPERATOR,
  Save: OPERATOR,
  Restore: OPERATOR,
  CreateTemplate: OPERATOR,
  Clone: OPERATOR,
  GetJob: OPERATOR,
  ListJobs: OPERATOR,
  WatchJob: OPERATOR,
  CancelJob: OPERATOR,
  RecoverMigration: OPERATOR,
};

/**
 * A vmm may speak only for itself: on a secure server the id it registers or reports under must
 * be the CN of its certificate, so no vmm can re-point another's address or report its VMs.
 *
 * @throws ServiceError `SERVICE_PERMISSION_DENIED`
 */
function requireOwnId(call: object, id: string, what: string): void {
  const caller = callerId(call);
  if (caller !== null && caller !== id) {
    throw new ServiceError(
      'SERVICE_PERMISSION_DENIED',
      `${what} for ${id} refused: the caller's certificate names ${caller}, and a vmm ` +
        'registers and reports only under its own id (its --id is the CN of its certificate)',
    );
  }
}

/** The gRPC edge of the migrator: converts wire types and delegates to the registry and jobs. */
export function migratorService(deps: {
  logger: Logger;
  registry: VmmRegistry;
  jobs: JobManager;
  heartbeatIntervalMs: number;
}): ServiceRegistration {
  const { logger, registry, jobs } = deps;
  const implementation: pb.MigratorServiceServer = {
    getInfo: unary(logger, () => ({
      version: HANDOFF_VERSION,
      vmmCount: registry.list().length,
      activeJobs: jobs.activeCount(),
    })),
    registerVmm: unary(logger, (req, call) => {
      requireOwnId(call, req.id, 'RegisterVmm');
      const { isNew, vmsWanted } = registry.register({
        id: req.id,
        address: req.address,
        version: req.version,
        vmCount: req.vmCount,
        vmsVersion: Number(req.vmsVersion),
        vms: req.vms === undefined ? undefined : hostedVmsFromWire(req.vms),
        hostId: req.hostId,
        memstoreAddress: req.memstoreAddress,
      });
      if (isNew) {
        logger.info(
          { vmm: req.id, address: req.address, host: req.hostId, memstore: req.memstoreAddress },
          'vmm instance registered',
        );
      }
      return { heartbeatIntervalMs: deps.heartbeatIntervalMs, vmsWanted };
    }),
    reportVms: unary(logger, (req, call) => {
      requireOwnId(call, req.vmmId, 'ReportVms');
      if (req.vms === undefined) {
        throw new MigratorError(
          'MIGRATOR_INVALID_ARGUMENT',
          `vmm ${req.vmmId} sent ReportVms without its VMs; set "vms" (an empty set is valid)`,
        );
      }
      const vms = hostedVmsFromWire(req.vms);
      registry.reportVms(req.vmmId, vms);
      logger.debug({ vmm: req.vmmId, version: vms.version, vms: vms.vms.length }, 'VMs reported');
      return {};
    }),
    listVmms: unary(logger, () => ({ vmms: registry.list().map(toVmmInstance) })),
    migrate: unary(logger, async (req) => {
      const capabilities = fromWire('capabilities', () => capabilitiesFromWire(req.capabilities));
      const parameters = fromWire('parameters', () =>
        req.parameters !== undefined ? parametersFromWire(req.parameters) : {},
      );
      const job = await jobs.migrate({
        vm: req.vm,
        targetVmm: req.targetVmm,
        capabilities,
        parameters,
      });
      return { job: jobToWire(job) };
    }),
    liveUpdate: unary(logger, async (req) => {
      const parameters = fromWire('parameters', () =>
        req.parameters !== undefined ? parametersFromWire(req.parameters) : {},
      );
      const job = await jobs.liveUpdate({
        fromVmm: req.fromVmm,
        toVmm: req.toVmm,
        concurrency: req.concurrency,
        parameters,
      });
      return { job: jobToWire(job) };
    }),
    save: unary(logger, async (req) => ({
      job: jobToWire(
        await jobs.save({ vm: req.vm, snapshot: req.snapshot, full: req.full, stop: req.stop }),
      ),
    })),
    restore: unary(logger, async (req) => ({
      job: jobToWire(
        await jobs.restore({
          snapshot: req.snapshot,
          name: req.name,
          vmm: req.vmm,
          paused: req.paused,
        }),
      ),
    })),
    createTemplate: unary(logger, async (req) => ({
      job: jobToWire(
        await jobs.createTemplate({
          name: req.name,
          source:
            req.source === undefined
              ? undefined
              : req.source.$case === 'guest'
                ? { guest: req.source.value, image: req.guestImage }
                : { fromVm: req.source.value },
          memory: wireCount('memory', req.memory),
          vmm: req.vmm,
          args: { ...req.args },
          readyTimeoutMs: req.readyTimeoutMs,
        }),
      ),
    })),
    clone: unary(logger, async (req) => ({
      job: jobToWire(
        await jobs.clone({
          template: req.template,
          count: req.count,
          vmm: req.vmm,
          namePrefix: req.namePrefix,
          paused: req.paused,
        }),
      ),
    })),
    getJob: unary(logger, (req) => ({ job: jobToWire(jobs.get(req.id)) })),
    listJobs: unary(logger, (req) => ({ jobs: jobs.list(req.all).map(jobToWire) })),
    watchJob: serverStream(logger, (req, call) => streamJob(jobs, req.id, call)),
    cancelJob: unary(logger, async (req) => ({ job: jobToWire(await jobs.cancel(req.id)) })),
    recoverMigration: unary(logger, async (req: pb.RecoverMigrationRequest) =>
      jobs.recoverPostcopy(req.vm, req.sourceMemstore),
    ),
  };
  return {
    name: serviceNames.migrator,
    definition: pb.MigratorServiceService,
    implementation: implementation as unknown as ServiceRegistration['implementation'],
    access: MIGRATOR_ACCESS,
  };
}
