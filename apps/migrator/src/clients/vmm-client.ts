import * as grpc from '@grpc/grpc-js';
import { memstore as mspb, vmm as vpb } from '@handoff/proto';
import type {
  MigrationCapabilities,
  MigrationInfo,
  MigrationParameterOverrides,
} from '@handoff/qapi';
import { capabilitiesToWire, migrationInfoFromWire, parametersToWire } from '@handoff/qapi/wire';
import { RemoteError, createClient, streamCall, unaryCall } from '@handoff/service';
import type { VmSpec, VmStatus } from '../registry/hosted-vm.js';
import type { SnapshotKind } from './memstore-client.js';
import { vmSpecToWire, vmStatusFromWire } from './vm-wire.js';

/** What a target's PrepareIncoming handed out, for the source's MigrateVm. */
export interface PreparedTarget {
  /** One-time token the source presents. */
  readonly token: string;
  /** The target's gRPC address for MigrationService.Incoming. */
  readonly address: string;
  /** The target's data channel, or ''. */
  readonly dataAddress: string;
  /** The hand-off slot the target prepared, or '' (a capability: only for the source). */
  readonly handoffSlot: string;
}

/** One migration as the migrator asks a source for it. */
export interface MigrateCall {
  readonly vm: string;
  readonly jobId: string;
  readonly target: PreparedTarget;
  readonly capabilities: MigrationCapabilities;
  readonly parameters: MigrationParameterOverrides;
}

/**
 * What the migrator's jobs ask of vmm instances, in domain terms; `address` is the instance's
 * registered address. Calls reject with a RemoteError carrying the vmm's stable code (see
 * {@link isUnreachable}).
 */
/** What PrepareIncoming carries: with the spec, the target builds the machine ahead. */
export interface PrepareCall {
  readonly vm: string;
  readonly jobId: string;
  /** The id of the vmm the VM comes from: the token is valid only for its stream. */
  readonly sourceVmm: string;
  readonly spec: VmSpec | undefined;
  readonly capabilities: MigrationCapabilities;
  /**
   * The source host's memstore when the source vmm runs on another host than the target
   * (undefined: the same host): the target then fills shared blocks by post-copy.
   */
  readonly sourceMemstore?: string;
}

/**
 * How a job's arrival ended on its target (CancelIncoming's answer): `none` when that vmm
 * knows no arrival of the job, `dropped` when it was given up before anything moved (the name
 * is free), `arrived` when the VM runs there, `failed` when its migration failed there.
 */
export type ArrivalEnd = 'none' | 'dropped' | 'arrived' | 'failed';

/** SaveVm, in domain terms. */
export interface SaveCall {
  readonly vm: string;
  readonly jobId: string;
  /** The snapshot's name (required). */
  readonly snapshot: string;
  readonly full: boolean;
  readonly stop: boolean;
  readonly template: boolean;
}

/** What SaveVm answered. */
export interface Saved {
  readonly snapshot: string;
  readonly kind: SnapshotKind;
  readonly pauseUs: number;
  readonly durationUs: number;
  readonly bytes: number;
}

/** RestoreVm, in domain terms. */
export interface RestoreCall {
  /** The VM's name ('' = the name it was saved with). */
  readonly name: string;
  readonly snapshot: string;
  readonly paused: boolean;
  readonly jobId: string;
}

/** CloneVms, in domain terms: VMs `<namePrefix>-<k>`, k from firstIndex. */
export interface CloneCall {
  readonly snapshot: string;
  readonly count: number;
  readonly namePrefix: string;
  readonly firstIndex: number;
  readonly paused: boolean;
  readonly jobId: string;
}

/** What CloneVms answered. */
export interface Cloned {
  readonly vms: readonly VmStatus[];
  /** Per clone, request to its guest running (µs). */
  readonly runningAfterUs: readonly number[];
  readonly durationUs: number;
}

/**
 * How waiting for a guest's ready doorbell ended: it rang, or not — `timeout`, `ended` (the
 * guest powered off or crashed, or the VM was destroyed; `detail` says which) or `cancelled`.
 */
export type ReadyWait =
  | { readonly ready: true }
  | { readonly ready: false; readonly why: 'timeout' | 'ended' | 'cancelled'; detail: string };

