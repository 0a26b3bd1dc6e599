import { randomBytes } from 'node:crypto';
import {
  MigrationStateMachine,
  QapiError,
  assertValidMigrationConfig,
  emptyMigrationInfo,
  isActive,
  type MigrationCapabilities,
  type MigrationInfo,
  type MigrationParameterOverrides,
  type MigrationStatus,
} from '@handoff/qapi';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { RemoteError, channelCredentials, type Logger } from '@handoff/service';
import {
  MemstoreClient,
  type RegionLeases,
  type SnapshotCatalog,
} from '../clients/memstore-client.js';
import {
  VmmClients,
  isDefinitive,
  type PreparedTarget,
  type VmmCalls,
} from '../clients/vmm-client.js';
import { MigratorError } from '../errors.js';
import type { HostOwnership } from '../hosts/host-ownership.js';
import { isMovable, ownsVm, type VmSpec } from '../registry/hosted-vm.js';
import { refuseCrossHostBypass, sameHost } from '../registry/placement.js';
import type { VmLocation, VmmRecord, VmmRegistry } from '../registry/vmm-registry.js';
import {
  isFinished,
  isSnapshotKind,
  statusPath,
  type Job,
  type JobKind,
  type JobOutcome,
  type SnapshotRequest,
  type SnapshotResult,
} from './job.js';
import { LiveUpdateTotals } from './live-update-totals.js';
import { gatherEvidence, judge, leftPausedOnSource, type Verdict } from './outcome.js';
import { resolveAfterRestart, type RecoveryTiming } from './recovery.js';
import {
  planClone,
  planRestore,
  planSave,
  planTemplate,
  type PlanContext,
  type SnapshotPlan,
} from './snapshot-plans.js';
import { resolveSnapshotJob } from './snapshot-resolve.js';
import { runSnapshotJob, workerOf, type SnapshotEnd } from './snapshot-run.js';

/** Where job snapshots are persisted (a {@link JobJournal} in production). */
export interface JobSink {
  /**
   * Appends a snapshot; it must be written (a killed migrator finds it) when this returns.
   * `durable` snapshots (an ended job) must also be on disk; the others reach it by
   * {@link JobSink.sync} (awaited before a job's MigrateVm) or a later durable append.
   */
  append(job: Job, durable: boolean): void;
  /** Resolves once everything appended so far is on disk. */
  sync?(): Promise<void>;
  close?(): void;
}

/** Tunables of the job runner. */
export interface JobManagerOptions {
  logger: Logger;
  registry: VmmRegistry;
  /** Where job snapshots go (a JobJournal); undefined keeps jobs in memory only. */
  journal?: JobSink;
  /** Jobs read back from the journal (in-flight ones are failed by {@link JobManager.recover}). */
  restored?: Job[];
  /**
   * How often, after a restart, the source of a job failed by it is asked (GetMigration)
   * whether its migration ended. A running job's progress comes on MigrateVm's stream.
   */
  pollIntervalMs?: number;
  /** Deadline of MigrateVm: the longest a single migration may take (the source cancels it then). */
  migrationTimeoutMs?: number;
  /** Deadline of every other vmm call (of the default {@link JobManagerOptions.vmms}). */
  callTimeoutMs?: number;
  /** How the jobs reach vmm instances (default: gRPC clients, {@link VmmClients}). */
  vmms?: VmmCalls;
  /**
   * Credentials of the default {@link VmmClients}: the migrator's certificate (default:
   * plaintext, which a vmm serving TLS refuses).
   */
  vmmCredentials?: ChannelCredentials;
  /** VMs a live update migrates at once when the request says 0. */
  defaultConcurrency?: number;
  /** How long recovery keeps trying to reach a vmm that does not answer. */
  recoveryRetryMs?: number;
  /**
   * memstore, asked who holds the lease of a VM's shared regions after a migration ended
   * uncertainly (default: a gRPC client of `memstoreAddress`; none without it).
   */
  leases?: RegionLeases;
  /**
   * memstore's snapshots, asked by snapshot jobs (default: the gRPC client of
   * `memstoreAddress`; none without it).
   */
  snapshots?: SnapshotCatalog;
  /** memstore's address, for the default {@link JobManagerOptions.leases}. */
  memstoreAddress?: string;
  /** Credentials of the default {@link JobManagerOptions.leases} (default: plaintext). */
  memstoreCredentials?: ChannelCredentials;
  /** Which host owns each VM (a cross-host move claims it for the target's host). */
  hostOwnership?: HostOwnership;
  /** Called once with each job as it ends (metrics); must not throw. */
  onJobEnded?: (job: Job) => void;
}

/** Called with a job snapshot after every change. */
export type JobListener = (job: Job) => void;

interface Live {
  job: Job;
  /** The VM's spec as its source reported it (for PrepareIncoming); not journaled. */
  spec: VmSpec | undefined;
  /**
   * The VM ran on its source when the job began (not journaled: unknown, so false, after a
   * restart). A VM this job's migration left paused there is resumed once the target is known
   * not to run it.
   */
  wasRunning: boolean;
  sm: MigrationStateMachine;
  cancelRequested: boolean;
  /** Set while MigrateVm is outstanding (a cancel then goes to the source). */
  migrating: boolean;
  /** Stops a snapshot job's wait for its guest (a template's); undefined when nothing waits. */
  abort?: () => void;
  /** A template's guest ELF sent by the client (not journaled; dropped once the job ran). */
  guestImage?: Uint8Array | undefined;
}

/**
 * Runs migrate, live-update, save, restore, template and clone jobs. The migrator only
 * coordinates: the vmm instances move, save and start VMs, memstore keeps snapshots and its
 * lease decides which vmm runs a VM, so a job that fails or is abandoned never loses or
 * duplicates a VM (see README "Restart semantics").
 */
export class JobManager {
  private readonly jobs = new Map<string, Live>();
  private readonly listeners = new Map<string, Set<JobListener>>();
  private readonly vmms: VmmCalls;
  private readonly running = new Set<Promise<unknown>>();
  private readonly log: Logger;
  private readonly pollMs: number;
  private readonly migrationTimeoutMs: number;
  private readonly defaultConcurrency: number;
  private readonly leases: RegionLeases | undefined;
  private readonly snapshots: SnapshotCatalog | undefined;
  /** Clients of other hosts' memstores (post-copy recover), by address. */
  private readonly memstores = new Map<string, MemstoreClient>();
  private readonly callTimeoutMs: number;
  private readonly memstoreCredentials: ChannelCredentials;
  private closed = false;

