/**
 * The migrations of one vmm instance: outgoing ones by VM name (MigrateVm, GetMigration,
 * CancelMigration), the preparations of incoming ones (PrepareIncoming), and the data channel
 * incoming streams may arrive on.
 */
import { connectivityState } from '@grpc/grpc-js';
import type { vmmStream } from '@handoff/proto';
import type { MigrationCapabilities, MigrationInfo, MigrationParameters } from '@handoff/qapi';
import { channelCredentials, createClient, type Logger, type TlsMaterial } from '@handoff/service';
import { failpoint } from '../failpoints.js';
import { MigrationError } from '../model/migration-error.js';
import type { VmHost } from '../vm/host.js';
import { IncomingMigration } from './incoming.js';
import { OutgoingMigration } from './outgoing.js';
import {
  IncomingPreparations,
  type CancelIncomingOutcome,
  type IncomingHint,
  type PreparedIncoming,
} from './prepare.js';
import {
  refusePostcopyOfCopiedRam,
  refuseUnsupported,
  refuseUnsupportedCapabilities,
} from './support.js';
import { modeFor } from './pages/frames.js';
import {
  startDataChannel,
  type DataChannelOptions,
  type DataChannelServer,
} from './transport/data-channel.js';
import { MigrationServiceClient } from './transport/encode.js';
import type { TargetEndpoints } from './transport/to-target.js';

/** Finished migrations remembered for GetMigration, per VM name. */
const KEEP_FINISHED = 256;

/** A MigrateVm request, as the gRPC edge hands it over. */
export interface MigrateRequest {
  readonly name: string;
  readonly jobId: string;
  /** Where the target listens (PrepareIncoming's answer). */
  readonly target: TargetEndpoints;
  readonly token: string;
  readonly capabilities: MigrationCapabilities;
  readonly parameters: MigrationParameters;
}

export class MigrationManager {
  readonly preparations: IncomingPreparations;
  private readonly outgoing = new Map<string, OutgoingMigration>();
  /** One channel per target address, kept connected between migrations. */
  private readonly clients = new Map<string, vmmStream.MigrationServiceClient>();
  private data: DataChannelServer | undefined;
  /**
   * Told how each outgoing migration ended (`completed`, `failed`, `cancelled`); metrics set it
   * (incoming ones: {@link IncomingPreparations.onArrivalEnded}). Must not throw.
   */
  onMigrationEnded: ((outcome: string) => void) | undefined;

  /**
   * @param switchoverDir - where incoming migrations create their switchover slots (null:
   *   none; the device state always travels on the stream)
   * @param tls - this vmm's TLS material: streams to targets and TCP data channels use it (as
   *   role vmm); null for `--insecure`
   */
  constructor(
    private readonly host: VmHost,
    private readonly logger: Logger,
    switchoverDir: string | null = null,
    private readonly tls: TlsMaterial | null = null,
  ) {
    this.preparations = new IncomingPreparations(host, logger, switchoverDir);
  }

  /**
   * Opens the data channel on `listen` (`unix:/path` or `host:port`); incoming streams on it
   * are served like MigrationService.Incoming calls.
   */
  async listenData(listen: string, opts: DataChannelOptions = {}): Promise<void> {
    this.data = await startDataChannel(
      listen,
      (channel) => this.serveIncoming(channel),
      this.logger,
      { ...opts, tls: this.tls },
    );
  }

  /** Serves one incoming stream (a data-channel connection or a gRPC Incoming call). */
  serveIncoming(channel: Parameters<typeof IncomingMigration.serve>[0]): Promise<void> {
    return IncomingMigration.serve(channel, {
      host: this.host,
      preparations: this.preparations,
      logger: this.logger,
    });
  }

  /** Address of the data channel for PrepareIncoming, or null when there is none. */
  get dataAddress(): string | null {
    return this.data?.address ?? null;
  }

  /**
   * PrepareIncoming: a one-time token for a VM that will arrive under `name`; with a hint (the
   * source's spec and the capabilities) its machine is built now.
   *
   * @throws MigrationError `MIGRATION_UNSUPPORTED` for `capabilities` this vmm does not
   *   implement; VmmError `VMM_VM_EXISTS`
   */
  async prepare(
    name: string,
    jobId: string,
    opts: {
      hint?: IncomingHint;
      capabilities?: MigrationCapabilities;
      source?: string;
      /** The source host's memstore when the VM comes from another host. */
      sourceMemstore?: string;
    } = {},
  ): Promise<PreparedIncoming> {
    if (opts.capabilities !== undefined) refuseUnsupportedCapabilities(opts.capabilities);
    if (opts.hint !== undefined) {
      // Refused here already, before the name is reserved, as the source would refuse it.
      const caps = opts.hint.capabilities;
      refusePostcopyOfCopiedRam(
        caps,
        opts.hint.spec.ram.map((b) => ({ id: b.id, mode: modeFor(b, caps) })),
      );
    }
    return this.preparations.prepare(
      name,
      jobId,
      opts.hint,
      undefined,
      opts.source ?? '',
      opts.sourceMemstore ?? '',
    );
  }