export interface VmmCalls {
  /** PrepareIncoming on a target; with the spec the target builds the machine ahead. */
  prepareIncoming(address: string, req: PrepareCall): Promise<PreparedTarget>;
  /**
   * MigrateVm on a source, read to its end: `onProgress` gets every report of its stream; the
   * promise resolves with the final info, or rejects with the migration's error. The source
   * cancels the migration when `deadlineMs` passes.
   */
  migrate(
    address: string,
    req: MigrateCall,
    opts: { deadlineMs: number; onProgress: (info: MigrationInfo) => void },
  ): Promise<MigrationInfo>;
  /**
   * GetMigration: the source's view of its last migration of `vm`; null when it knows none, or
   * (with `jobId`) when its last migration of the VM belongs to another job.
   */
  migration(address: string, vm: string, jobId?: string): Promise<MigrationInfo | null>;
  /** ResumeVm: runs a paused VM again. */
  resume(address: string, vm: string): Promise<void>;
  /** CancelMigration on a source (it refuses past the point of no return). */
  cancelMigration(address: string, vm: string): Promise<void>;
  /**
   * CancelIncoming on a target: it gives up the job's arrival unless past its point of no
   * return (then waits for its end) and says how the arrival ended.
   */
  cancelIncoming(address: string, vm: string, jobId: string): Promise<ArrivalEnd>;
  /** GetVm: the VM as that instance holds it, or null when it holds none of that name. */
  vm(address: string, vm: string): Promise<VmStatus | null>;
  /** ListVms: every VM the instance holds. */
  vms(address: string): Promise<VmStatus[]>;
  /** CreateVm, started at once; `guestImage` is the guest's ELF when a client sent it. */
  createVm(address: string, spec: VmSpec, guestImage?: Uint8Array): Promise<VmStatus>;
  /** DestroyVm; a VM the instance does not hold (any more) counts as destroyed. */
  destroyVm(address: string, vm: string): Promise<void>;
  /**
   * Follows the VM (WatchVm) until its guest rings the ready doorbell (or had rung it), it ends
   * (powers off, crashes, is destroyed), `timeoutMs` passes, or `signal` aborts.
   *
   * @throws RemoteError when the watch cannot be opened or breaks (the vmm's word is unknown)
   */
  awaitReady(
    address: string,
    vm: string,
    opts: { timeoutMs: number; signal?: AbortSignal },
  ): Promise<ReadyWait>;
  /** SaveVm, with a deadline of `deadlineMs`. */
  saveVm(address: string, req: SaveCall, deadlineMs: number): Promise<Saved>;
  /** RestoreVm: the VM started, and the time to its guest running (µs). */
  restoreVm(
    address: string,
    req: RestoreCall,
    deadlineMs: number,
  ): Promise<{ vm: VmStatus; durationUs: number }>;
  /** CloneVms: every clone started, or none. */
  cloneVms(address: string, req: CloneCall, deadlineMs: number): Promise<Cloned>;
  /** Closes every connection. */
  close(): void;
}

/** Whether a call failed because the vmm could not be reached in time (not a vmm's answer). */
export function isUnreachable(err: unknown): boolean {
  return (
    err instanceof RemoteError &&
    (err.status === grpc.status.UNAVAILABLE || err.status === grpc.status.DEADLINE_EXCEEDED)
  );
}

/**
 * Why a vmm could not be reached, from a call's error: `refused` when nothing listens at its
 * address any more (its process is gone, on this host), `silent` when it did not answer in
 * time or the connection broke; undefined when the error is the vmm's own answer.
 */
export function unreachableHow(err: unknown): 'refused' | 'silent' | undefined {
  if (!isUnreachable(err)) return undefined;
  return /ECONNREFUSED|ENOENT/.test((err as RemoteError).message) ? 'refused' : 'silent';
}

/**
 * Whether a migration's error is the source vmm's own verdict on it (a coded migration or VM
 * error that says where the VM is) rather than an uncertain end: a transport error, a call that
 * ended without its final info, an internal error, the source's own MIGRATION_UNCERTAIN, or a
 * MIGRATION_POSTCOPY_FAILED (the VM ran on the target before the fill of its memory failed).
 */