  constructor(private readonly opts: JobManagerOptions) {
    this.log = opts.logger;
    this.pollMs = opts.pollIntervalMs ?? 100;
    this.migrationTimeoutMs = opts.migrationTimeoutMs ?? 10 * 60_000;
    this.vmms =
      opts.vmms ??
      new VmmClients(opts.callTimeoutMs ?? 5000, opts.vmmCredentials ?? channelCredentials(null));
    const memstore =
      opts.memstoreAddress !== undefined && opts.memstoreAddress !== ''
        ? new MemstoreClient(
            opts.memstoreAddress,
            opts.callTimeoutMs ?? 5000,
            opts.memstoreCredentials ?? channelCredentials(null),
          )
        : undefined;
    this.leases = opts.leases ?? memstore;
    this.snapshots = opts.snapshots ?? memstore;
    this.callTimeoutMs = opts.callTimeoutMs ?? 5000;
    this.memstoreCredentials = opts.memstoreCredentials ?? channelCredentials(null);
    this.defaultConcurrency = opts.defaultConcurrency ?? 2;
    for (const job of opts.restored ?? []) {
      this.jobs.set(job.id, {
        job,
        sm: new MigrationStateMachine({ initial: job.info.status }),
        spec: undefined,
        wasRunning: false,
        cancelRequested: false,
        migrating: false,
      });
    }
  }

  /**
   * Resolves every job the journal shows in flight (the migrator restarted under it): each
   * migrate job goes to `cancelling` at once, is cancelled at both ends (CancelMigration on the
   * source, CancelIncoming on the target) and ends with what really happened (recovery.ts):
   * `completed` when the VM runs on the target, `cancelled` when it stayed on the source,
   * `failed` when it was lost or nothing could tell. A job that never started is cancelled. A
   * live update ends once its children did. Nothing is retried or re-run. Returns the ids of
   * the jobs it resolves; the work runs in the background.
   */
  recover(): string[] {
    const resolving: string[] = [];
    for (const live of this.jobs.values()) {
      if (isFinished(live.job)) continue;
      const was = live.job.info.status;
      resolving.push(live.job.id);
      live.cancelRequested = true;
      if (live.job.kind === 'live-update') {
        this.toStatus(live, 'cancelling');
        this.track(this.finishParentAfterRestart(live));
      } else if (isSnapshotKind(live.job.kind)) {
        this.recoverSnapshotJob(live, was);
      } else if (was === 'none' || live.job.sourceAddress === '') {
        // never started: no PrepareIncoming went out (its `setup` line precedes it)
        this.finishCancelled(live, undefined, untouched(live.job, 'it never started'));
      } else {
        this.toStatus(live, 'cancelling');
        this.track(this.resolveAfterRestart(live, was));
      }
    }
    if (resolving.length > 0) {
      this.log.warn({ jobs: resolving }, 'resolving the jobs left in flight by a restart');
    }
    return resolving;
  }

  /** Creates and starts a migrate job; validation errors throw before a job exists. */
  async migrate(req: {
    vm: string;
    targetVmm: string;
    capabilities: MigrationCapabilities;
    parameters: MigrationParameterOverrides;
  }): Promise<Job> {
    if (req.vm === '') throw invalid('a VM name is required (vmctl migrate NAME --to VMM)');
    if (req.targetVmm === '') throw invalid('a target vmm is required (--to VMM)');
    const config = validated(req.capabilities, req.parameters);
    const target = this.opts.registry.get(req.targetVmm);
    const t0 = performance.now();
    const at = await this.locate(req.vm);
    const source = at.vmm;
    const locateMs = performance.now() - t0;
    if (source.id === target.id) {
      throw invalid(
        `VM ${req.vm} already runs on ${target.id}: source and target are the same vmm; pick another --to`,
      );
    }
    refuseCrossHostBypass({ vm: req.vm, spec: at.vm.spec, source, target, capabilities: config });
    this.assertNotBusy(req.vm);
    const live = this.create('migrate', {
      vm: req.vm,
      spec: at.vm.spec,
      wasRunning: at.vm.state === 'running',
      source,
      target,
      capabilities: config,
      parameters: req.parameters,
      parent: '',
    });
    this.log.debug(
      {
        job: live.job.id,
        locateMs: round(locateMs),
        createMs: round(performance.now() - t0 - locateMs),
      },
      'migrate job created',
    );
    this.track(this.runMigrate(live));
    return live.job;
  }

  /** Creates and starts a live update: one child migrate job per VM of `from`, bypass on. */
  async liveUpdate(req: {
    fromVmm: string;
    toVmm: string;
    concurrency: number;
    parameters: MigrationParameterOverrides;
  }): Promise<Job> {
    if (req.fromVmm === '' || req.toVmm === '') {
      throw invalid('both vmm instances are required (vmctl live-update --from VMM --to VMM)');
    }
    const from = this.opts.registry.get(req.fromVmm);
    const to = this.opts.registry.get(req.toVmm);
    if (from.id === to.id) {
      throw invalid(`--from and --to are both ${from.id}: a live update moves VMs to another vmm`);
    }
    if (!sameHost(from, to)) {
      throw new MigratorError(
        'MIGRATOR_CROSS_HOST',
        `${to.id} is on ${to.hostId} and ${from.id} on ${from.hostId}: a live update hands ` +
          'memory over by reference between two vmm instances of one host; pick a target on ' +
          `${from.hostId}, or move VMs to another host one by one with \`vmctl migrate NAME ` +
          `--to ${to.id} --postcopy\``,
      );
    }
    const capabilities = validated({ 'bypass-shared-memory': true }, req.parameters);
    const reported = this.opts.registry.vmsOn(from.id);
    if (reported === undefined) {
      throw new MigratorError(
        'MIGRATOR_VMM_UNAVAILABLE',
        `vmm ${from.id} has not reported its VMs to this migrator yet (it does with its next ` +
          'heartbeat, within seconds); try the live update again in a moment',
      );
    }
    const vms = reported.filter((v) => isMovable(v.state));
    for (const v of vms) this.assertNotBusy(v.name);
    const concurrency = req.concurrency > 0 ? req.concurrency : this.defaultConcurrency;
    const parent = this.create('live-update', {
      vm: '',
      spec: undefined,
      wasRunning: false,
      source: from,
      target: to,
      capabilities,
      parameters: req.parameters,
      parent: '',
    });
    const children = vms.map((v) =>
      this.create('migrate', {
        vm: v.name,
        spec: v.spec,
        wasRunning: v.state === 'running',
        source: from,
        target: to,
        capabilities,
        parameters: req.parameters,
        parent: parent.job.id,
      }),
    );
    this.update(parent, { children: children.map((c) => c.job.id) }, true);
    this.track(this.runLiveUpdate(parent, children, concurrency));
    return parent.job;
  }