  /**
   * CancelIncoming: gives up the arrival of job `jobId` here unless it is past its point of no
   * return, and says how it ended (see IncomingPreparations.cancel).
   */
  cancelIncoming(name: string, jobId: string): Promise<CancelIncomingOutcome> {
    if (jobId === '') {
      throw new MigrationError(
        'MIGRATION_NOT_FOUND',
        'CancelIncoming needs the job_id its PrepareIncoming was given',
      );
    }
    return this.preparations.cancel(name, jobId);
  }

  /**
   * MigrateVm: runs one outgoing migration to its end.
   *
   * @throws MigrationError `MIGRATION_IN_PROGRESS`, `MIGRATION_UNSUPPORTED`, and what the
   *   migration failed with (the VM's state is as the code says)
   */
  async migrate(req: MigrateRequest): Promise<MigrationInfo> {
    const vm = this.host.get(req.name);
    const current = this.outgoing.get(req.name);
    if (current !== undefined && !current.terminal) {
      throw new MigrationError(
        'MIGRATION_IN_PROGRESS',
        `VM ${req.name} is already migrating; wait for it or cancel it with CancelMigration`,
      );
    }
    refuseUnsupported(req.capabilities);
    if (req.target.address === '' || req.token === '') {
      throw new MigrationError(
        'MIGRATION_FAILED',
        'MigrateVm needs target_address and token (from PrepareIncoming on the target)',
      );
    }
    // A VM an earlier migration left paused and uncertain is this one's now: no re-check.
    current?.stopBackground();
    const m = new OutgoingMigration({
      vm,
      host: this.host,
      jobId: req.jobId,
      target: req.target,
      grpcClient: () => this.clientFor(req.target.address),
      dataTls: this.tls,
      token: req.token,
      capabilities: req.capabilities,
      parameters: req.parameters,
      logger: vm.log.child({ job: req.jobId, side: 'source' }),
    });
    this.outgoing.delete(req.name);
    this.outgoing.set(req.name, m);
    while (this.outgoing.size > KEEP_FINISHED) {
      const oldest = this.outgoing.keys().next().value as string;
      this.outgoing.delete(oldest);
    }
    // A spare thread warming up now would take a CPU from this migration's pause.
    const unhold = this.host.holdSpares();
    try {
      const final = await m.run();
      this.onMigrationEnded?.(final.status);
      failpoint('migrate-vm-before-final');
      return final;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      this.onMigrationEnded?.(code === 'MIGRATION_CANCELLED' ? 'cancelled' : 'failed');
      throw err;
    } finally {
      unhold();
    }
  }

  /** @throws MigrationError `MIGRATION_NOT_FOUND` */
  info(name: string): MigrationInfo {
    return this.find(name).info();
  }

  /** The job of the VM's last outgoing migration. @throws MigrationError `MIGRATION_NOT_FOUND` */
  jobOf(name: string): string {
    return this.find(name).jobId;
  }

  /** @throws MigrationError `MIGRATION_NOT_FOUND` */
  cancel(name: string): void {
    this.find(name).cancel();
  }

  async close(): Promise<void> {
    for (const m of this.outgoing.values()) {
      m.cancel();
      m.stopBackground();
    }
    for (const address of [...this.clients.keys()]) this.dropClient(address);
    await this.data?.close();
    await this.preparations.close();
    this.logger.debug('migrations closed');
  }

  /** The cached client of a target, replaced when its channel failed or shut down. */
  private clientFor(address: string): vmmStream.MigrationServiceClient {
    const cached = this.clients.get(address);
    if (cached !== undefined) {
      const state = cached.getChannel().getConnectivityState(false);
      if (state !== connectivityState.TRANSIENT_FAILURE && state !== connectivityState.SHUTDOWN) {
        return cached;
      }
      this.dropClient(address);
    }
    // Same wire bytes as the generated client; page frames are encoded with one copy.
    const client = createClient(
      MigrationServiceClient,
      address,
      channelCredentials(this.tls, { serverRole: 'vmm' }),
    );
    this.clients.set(address, client);
    return client;
  }

  private dropClient(address: string): void {
    this.clients.get(address)?.close();
    this.clients.delete(address);
  }

  private find(name: string): OutgoingMigration {
    const m = this.outgoing.get(name);
    if (m === undefined) {
      throw new MigrationError(
        'MIGRATION_NOT_FOUND',
        `no migration of VM ${name} is known on this vmm; start one with MigrateVm`,
      );
    }
    return m;
  }
}