export function isDefinitive(err: unknown): boolean {
  if (!(err instanceof RemoteError)) return false;
  // Uncertain, or a post-copy that failed after the target ran the guest: ask both ends.
  if (err.code === 'MIGRATION_UNCERTAIN' || err.code === 'MIGRATION_POSTCOPY_FAILED') return false;
  return err.code.startsWith('MIGRATION_') || err.code.startsWith('VMM_');
}

const SNAPSHOT_KIND_FROM_WIRE: Partial<Record<mspb.SnapshotKind, SnapshotKind>> = {
  [mspb.SnapshotKind.SNAPSHOT_KIND_BYPASS]: 'bypass',
  [mspb.SnapshotKind.SNAPSHOT_KIND_FULL]: 'full',
  [mspb.SnapshotKind.SNAPSHOT_KIND_IMPORTED]: 'imported',
};

const VM_ENDS: Partial<Record<vpb.VmEventKind, string>> = {
  [vpb.VmEventKind.VM_EVENT_KIND_POWERED_OFF]: 'the guest powered off',
  [vpb.VmEventKind.VM_EVENT_KIND_GUEST_ERROR]: 'the guest crashed',
  [vpb.VmEventKind.VM_EVENT_KIND_DESTROYED]: 'the VM was destroyed',
};

/** Why a watched VM will never ring ready, from one WatchVm message; undefined while it may. */
function endOf(m: vpb.WatchVmResponse): string | undefined {
  const said = VM_ENDS[m.kind];
  const state = m.vm?.state;
  const why =
    said ??
    (state === vpb.VmState.VM_STATE_POWERED_OFF
      ? 'the guest powered off'
      : state === vpb.VmState.VM_STATE_CRASHED
        ? 'the guest crashed'
        : undefined);
  if (why === undefined) return undefined;
  const extra =
    m.vm?.state === vpb.VmState.VM_STATE_POWERED_OFF
      ? ` (exit code ${m.vm.exitCode})`
      : m.vm?.error
        ? `: ${m.vm.error}`
        : m.detail !== ''
          ? `: ${m.detail}`
          : '';
  return `${why}${extra}`;
}

const ARRIVAL_FROM_WIRE: Partial<Record<vpb.IncomingOutcome, ArrivalEnd>> = {
  [vpb.IncomingOutcome.INCOMING_OUTCOME_NONE]: 'none',
  [vpb.IncomingOutcome.INCOMING_OUTCOME_DROPPED]: 'dropped',
  [vpb.IncomingOutcome.INCOMING_OUTCOME_ARRIVED]: 'arrived',
  [vpb.IncomingOutcome.INCOMING_OUTCOME_FAILED]: 'failed',
};

/** A message field the vmm must have set; its absence is the vmm's internal error. */
function required<T>(value: T | undefined, method: string, address: string): T {
  if (value !== undefined) return value;
  throw new RemoteError(
    'GRPC_INTERNAL',
    grpc.status.INTERNAL,
    `${method}: vmm at ${address} answered without its VM`,
  );
}

/** How long a job's first call to an instance waits for its channel to connect. */
const CONNECT_WAIT_MS = 2000;

/**
 * The migrator's client edge to vmm instances: one channel per address, every call with a
 * deadline, wire types converted here and nowhere else in the migrator.
 */
export class VmmClients implements VmmCalls {
  private readonly clients = new Map<string, vpb.VmmServiceClient>();

  /**
   * @param callTimeoutMs - deadline of every call but MigrateVm
   * @param credentials - the migrator's client credentials (its certificate, role migrator)
   */
  constructor(
    private readonly callTimeoutMs: number,
    private readonly credentials: grpc.ChannelCredentials,
  ) {}

  async prepareIncoming(address: string, req: PrepareCall): Promise<PreparedTarget> {
    const res = await unaryCall(
      await this.connected(address),
      'prepareIncoming',
      {
        name: req.vm,
        jobId: req.jobId,
        sourceVmm: req.sourceVmm,
        spec: req.spec === undefined ? undefined : vmSpecToWire(req.spec),
        capabilities: capabilitiesToWire(req.capabilities),
        sourceMemstore: req.sourceMemstore ?? '',
      },
      this.opts(),
    );
    return {
      token: res.token,
      address: res.address,
      dataAddress: res.dataAddress,
      handoffSlot: res.handoffSlot,
    };
  }