  /**
   * Creates and starts a save job: SaveVm on the vmm that runs the VM.
   *
   * @throws MigratorError before any job exists: MIGRATOR_INVALID_ARGUMENT, MIGRATOR_VM_NOT_FOUND,
   *   MIGRATOR_VM_BUSY
   */
  async save(req: { vm: string; snapshot: string; full: boolean; stop: boolean }): Promise<Job> {
    return this.startSnapshotJob(await planSave(req, this.planContext()));
  }

  /** Creates and starts a restore job: RestoreVm on the chosen vmm (see {@link planRestore}). */
  async restore(req: {
    snapshot: string;
    name: string;
    vmm: string;
    paused: boolean;
  }): Promise<Job> {
    return this.startSnapshotJob(await planRestore(req, this.planContext()));
  }

  /**
   * Creates and starts a template job: a guest booted to its ready doorbell and saved with
   * stop, or a running VM saved as a template (see {@link planTemplate}).
   */
  async createTemplate(req: Parameters<typeof planTemplate>[0]): Promise<Job> {
    return this.startSnapshotJob(await planTemplate(req, this.planContext()));
  }

  /** Creates and starts a clone job: CloneVms on the chosen vmm (see {@link planClone}). */
  async clone(req: {
    template: string;
    count: number;
    vmm: string;
    namePrefix: string;
    paused: boolean;
  }): Promise<Job> {
    return this.startSnapshotJob(await planClone(req, this.planContext()));
  }

  /** Asks a job to stop: CancelMigration on the source of each running migration. */
  async cancel(id: string): Promise<Job> {
    const live = this.live(id);
    if (isFinished(live.job)) {
      throw new MigratorError(
        'MIGRATOR_JOB_FINISHED',
        `job ${id} already ended (${live.job.info.status}); there is nothing to cancel`,
      );
    }
    if (isSnapshotKind(live.job.kind)) return this.cancelSnapshotJob(live);
    if (live.job.kind === 'live-update') {
      live.cancelRequested = true;
      this.toStatus(live, 'cancelling');
      await Promise.all(
        live.job.children.map((c) => this.cancel(c).catch(() => undefined) as Promise<unknown>),
      );
      return live.job;
    }
    live.cancelRequested = true;
    if (live.migrating) {
      try {
        await this.vmms.cancelMigration(live.job.sourceAddress, live.job.vm);
      } catch (err) {
        // the source refused (e.g. past the point of no return): the job runs on
        live.cancelRequested = false;
        throw err;
      }
    }
    this.toStatus(live, 'cancelling');
    return live.job;
  }

  /**
   * Resumes the paused post-copy of VM `vm`: the memstore of the host it runs on reconnects
   * each of its lazy regions to its source (optionally at `sourceMemstore`).
   *
   * @throws MigratorError `MIGRATOR_VM_NOT_FOUND`, `MIGRATOR_INVALID_ARGUMENT` when nothing of
   *   the VM waits for a source
   */
  async recoverPostcopy(
    vm: string,
    sourceMemstore: string,
  ): Promise<{ regions: string[]; vmm: string }> {
    if (vm === '') throw invalid('a VM name is required (vmctl migrate NAME --recover)');
    const at = await this.locate(vm);
    const memstore = at.vmm.memstoreAddress;
    const names = (at.vm.spec?.ram ?? [])
      .filter((b) => b.backend === 'shared' || b.backend === 'lazy')
      .map((b) => b.region)
      .filter((r) => r !== '');
    if (memstore === '' || names.length === 0) {
      throw invalid(
        `VM ${vm} on ${at.vmm.id} has no memory in a memstore region, so no post-copy of it ` +
          'can wait for a source; nothing to recover',
      );
    }
    const client = this.memstoreAt(memstore);
    const recovered: string[] = [];
    for (const name of names) {
      if (await client.recoverLazyRegion(name, sourceMemstore)) recovered.push(name);
    }
    if (recovered.length === 0) {
      throw invalid(
        `nothing of VM ${vm} waits for a source: its regions (${names.join(', ')}) on ` +
          `${at.vmm.id}'s memstore are not being filled by post-copy`,
      );
    }
    this.log.info({ vm, vmm: at.vmm.id, regions: recovered }, 'post-copy recovered');
    return { regions: recovered, vmm: at.vmm.id };
  }

  /** A client of the memstore at `address` (one per address, kept). */
  private memstoreAt(address: string): MemstoreClient {
    let c = this.memstores.get(address);
    if (c === undefined) {
      c = new MemstoreClient(address, this.callTimeoutMs, this.memstoreCredentials);
      this.memstores.set(address, c);
    }
    return c;
  }

  /** One job; MIGRATOR_JOB_NOT_FOUND if unknown. */
  get(id: string): Job {
    return this.live(id).job;
  }

  /** Jobs in creation order; finished ones only with `all`. */
  list(all: boolean): Job[] {
    return [...this.jobs.values()]
      .map((l) => l.job)
      .filter((j) => all || !isFinished(j))
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  }

  /** Jobs still running. */
  activeCount(): number {
    return this.list(false).length;
  }

  /** Calls `fn` after every change of job `id`; returns the unsubscribe function. */
  watch(id: string, fn: JobListener): () => void {
    this.live(id);
    let set = this.listeners.get(id);
    if (set === undefined) this.listeners.set(id, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.listeners.delete(id);
    };
  }

