import * as grpc from '@grpc/grpc-js';
import { vmm as vpb } from '@handoff/proto';
import type {
  MigrationCapabilities,
  MigrationInfo,
  MigrationParameterOverrides,
} from '@handoff/qapi';
import { capabilitiesToWire, migrationInfoFromWire, parametersToWire } from '@handoff/qapi/wire';
import { RemoteError, createClient, streamCall, unaryCall } from '@handoff/service';
import type { HostedVm, VmSpec } from '../registry/hosted-vm.js';
import { hostedVmFromWire, vmSpecToWire } from './vm-wire.js';

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
}

/**
 * How a job's arrival ended on its target (CancelIncoming's answer): `none` when that vmm
 * knows no arrival of the job, `dropped` when it was given up before anything moved (the name
 * is free), `arrived` when the VM runs there, `failed` when its migration failed there.
 */
export type ArrivalEnd = 'none' | 'dropped' | 'arrived' | 'failed';

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
  vm(address: string, vm: string): Promise<HostedVm | null>;
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
 * ended without its final info, an internal error, or the source's own MIGRATION_UNCERTAIN.
 */
export function isDefinitive(err: unknown): boolean {
  if (!(err instanceof RemoteError)) return false;
  if (err.code === 'MIGRATION_UNCERTAIN') return false;
  return err.code.startsWith('MIGRATION_') || err.code.startsWith('VMM_');
}

const ARRIVAL_FROM_WIRE: Partial<Record<vpb.IncomingOutcome, ArrivalEnd>> = {
  [vpb.IncomingOutcome.INCOMING_OUTCOME_NONE]: 'none',
  [vpb.IncomingOutcome.INCOMING_OUTCOME_DROPPED]: 'dropped',
  [vpb.IncomingOutcome.INCOMING_OUTCOME_ARRIVED]: 'arrived',
  [vpb.IncomingOutcome.INCOMING_OUTCOME_FAILED]: 'failed',
};

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

  async vm(address: string, vm: string): Promise<HostedVm | null> {
    try {
      const res = await unaryCall(this.client(address), 'getVm', { name: vm }, this.opts());
      return res.vm === undefined ? null : hostedVmFromWire(res.vm);
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'VMM_VM_NOT_FOUND') return null;
      throw err;
    }
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