  async migrate(
    address: string,
    req: MigrateCall,
    opts: { deadlineMs: number; onProgress: (info: MigrationInfo) => void },
  ): Promise<MigrationInfo> {
    const last = await streamCall(
      await this.connected(address),
      'migrateVm',
      {
        name: req.vm,
        jobId: req.jobId,
        targetAddress: req.target.address,
        token: req.target.token,
        capabilities: capabilitiesToWire(req.capabilities),
        parameters: parametersToWire(req.parameters),
        targetDataAddress: req.target.dataAddress,
        targetHandoffSlot: req.target.handoffSlot,
      },
      {
        deadlineMs: opts.deadlineMs,
        onMessage: (m) => {
          if (m.info !== undefined) opts.onProgress(migrationInfoFromWire(m.info));
        },
      },
    );
    if (last.info === undefined) {
      throw new RemoteError(
        'GRPC_INTERNAL',
        grpc.status.INTERNAL,
        `migrateVm: vmm at ${address} ended the migration of ${req.vm} without its final info`,
      );
    }
    return migrationInfoFromWire(last.info);
  }

  async migration(address: string, vm: string, jobId?: string): Promise<MigrationInfo | null> {
    try {
      const res = await unaryCall(this.client(address), 'getMigration', { name: vm }, this.opts());
      // a vmm of a build before job ids answers '': its last migration is taken as the job's
      if (jobId !== undefined && res.jobId !== '' && res.jobId !== jobId) return null;
      return res.info === undefined ? null : migrationInfoFromWire(res.info);
    } catch (err) {
      if (isUnreachable(err)) throw err;
      return null; // the vmm answered: it knows no migration of the VM
    }
  }

  async resume(address: string, vm: string): Promise<void> {
    await unaryCall(this.client(address), 'resumeVm', { name: vm }, this.opts());
  }

  async cancelMigration(address: string, vm: string): Promise<void> {
    await unaryCall(this.client(address), 'cancelMigration', { name: vm }, this.opts());
  }

  async cancelIncoming(address: string, vm: string, jobId: string): Promise<ArrivalEnd> {
    const res = await unaryCall(
      this.client(address),
      'cancelIncoming',
      { name: vm, jobId },
      this.opts(),
    );
    return ARRIVAL_FROM_WIRE[res.outcome] ?? 'none';
  }