  /** Waits for the job's end (tests and shutdown). */
  async waitFor(id: string, timeoutMs = 30_000): Promise<Job> {
    if (isFinished(this.get(id))) return this.get(id);
    return new Promise<Job>((resolve, reject) => {
      const timer = setTimeout(() => {
        unsubscribe();
        reject(new Error(`job ${id} did not end in ${timeoutMs} ms`));
      }, timeoutMs);
      const unsubscribe = this.watch(id, (job) => {
        if (!isFinished(job)) return;
        clearTimeout(timer);
        unsubscribe();
        resolve(job);
      });
    });
  }

  /** Stops background work and closes vmm clients (running jobs stay in the journal as in flight). */
  async close(): Promise<void> {
    this.closed = true;
    this.vmms.close();
    this.leases?.close();
    if (this.snapshots !== this.leases) this.snapshots?.close();
    for (const c of this.memstores.values()) c.close();
    this.opts.journal?.close?.();
  }

  /** Waits until every background task ended (tests). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  // --- running a migrate job ---------------------------------------------------------------

  private async runMigrate(live: Live): Promise<void> {
    const { job } = live;
    const log = this.log.child({ job: job.id, vm: job.vm });
    const started = Date.now();
    // where the job's wall time goes (logged when it ends)
    const t0 = performance.now();
    const phases = { queuedMs: started - job.createdAt.getTime(), prepareMs: 0 };
    const rounded = () => ({ ...phases, prepareMs: round(phases.prepareMs) });
    let migrateStart = t0;
    /** MigrateVm went out: from here on the VM may have moved. */
    let sent = false;
    try {
      if (live.cancelRequested) {
        return this.finishCancelled(live, undefined, untouched(job, 'it was cancelled first'));
      }
      this.toStatus(live, 'setup');
      log.info({ from: job.sourceVmm, to: job.targetVmm }, 'migration started');
      const prepStart = performance.now();
      // the job's lines reach the disk while the target prepares, before the VM can move
      const synced = this.syncJournal();
      const prep = await this.prepareIncoming(live);
      await synced;
      if (live.cancelRequested) {
        await this.dropArrival(live);
        return this.finishCancelled(live, undefined, untouched(job, 'it was cancelled first'));
      }
      migrateStart = performance.now();
      phases.prepareMs = migrateStart - prepStart;
      live.migrating = true;
      sent = true;
      let final: MigrationInfo;
      try {
        // One stream carries the progress (a report on each status change and about every
        // 250 ms) and, last, the final info.
        final = await this.vmms.migrate(
          job.sourceAddress,
          {
            vm: job.vm,
            jobId: job.id,
            target: prep,
            capabilities: job.capabilities,
            parameters: job.parameters,
          },
          { deadlineMs: this.migrationTimeoutMs, onProgress: (info) => this.progress(live, info) },
        );
      } finally {
        live.migrating = false;
      }
      if (final.status === 'failed' || final.status === 'cancelled') {
        // a vmm ends a failed migration with an error status, not a final info: not its word
        await this.settle(
          live,
          new Error(final.errorDesc ?? `the source vmm reported the migration ${final.status}`),
        );
      } else {
        // the VM runs on the target: the job is done (the source retires its postmigrate copy
        // on its own; a PrepareIncoming of that name there waits for it)
        this.opts.registry.moved(job.vm, job.sourceVmm, job.targetVmm);
        this.finishCompleted(live, { ...final, status: 'completed' }, arrived(job));
        await this.claimHost(job);
      }
      const end = performance.now();
      log.info(
        {
          status: live.job.info.status,
          ...rounded(),
          migrateVmMs: round(end - migrateStart),
          vmmTotalMs: final.totalTimeMs,
          jobMs: round(end - t0),
        },
        'migration ended',
      );
    } catch (err) {
      live.migrating = false;
      const message = err instanceof Error ? err.message : String(err);
      if (!sent) {
        // Nothing moved: PrepareIncoming failed. What the target prepared (its answer may have
        // been lost) is given up, so the name is free there.
        await this.dropArrival(live);
        if (live.cancelRequested) {
          this.finishCancelled(live, undefined, untouched(job, 'it was cancelled first'));
        } else {
          this.finishFailed(
            live,
            `migration of ${job.vm} from ${job.sourceVmm} to ${job.targetVmm} failed: ${message}`,
            untouched(job, 'the target was not prepared'),
          );
        }
      } else {
        await this.settle(live, err);
      }
      log.warn(
        { status: live.job.info.status, where: live.job.outcome?.where, err },
        'migration did not complete',
      );
    }
  }

  /**
   * Ends a job whose MigrateVm did not end with the final info: asks both ends and memstore
   * where the VM is (outcome.ts) and records that. The source's own error (a coded migration
   * error) says how it failed; anything else (a dropped connection, MIGRATION_UNCERTAIN) is
   * only what the migrator saw, so the source's migration is awaited first.
   */
  private async settle(live: Live, err: unknown): Promise<void> {
    const { job } = live;
    const message = err instanceof Error ? err.message : String(err);
    const definitive = isDefinitive(err);
    if (err instanceof RemoteError && err.code === 'VMM_VM_NOT_FOUND') {
      // The source had no such VM when MigrateVm came: nothing moved, and it is not there.
      await this.dropArrival(live);
      this.finishFailed(live, `migration of ${job.vm} from ${job.sourceVmm} failed: ${message}`, {
        where: 'unknown',
        vmm: '',
        detail:
          `VM ${job.vm} was not on ${job.sourceVmm} when the migration began (destroyed, ` +
          `moved, or lost with a restart of ${job.sourceVmm} meanwhile); find it with ` +
          '`vmctl vm list`',
      });
      return;
    }
    const evidence = await gatherEvidence({ vmms: this.vmms, leases: this.leases }, job, {
      settleMs: definitive ? 0 : this.migrationTimeoutMs,
      pollMs: this.pollMs,
      retryMs: 2000,
      closed: () => this.closed,
    });
    let v = judge(job, evidence, { cancelled: live.cancelRequested });
    if (live.wasRunning && leftPausedOnSource(job, v, evidence))
      v = await this.resumeOnSource(live, v);
    const what = `migration of ${job.vm} from ${job.sourceVmm} to ${job.targetVmm}`;
    let errorDesc: string;
    if (v.outcome.where === 'source') {
      errorDesc = definitive
        ? `${what} failed: ${message}`
        : `${what} did not complete (${message}); ${v.outcome.detail}`;
    } else {
      errorDesc = `${v.outcome.detail} (${what}: ${message})`;
    }
    this.apply(live, v, errorDesc);
  }

  /**
   * Resumes a VM the job's migration left paused on its source (the target took everything but
   * never confirmed it ran the VM, and has since been found without it). Best effort: a failed
   * resume leaves the verdict as it was, saying the VM is paused.
   */
  private async resumeOnSource(live: Live, v: Verdict): Promise<Verdict> {
    const { job } = live;
    try {
      await this.vmms.resume(job.sourceAddress, job.vm);
    } catch (err) {
      this.log.warn({ job: job.id, vm: job.vm, err }, 'could not resume the VM on its source');
      return v;
    }
    this.log.info({ job: job.id, vm: job.vm }, 'resumed the VM on its source: the target has none');
    return {
      ...v,
      outcome: {
        ...v.outcome,
        detail:
          `VM ${job.vm} runs on ${job.sourceVmm} again: resumed there once ${job.targetVmm} ` +
          'was found without it',
      },
    };
  }

  /** Records a verdict as the job's end. */
  private apply(live: Live, v: Verdict, errorDesc: string): void {
    const { job } = live;
    if (v.status === 'completed') {
      this.opts.registry.moved(job.vm, job.sourceVmm, job.targetVmm);
      this.finishCompleted(live, { ...(v.info ?? live.job.info), status: 'completed' }, v.outcome);
    } else if (v.status === 'cancelled') {
      this.finishCancelled(live, undefined, v.outcome);
    } else {
      this.finishFailed(live, errorDesc, v.outcome);
    }
  }

  /**
   * CancelIncoming on the target, best effort: a job that never reached MigrateVm leaves no
   * reservation there. A target that cannot be reached keeps it until its token expires.
   */
  private async dropArrival(live: Live): Promise<void> {
    const { job } = live;
    try {
      await this.vmms.cancelIncoming(job.targetAddress, job.vm, job.id);
    } catch (err) {
      this.log.info({ job: job.id, err }, 'could not give up the arrival on the target');
    }
  }

  /** PrepareIncoming on the target, with the spec the source reported. */
  private prepareIncoming(live: Live): Promise<PreparedTarget> {
    const { job } = live;
    // With the VM's spec the target maps its RAM and builds the machine before the stream
    // starts (outside the migration's setup and total time, as a QEMU started with -incoming
    // is ready before `migrate`). Without it, it builds them when the stream's header comes.
    const sourceMemstore = this.crossHostSource(job.sourceVmm, job.targetVmm);
    return this.vmms.prepareIncoming(job.targetAddress, {
      vm: job.vm,
      jobId: job.id,
      sourceVmm: job.sourceVmm,
      spec: live.spec,
      capabilities: job.capabilities,
      ...(sourceMemstore !== undefined ? { sourceMemstore } : {}),
    });
  }

  /**
   * The source host's memstore when `source` and `target` run on different hosts (the target
   * then fills the VM's shared RAM from it by post-copy); undefined on one host, or when either
   * instance is no longer registered (PrepareIncoming then says what is wrong).
   */
  private crossHostSource(source: string, target: string): string | undefined {
    const from = this.opts.registry.find(source);
    const to = this.opts.registry.find(target);
    if (from === undefined || to === undefined || sameHost(from, to)) return undefined;
    return from.memstoreAddress !== '' ? from.memstoreAddress : undefined;
  }

  /** A cross-host move completed: the target's host owns the VM now (its fencing epoch + 1). */
  private async claimHost(job: Job): Promise<void> {
    const ownership = this.opts.hostOwnership;
    const to = this.opts.registry.find(job.targetVmm);
    if (ownership === undefined || to === undefined) return;
    if (this.crossHostSource(job.sourceVmm, job.targetVmm) === undefined) return;
    try {
      const now = await ownership.owner(job.vm);
      await ownership.claim(job.vm, to.hostId, now.epoch);
    } catch (err) {
      this.log.warn(
        { job: job.id, vm: job.vm, host: to.hostId, error: (err as Error).message },
        'could not record which host owns the VM now',
      );
    }
  }

  /** A progress report of MigrateVm's stream into the job. */
  private progress(live: Live, info: MigrationInfo): void {
    // The last message (the final info) is handled when the call ended OK.
    if (!isActive(info.status)) return;
    this.toStatus(live, info.status);
    this.update(live, { info: { ...info, status: live.job.info.status } });
  }

  private finishCompleted(
    live: Live,
    info: MigrationInfo,
    outcome?: JobOutcome,
    extra: Partial<Job> = {},
  ): void {
    if (!this.walk(live, 'completed')) {
      // cancel arrived after the point of no return: the VM runs on the target
      live.sm = new MigrationStateMachine({ initial: 'completed' });
    }
    this.update(
      live,
      {
        ...extra,
        info: { ...info, status: 'completed', errorDesc: undefined },
        outcome,
        finishedAt: new Date(),
      },
      true,
    );
  }

  private finishFailed(
    live: Live,
    errorDesc: string,
    outcome?: JobOutcome,
    extra: Partial<Job> = {},
  ): void {
    live.sm.fail(errorDesc);
    this.update(
      live,
      {
        ...extra,
        info: { ...live.job.info, ...extra.info, status: live.sm.status, errorDesc },
        outcome,
        finishedAt: new Date(),
      },
      true,
    );
  }

  private finishCancelled(live: Live, info?: MigrationInfo, outcome?: JobOutcome): void {
    this.walk(live, 'cancelled');
    const base = info ?? live.job.info;
    this.update(
      live,
      {
        info: { ...base, status: live.sm.status, errorDesc: undefined },
        outcome,
        finishedAt: new Date(),
      },
      true,
    );
  }

  // --- running a save, restore, template or clone job ----------------------------------------

  private planContext(): PlanContext {
    return {
      registry: this.opts.registry,
      snapshots: this.snapshots,
      locate: (vm) => this.locate(vm),
      reservedNumbers: (prefix) =>
        [...this.jobs.values()]
          .map((l) => l.job)
          .filter((j) => j.kind === 'clone' && !isFinished(j) && j.snapshot?.namePrefix === prefix)
          .map((j) => j.snapshot!.firstIndex + j.snapshot!.count - 1),
      now: () => new Date(),
    };
  }

  private startSnapshotJob(plan: SnapshotPlan): Job {
    if (plan.vm !== '') this.assertNotBusy(plan.vm);
    const live = this.create(plan.kind, {
      vm: plan.vm,
      spec: undefined,
      wasRunning: false,
      source: plan.side === 'source' ? plan.vmm : undefined,
      target: plan.side === 'target' ? plan.vmm : undefined,
      capabilities: validated({}, {}),
      parameters: {},
      parent: '',
      snapshot: plan.request,
    });
    live.guestImage = plan.guestImage;
    this.track(this.runSnapshot(live));
    return live.job;
  }

  /**
   * Runs a snapshot job: `setup`, then `active` (on disk before the vmm is asked, so a restart
   * knows the vmm may have done the work), the vmm call(s), and the end. An end the vmm did not
   * decide is resolved by looking at what exists (snapshot-resolve.ts).
   */
  private async runSnapshot(live: Live): Promise<void> {
    const { job } = live;
    const log = this.log.child({ job: job.id, kind: job.kind, vm: job.vm });
    const t0 = performance.now();
    this.toStatus(live, 'setup');
    this.toStatus(live, 'active');
    await this.syncJournal();
    const abort = new AbortController();
    live.abort = () => abort.abort();
    let end: SnapshotEnd;
    try {
      end = await runSnapshotJob(
        {
          vmms: this.vmms,
          deadlineMs: this.migrationTimeoutMs,
          signal: abort.signal,
          log,
          guestImage: live.guestImage,
        },
        live.job,
      );
    } finally {
      live.abort = undefined;
      live.guestImage = undefined;
    }
    if (end.status === 'uncertain') {
      log.warn({ error: end.error }, 'the vmm did not say how the job ended; looking');
      const seen = await this.resolveSnapshot(live.job);
      if (this.closed) return;
      end =
        seen.status === 'failed'
          ? { status: 'failed', error: `${end.error}; ${seen.error}` }
          : seen;
    }
    this.endSnapshot(live, end, performance.now() - t0);
    log.info(
      { status: live.job.info.status, ms: round(performance.now() - t0) },
      `${job.kind} job ended`,
    );
  }

  private resolveSnapshot(job: Job): Promise<SnapshotEnd> {
    return resolveSnapshotJob({ vmms: this.vmms, snapshots: this.snapshots, log: this.log }, job, {
      settleMs: this.opts.recoveryRetryMs ?? 30_000,
      pollMs: this.pollMs,
      closed: () => this.closed,
    });
  }

  /** Records a snapshot job's end; the VMs it started are placed in the registry at once. */
  private endSnapshot(live: Live, end: SnapshotEnd, ms: number): void {
    const info = { ...live.job.info, totalTimeMs: Math.max(1, Math.round(ms)) };
    if (end.status === 'completed') {
      const vmm = workerOf(live.job).id;
      for (const vm of end.started) this.opts.registry.learned(vmm, vm);
      const r = live.job.snapshot;
      // a save with stop (a template's guest too) freed the VM: its name is free at once
      if (r !== undefined && (r.stop || r.guest !== '')) this.opts.registry.gone(vmm, live.job.vm);
      const snapshotResult: SnapshotResult = end.result;
      this.finishCompleted(live, info, undefined, { snapshotResult });
    } else if (end.status === 'cancelled') {
      this.update(live, { info });
      this.finishCancelled(live);
    } else {
      this.finishFailed(live, end.error, undefined, { info });
    }
  }

  /**
   * A snapshot job the restart found in flight. One that never reached its vmm (`none`,
   * `setup`: `active` is on disk before the vmm is asked) did nothing; the others are resolved
   * by looking at what exists.
   */
  private recoverSnapshotJob(live: Live, was: MigrationStatus): void {
    const restarted = `the migrator restarted while this job was ${was}`;
    if (was === 'none' || was === 'setup') {
      this.finishFailed(
        live,
        `${restarted}, before it asked ${workerOf(live.job).id}: nothing was done; run it again`,
      );
      return;
    }
    this.track(
      (async () => {
        const end = await this.resolveSnapshot(live.job);
        if (this.closed) return; // a stopping migrator leaves it for the next start
        this.endSnapshot(
          live,
          end.status === 'failed' ? { status: 'failed', error: `${restarted}; ${end.error}` } : end,
          Date.now() - live.job.createdAt.getTime(),
        );
        this.log.info(
          { job: live.job.id, status: live.job.info.status },
          'resolved after the restart',
        );
      })(),
    );
  }

  /**
   * Cancels a snapshot job: only a template's wait for its guest's ready doorbell stops (its
   * VM is destroyed); a save, restore or clone the vmm was asked for ends by itself.
   */
  private cancelSnapshotJob(live: Live): Job {
    if (
      live.abort === undefined ||
      live.job.kind !== 'template' ||
      live.job.snapshot?.guest === ''
    ) {
      throw new MigratorError(
        'MIGRATOR_INVALID_ARGUMENT',
        `job ${live.job.id} (${live.job.kind}) cannot be cancelled: the vmm finishes it by ` +
          `itself, in moments; follow it with \`vmctl jobs watch ${live.job.id}\` (only a ` +
          'template whose guest has not rung ready yet can be cancelled)',
      );
    }
    live.cancelRequested = true;
    this.toStatus(live, 'cancelling');
    live.abort();
    return live.job;
  }

  // --- running a live update ------------------------------------------------------------

  private async runLiveUpdate(parent: Live, children: Live[], concurrency: number): Promise<void> {
    const log = this.log.child({ job: parent.job.id });
    const started = Date.now();
    this.toStatus(parent, 'setup');
    this.toStatus(parent, 'active');
    log.info(
      { from: parent.job.sourceVmm, to: parent.job.targetVmm, vms: children.length, concurrency },
      'live update started',
    );
    // Each child change is folded into the totals at once (O(1)); the parent, whose snapshot
    // carries every child's id, is published at most once per PARENT_PUBLISH_MS, and at the end.
    const totals = new LiveUpdateTotals();
    let publishTimer: NodeJS.Timeout | undefined;
    const publish = () => {
      if (publishTimer !== undefined) clearTimeout(publishTimer);
      publishTimer = undefined;
      this.publishTotals(parent, totals, started);
    };
    const onChild = (child: Job) => {
      totals.observe(child);
      if (publishTimer !== undefined) return;
      publishTimer = setTimeout(publish, PARENT_PUBLISH_MS);
      publishTimer.unref();
    };
    const unsubscribe = children.map((c) => this.watch(c.job.id, onChild));
    let next = 0;
    const worker = async () => {
      while (next < children.length) {
        const child = children[next++]!;
        if (parent.cancelRequested) child.cancelRequested = true;
        await this.runMigrate(child);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(concurrency, children.length) }, worker));
    } finally {
      for (const u of unsubscribe) u();
    }
    for (const c of children) totals.observe(c.job);
    publish();
    const bad = children.filter((c) => c.job.info.status !== 'completed');
    if (parent.cancelRequested) {
      this.finishCancelled(parent, parent.job.info);
    } else if (bad.length > 0) {
      const detail = bad
        .map((c) => `${c.job.vm} (${c.job.id}): ${c.job.info.errorDesc ?? c.job.info.status}`)
        .join('; ');
      this.finishFailed(
        parent,
        `${bad.length} of ${children.length} VM(s) did not move from ${parent.job.sourceVmm} to ` +
          `${parent.job.targetVmm}: ${detail}`,
      );
    } else {
      this.finishCompleted(parent, { ...parent.job.info, status: 'completed' });
    }
    log.info({ status: parent.job.info.status }, 'live update ended');
  }

  /** The parent's info: its children's totals and the wall-clock time since it started. */
  private publishTotals(parent: Live, totals: LiveUpdateTotals, started: number): void {
    if (isFinished(parent.job)) return;
    this.update(parent, {
      info: { ...parent.job.info, ...totals.sums(), totalTimeMs: Date.now() - started },
    });
  }

  // --- helpers ---------------------------------------------------------------------------

  private create(
    kind: JobKind,
    p: {
      vm: string;
      spec: VmSpec | undefined;
      wasRunning: boolean;
      source: VmmRecord | undefined;
      target: VmmRecord | undefined;
      capabilities: MigrationCapabilities;
      parameters: MigrationParameterOverrides;
      parent: string;
      snapshot?: SnapshotRequest;
    },
  ): Live {
    let id: string;
    do id = `${ID_PREFIX[kind]}-${randomBytes(4).toString('hex')}`;
    while (this.jobs.has(id));
    const live: Live = {
      job: {
        id,
        kind,
        vm: p.vm,
        sourceVmm: p.source?.id ?? '',
        targetVmm: p.target?.id ?? '',
        sourceAddress: p.source?.address ?? '',
        targetAddress: p.target?.address ?? '',
        capabilities: p.capabilities,
        parameters: p.parameters,
        info: emptyMigrationInfo('none'),
        createdAt: new Date(),
        finishedAt: undefined,
        children: [],
        parent: p.parent,
        regions: sharedRegionsOf(p.spec),
        outcome: undefined,
        snapshot: p.snapshot,
        snapshotResult: undefined,
      },
      sm: new MigrationStateMachine(),
      spec: p.spec,
      wasRunning: p.wasRunning,
      cancelRequested: false,
      migrating: false,
    };
    this.jobs.set(id, live);
    // written now; on disk before the job's first MigrateVm (runMigrate awaits the sync)
    this.persist(live.job, false);
    return live;
  }

  /** Moves the job along the legal path to `to` and tells watchers; false when unreachable. */
  private toStatus(live: Live, to: MigrationStatus): boolean {
    const before = live.sm.status;
    if (!this.walk(live, to)) return false;
    if (live.sm.status !== before) {
      this.update(live, { info: { ...live.job.info, status: live.sm.status } }, true);
    }
    return true;
  }

  /** Moves the state machine only (the caller publishes the final snapshot once). */
  private walk(live: Live, to: MigrationStatus): boolean {
    const path = statusPath(live.sm.status, to);
    if (path === undefined) return false;
    for (const step of path) live.sm.transition(step);
    return true;
  }

  private update(live: Live, patch: Partial<Job>, persist = false): void {
    const info = patch.info;
    if (info !== undefined && info.errorDesc === undefined && 'errorDesc' in info) {
      const { errorDesc: _drop, ...rest } = info;
      patch = { ...patch, info: rest };
    }
    const wasFinished = isFinished(live.job);
    live.job = { ...live.job, ...patch };
    if (persist) this.persist(live.job, isFinished(live.job));
    if (!wasFinished && isFinished(live.job)) this.opts.onJobEnded?.(live.job);
    for (const fn of [...(this.listeners.get(live.job.id) ?? [])]) {
      try {
        fn(live.job);
      } catch (err) {
        this.log.warn({ err, job: live.job.id }, 'job listener failed');
      }
    }
  }

  /** Everything journaled so far on disk; a failure is logged (as a failed append is). */
  private async syncJournal(): Promise<void> {
    try {
      await this.opts.journal?.sync?.();
    } catch (err) {
      this.log.error({ err }, 'cannot sync the job journal');
    }
  }

  private persist(job: Job, durable: boolean): void {
    if (this.opts.journal === undefined) return;
    try {
      this.opts.journal.append(job, durable);
    } catch (err) {
      this.log.error({ err, job: job.id }, 'cannot append to the job journal');
    }
  }

  private live(id: string): Live {
    const live = this.jobs.get(id);
    if (live === undefined) {
      throw new MigratorError(
        'MIGRATOR_JOB_NOT_FOUND',
        `no job "${id}"; list jobs with \`vmctl jobs list --all\``,
      );
    }
    return live;
  }

  private assertNotBusy(vm: string): void {
    for (const l of this.jobs.values()) {
      if (l.job.kind !== 'live-update' && l.job.vm === vm && !isFinished(l.job)) {
        const doing = BUSY_WORDS[l.job.kind];
        throw new MigratorError(
          'MIGRATOR_VM_BUSY',
          `VM ${vm} is already being ${doing} by job ${l.job.id}; wait for it (\`vmctl jobs ` +
            `watch ${l.job.id}\`)${l.job.kind === 'migrate' ? ` or \`vmctl jobs cancel ${l.job.id}\`` : ''}`,
        );
      }
    }
  }

  /**
   * Where `vm` runs, by the instances' reports. A VM the reports do not place yet (created a
   * moment ago, its report still on the way; or a migrator that just restarted) is asked for
   * once: GetVm of that one VM on every alive instance; an owner's answer is recorded.
   *
   * @throws MigratorError `MIGRATOR_VM_NOT_FOUND` when no alive instance has it either
   */
  private async locate(vm: string): Promise<VmLocation> {
    const known = this.opts.registry.locate(vm);
    if (known !== undefined) return known;
    const alive = this.opts.registry.list().filter((r) => r.alive);
    await Promise.all(
      alive.map(async (r) => {
        const found = await this.vmms.vm(r.address, vm).catch(() => null);
        if (found !== null && ownsVm(found.state)) this.opts.registry.learned(r.id, found);
      }),
    );
    const found = this.opts.registry.locate(vm);
    if (found !== undefined) return found;
    const asked = alive.map((r) => r.id).join(', ') || 'none alive';
    throw new MigratorError(
      'MIGRATOR_VM_NOT_FOUND',
      `no vmm instance runs a VM named ${vm} (asked: ${asked}); list VMs with \`vmctl vm list\``,
    );
  }

  /**
   * A migrate job the restart found in flight: cancelled at both ends, then ended with what
   * really happened (see {@link JobManager.recover}).
   */
  private async resolveAfterRestart(live: Live, was: MigrationStatus): Promise<void> {
    const { job } = live;
    const log = this.log.child({ job: job.id, vm: job.vm });
    const timing: RecoveryTiming = {
      retryMs: this.opts.recoveryRetryMs ?? 30_000,
      timeoutMs: this.migrationTimeoutMs,
      pollMs: this.pollMs,
      closed: () => this.closed,
    };
    const v = await resolveAfterRestart({ vmms: this.vmms, leases: this.leases }, job, timing, log);
    if (this.closed) return; // a stopping migrator leaves it for the next start
    const restarted = `the migrator restarted while this job was ${was}`;
    const outcome: JobOutcome =
      v.status === 'completed'
        ? { ...v.outcome, detail: `${v.outcome.detail} (it completed while ${restarted})` }
        : v.status === 'cancelled'
          ? {
              ...v.outcome,
              detail: `${restarted}: it cancelled the migration at both ends; ${v.outcome.detail}`,
            }
          : v.outcome;
    const said = v.sourceError !== undefined ? `; ${job.sourceVmm} said: ${v.sourceError}` : '';
    this.apply(live, { ...v, outcome }, `${restarted}; ${v.outcome.detail}${said}`);
    log.info({ status: live.job.info.status, outcome }, 'resolved after the restart');
  }

  /**
   * A live update the restart found in flight: its children are resolved one by one (their
   * own jobs); it ends once they all did, as a live update does.
   */
  private async finishParentAfterRestart(parent: Live): Promise<void> {
    const children = parent.job.children
      .map((id) => this.jobs.get(id))
      .filter((c): c is Live => c !== undefined);
    await Promise.all(
      children.map((c) => this.waitFor(c.job.id, 24 * 3600_000).catch(() => undefined)),
    );
    if (this.closed) return;
    const bad = children.filter((c) => c.job.info.status !== 'completed');
    if (bad.length === 0) {
      this.finishCompleted(parent, { ...parent.job.info, status: 'completed' });
      return;
    }
    const detail = bad
      .map((c) => `${c.job.vm} (${c.job.id}): ${c.job.outcome?.detail ?? c.job.info.status}`)
      .join('; ');
    this.finishFailed(
      parent,
      `the migrator restarted during this live update; ${bad.length} of ${children.length} ` +
        `VM(s) did not move from ${parent.job.sourceVmm} to ${parent.job.targetVmm}: ${detail}`,
    );
  }

  private track(p: Promise<unknown>): void {
    const t = p.catch((err: unknown) => this.log.error({ err }, 'job task failed'));
    this.running.add(t);
    void t.finally(() => this.running.delete(t));
  }
}

/**
 * How often, at most, a live update's parent is published while its children run: each
 * publication goes to every watcher with all the children's ids.
 */
const PARENT_PUBLISH_MS = 100;

const round = (ms: number) => Math.round(ms * 10) / 10;

/** The first part of a job id, by kind. */
const ID_PREFIX: Record<JobKind, string> = {
  migrate: 'mig',
  'live-update': 'lu',
  save: 'sav',
  restore: 'rst',
  template: 'tpl',
  clone: 'cln',
};

/** What a snapshot job does to its VM, for "VM x is already being ...". */
const BUSY_WORDS: Record<JobKind, string> = {
  migrate: 'migrated',
  'live-update': 'live-updated',
  save: 'saved',
  restore: 'restored',
  template: 'made into a template',
  clone: 'cloned',
};

/** The memstore regions of a spec's shared blocks (whose leases say where the VM may run). */
function sharedRegionsOf(spec: VmSpec | undefined): string[] | undefined {
  if (spec === undefined) return undefined;
  return spec.ram.filter((b) => b.backend === 'shared' && b.region !== '').map((b) => b.region);
}

/** The outcome of a job that moved nothing: the VM stays on its source. */
function untouched(job: Job, why: string): JobOutcome {
  return {
    where: 'source',
    vmm: job.sourceVmm,
    detail: `VM ${job.vm} stays on ${job.sourceVmm}: nothing moved (${why})`,
  };
}

/** The outcome of a job that completed. */
function arrived(job: Job): JobOutcome {
  return { where: 'target', vmm: job.targetVmm, detail: `VM ${job.vm} runs on ${job.targetVmm}` };
}

function invalid(message: string): MigratorError {
  return new MigratorError('MIGRATOR_INVALID_ARGUMENT', message);
}

function validated(
  capabilities: Partial<MigrationCapabilities>,
  parameters: MigrationParameterOverrides,
): MigrationCapabilities {
  try {
    return assertValidMigrationConfig({ capabilities, parameters }).capabilities;
  } catch (err) {
    if (err instanceof QapiError) throw invalid(err.message);
    throw err;
  }
}