  async vm(address: string, vm: string): Promise<VmStatus | null> {
    try {
      const res = await unaryCall(this.client(address), 'getVm', { name: vm }, this.opts());
      return res.vm === undefined ? null : vmStatusFromWire(res.vm);
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'VMM_VM_NOT_FOUND') return null;
      throw err;
    }
  }

  async vms(address: string): Promise<VmStatus[]> {
    const res = await unaryCall(this.client(address), 'listVms', {}, this.opts());
    return res.vms.map(vmStatusFromWire);
  }

  async createVm(address: string, spec: VmSpec, guestImage?: Uint8Array): Promise<VmStatus> {
    const res = await unaryCall(
      await this.connected(address),
      'createVm',
      {
        spec: vmSpecToWire(spec),
        start: true,
        ...(guestImage !== undefined ? { guestImage } : {}),
      },
      // building the machine (a guest's translation table) can take seconds
      { deadlineMs: Math.max(this.callTimeoutMs, 30_000) },
    );
    return vmStatusFromWire(required(res.vm, 'createVm', address));
  }

  async destroyVm(address: string, vm: string): Promise<void> {
    try {
      await unaryCall(
        this.client(address),
        'destroyVm',
        { name: vm },
        { deadlineMs: Math.max(this.callTimeoutMs, 15_000) },
      );
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'VMM_VM_NOT_FOUND') return;
      throw err;
    }
  }

  async awaitReady(
    address: string,
    vm: string,
    opts: { timeoutMs: number; signal?: AbortSignal },
  ): Promise<ReadyWait> {
    const client = await this.connected(address);
    return new Promise<ReadyWait>((resolve, reject) => {
      const call = client.watchVm({ name: vm }, { deadline: Date.now() + opts.timeoutMs });
      let done = false;
      const finish = (end: ReadyWait | Error) => {
        if (done) return;
        done = true;
        opts.signal?.removeEventListener('abort', onAbort);
        call.cancel();
        if (end instanceof Error) reject(end);
        else resolve(end);
      };
      const onAbort = () => finish({ ready: false, why: 'cancelled', detail: 'cancelled' });
      if (opts.signal?.aborted === true) return onAbort();
      opts.signal?.addEventListener('abort', onAbort);
      call.on('data', (m: vpb.WatchVmResponse) => {
        if (m.kind === vpb.VmEventKind.VM_EVENT_KIND_READY || m.vm?.ready === true) {
          return finish({ ready: true });
        }
        const end = endOf(m);
        if (end !== undefined) finish({ ready: false, why: 'ended', detail: end });
      });
      call.on('error', (err: grpc.ServiceError) => {
        if (err.code === grpc.status.DEADLINE_EXCEEDED) {
          finish({
            ready: false,
            why: 'timeout',
            detail: `no ready doorbell in ${opts.timeoutMs} ms`,
          });
        } else {
          finish(RemoteError.fromGrpc(err, 'watchVm'));
        }
      });
      call.on('end', () =>
        finish({ ready: false, why: 'ended', detail: 'the vmm ended the watch (the VM is gone)' }),
      );
    });
  }

  async saveVm(address: string, req: SaveCall, deadlineMs: number): Promise<Saved> {
    const res = await unaryCall(
      await this.connected(address),
      'saveVm',
      {
        name: req.vm,
        jobId: req.jobId,
        snapshot: req.snapshot,
        full: req.full,
        stop: req.stop,
        template: req.template,
      },
      { deadlineMs },
    );
    return {
      snapshot: res.snapshot?.name ?? req.snapshot,
      kind: (res.snapshot && SNAPSHOT_KIND_FROM_WIRE[res.snapshot.kind]) ?? 'unknown',
      pauseUs: Number(res.pauseUs),
      durationUs: Number(res.durationUs),
      bytes: Number(res.bytes),
    };
  }

  async restoreVm(
    address: string,
    req: RestoreCall,
    deadlineMs: number,
  ): Promise<{ vm: VmStatus; durationUs: number }> {
    const res = await unaryCall(
      await this.connected(address),
      'restoreVm',
      { name: req.name, snapshot: req.snapshot, paused: req.paused, jobId: req.jobId },
      { deadlineMs },
    );
    return {
      vm: vmStatusFromWire(required(res.vm, 'restoreVm', address)),
      durationUs: Number(res.durationUs),
    };
  }

  async cloneVms(address: string, req: CloneCall, deadlineMs: number): Promise<Cloned> {
    const res = await unaryCall(
      await this.connected(address),
      'cloneVms',
      {
        snapshot: req.snapshot,
        count: req.count,
        namePrefix: req.namePrefix,
        firstIndex: req.firstIndex,
        paused: req.paused,
        jobId: req.jobId,
      },
      { deadlineMs },
    );
    return {
      vms: res.vms.map(vmStatusFromWire),
      runningAfterUs: res.runningAfterUs.map(Number),
      durationUs: Number(res.durationUs),
    };
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  private opts() {
    return { deadlineMs: this.callTimeoutMs };
  }

  /**
   * The client of `address`, once its channel is connected or {@link CONNECT_WAIT_MS} passed: a
   * job's first call to an instance the registry says is alive waits for a vmm that just
   * restarted (its channel may still be backing off from the old process) instead of failing
   * the job at once. Other calls fail fast, so a dead instance is told quickly.
   */
  private async connected(address: string): Promise<vpb.VmmServiceClient> {
    const c = this.client(address);
    await new Promise<void>((resolve) =>
      c.waitForReady(Date.now() + CONNECT_WAIT_MS, () => resolve()),
    );
    return c;
  }

  private client(address: string): vpb.VmmServiceClient {
    let c = this.clients.get(address);
    if (c === undefined) {
      c = createClient(vpb.VmmServiceClient, address, this.credentials);
      this.clients.set(address, c);
    }
    return c;
  }
}
