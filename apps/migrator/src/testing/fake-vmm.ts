import { migrator as mpb, serviceNames, vmm as pb } from '@handoff/proto';
import { emptyMigrationInfo, type MigrationInfo, type MigrationStatus } from '@handoff/qapi';
import { migrationInfoToWire } from '@handoff/qapi/wire';
import { Metadata, status as grpcStatus, type ServerWritableStream } from '@grpc/grpc-js';
import type { RegionLease, RegionLeases } from '../clients/memstore-client.js';
import type { ArrivalEnd } from '../clients/vmm-client.js';
import {
  RemoteError,
  ServiceError,
  channelCredentials,
  createClient,
  createLogger,
  serverStream,
  startServer,
  unary,
  unaryCall,
  type RunningServer,
  type TlsMaterial,
} from '@handoff/service';
import { openAccess } from '@handoff/service/testing';
import {
  defaultFacts,
  snapshotHandlers,
  type FakeGuest,
  type FakeSnapshot,
  type FakeSnapshotScript,
  type FakeVmFacts,
} from './fake-snapshots.js';

export {
  FakeMemstore,
  FakeSnapshotCatalog,
  type FakeGuest,
  type FakeSnapshot,
  type FakeSnapshotScript,
  type FakeVmFacts,
} from './fake-snapshots.js';

/** One scripted progress report of a fake migration. */
export interface FakeStep {
  status: MigrationStatus;
  transferred: number;
  remaining: number;
}

/**
 * How a fake migration ends when it neither completes nor fails with `failWith`:
 * - `drop-after-handoff`: the VM moves to the target, then the MigrateVm call breaks (an
 *   uncoded UNAVAILABLE, as a dropped connection) while the source lives on and knows the
 *   migration completed;
 * - `source-dies-before-stop`: the source process dies before anything moved (the VM dies
 *   with it; its lease stays with the source);
 * - `source-dies-after-handoff`: the VM moves to the target, then the source process dies.
 */
export type FakeEnd =
  'drop-after-handoff' | 'source-dies-before-stop' | 'source-dies-after-handoff';

/** How a fake migration of one VM behaves. */
export interface FakeScript {
  steps: FakeStep[];
  /** Delay before each step, in milliseconds. */
  stepMs: number;
  /** Fail after the steps with this message (a coded gRPC error), instead of completing. */
  failWith?: string;
  /** End this way after the steps instead (see {@link FakeEnd}). */
  end?: FakeEnd;
}

/**
 * Where the fake VMs live: VM name -> vmm id, shared by the fakes of one test. Every change
 * (a test placing a VM, a fake migration moving one) makes the fakes report their VMs.
 */
export class FakeWorld extends Map<string, string> {
  private listeners: Set<() => void> | undefined;
  /**
   * What the fakes know of each VM besides where it is: its guest, the snapshot it came from,
   * its doorbell and state (a VM placed by a test has {@link defaultFacts}).
   */
  readonly facts = new Map<string, FakeVmFacts>();
  /** The snapshots memstore holds (the fakes' SaveVm makes them; tests may add some). */
  readonly snapshots = new Map<string, FakeSnapshot>();
  /**
   * Lease holders of the VMs' regions (`<vm>-ram0` -> `<vmm-id>/<vm>`), as memstore would have
   * them: a VM placed or moved takes its lease along; a VM that dies leaves it where it was.
   */
  readonly holders = new Map<string, string>();

  override set(name: string, vmmId: string): this {
    super.set(name, vmmId);
    this.holders?.set(`${name}-ram0`, `${vmmId}/${name}`);
    this.changed();
    return this;
  }

  override delete(name: string): boolean {
    const had = super.delete(name);
    this.facts?.delete(name);
    if (had) this.changed();
    return had;
  }

  /** Something about a VM changed (its doorbell, its state): the fakes and watchers look. */
  touch(): void {
    this.changed();
  }

  /** Calls `listener` after every change; returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    (this.listeners ??= new Set()).add(listener);
    return () => this.listeners?.delete(listener);
  }

  private changed(): void {
    for (const l of [...(this.listeners ?? [])]) l();
  }
}

/**
 * memstore as the migrator's jobs ask it (who holds a region's lease), read from a
 * {@link FakeWorld}. `down` makes every question fail as an unreachable memstore would.
 */
export class FakeLeases implements RegionLeases {
  down = false;
  /** Regions asked about, in order. */
  readonly asked: string[] = [];

  constructor(private readonly world: FakeWorld) {}

  leaseOf(name: string): Promise<RegionLease | null> {
    this.asked.push(name);
    if (this.down) {
      return Promise.reject(
        new RemoteError(
          'GRPC_UNAVAILABLE',
          grpcStatus.UNAVAILABLE,
          'memstore: connect ECONNREFUSED',
        ),
      );
    }
    const holder = this.world.holders.get(name);
    if (holder === undefined) return Promise.resolve(null);
    return Promise.resolve({
      region: name,
      holder,
      epoch: 1,
      holderLiveness: 'unknown',
      fenced: null,
    });
  }

  close(): void {}
}

/** Receives a fake's VM set (the wire form a vmm sends) after every change. */
export type FakeReportSink = (vms: mpb.HostedVms) => unknown;

const DEFAULT_SCRIPT: FakeScript = {
  steps: [
    { status: 'setup', transferred: 0, remaining: 4 << 20 },
    { status: 'active', transferred: 1 << 20, remaining: 3 << 20 },
    { status: 'active', transferred: 3 << 20, remaining: 1 << 20 },
    { status: 'device', transferred: 4 << 20, remaining: 0 },
  ],
  stepMs: 40,
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const ARRIVAL_TO_WIRE: Record<ArrivalEnd, pb.IncomingOutcome> = {
  none: pb.IncomingOutcome.INCOMING_OUTCOME_NONE,
  dropped: pb.IncomingOutcome.INCOMING_OUTCOME_DROPPED,
  arrived: pb.IncomingOutcome.INCOMING_OUTCOME_ARRIVED,
  failed: pb.IncomingOutcome.INCOMING_OUTCOME_FAILED,
};

/**
 * An in-process stand-in for a vmm instance, served over real gRPC on loopback: the migration
 * RPCs (PrepareIncoming, CancelIncoming, MigrateVm streaming scripted progress, GetMigration,
 * CancelMigration), GetVm and ListVms (counted, so tests see the migrator does not use them per
 * job), and the VM reports a vmm sends the migrator. Like the real vmm, a completed migration's
 * source lists the VM as `postmigrate` for {@link FakeVmm.retireMs}, then drops it on its own,
 * and PrepareIncoming waits for a VM of that name to be gone. Unlike it, an arrival that did not
 * arrive keeps its name reserved until CancelIncoming (as vmm builds before CancelIncoming did),
 * so tests see that the migrator frees it. A script can end a migration badly ({@link FakeEnd});
 * {@link FakeVmm.die} is a kill of the process. It tests the migrator's coordination only; the
 * real vmm has its own tests.
 */
export class FakeVmm {
  /** Every VmmService call received, as `method:vm`. */
  readonly calls: string[] = [];
  /** What each PrepareIncoming carried besides the name: the spec's name and the capabilities. */
  readonly prepared: { name: string; specName: string | undefined; capabilities: number[] }[] = [];
  /** Scripts by VM name (default: four steps, then completed). */
  readonly scripts = new Map<string, FakeScript>();
  /** How guests behave once created here, by guest name (default: never ready). */
  readonly guests = new Map<string, FakeGuest>();
  /** Scripts of SaveVm, RestoreVm and CloneVms (see {@link FakeSnapshotScript}). */
  readonly snapshotScripts = new Map<string, FakeSnapshotScript>();
  /** Most migrations that ran at the same time. */
  maxConcurrent = 0;
  /** How long a migrated-away VM stays `postmigrate` here before this fake retires it (ms). */
  retireMs = 20;
  /** While false, changes are not reported (a report late or lost); true reports at once. */
  private reportsOn = true;
  private active = 0;
  /** VMs that moved away, `postmigrate` here until retired (resolves then). */
  private readonly retiring = new Map<string, Promise<void>>();
  private readonly migrations = new Map<
    string,
    { info: MigrationInfo; cancelled: boolean; jobId: string }
  >();
  /** Arrivals PrepareIncoming reserved, by job; `end` once they ended. */
  private readonly arrivals = new Map<string, { name: string; end?: ArrivalEnd }>();
  /** Names reserved by arrivals that have not ended (a failed one stays until cancelled). */
  private readonly reserved = new Map<string, string>();
  /** True once {@link FakeVmm.die} ran: its process is gone. */
  private dead = false;
  private version = 1;
  private sink: FakeReportSink | undefined;
  private migrator: mpb.MigratorServiceClient | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly unsubscribe: () => void;

  private constructor(
    readonly id: string,
    private readonly world: FakeWorld,
    private readonly peers: Map<string, FakeVmm>,
    private server: RunningServer | undefined,
    private readonly tls: TlsMaterial | null,
  ) {
    this.unsubscribe = world.onChange(() => this.changed());
  }

  /**
   * Starts a fake on a free loopback port: plaintext, or with `tls` (a vmm certificate naming
   * `id`) mutual TLS, serving and registering as that vmm.
   */
  static async start(
    id: string,
    world: FakeWorld,
    peers = new Map<string, FakeVmm>(),
    tls: TlsMaterial | null = null,
  ) {
    const fake = new FakeVmm(id, world, peers, undefined, tls);
    const logger = createLogger({ name: `fake-${id}`, level: 'silent', format: 'json' });
    fake.server = await startServer({
      name: 'vmm',
      host: '127.0.0.1',
      port: 0,
      logger,
      tls,
      shutdownTimeoutMs: 100,
      services: [
        {
          name: serviceNames.vmm,
          definition: pb.VmmServiceService,
          implementation: fake.implementation(logger) as never,
          access: openAccess(pb.VmmServiceService, ['migrator', 'operator']),
        },
      ],
    });
    peers.set(fake.address, fake);
    return fake;
  }

  get address(): string {
    return this.server!.address;
  }

  /** The VMs this fake hosts, as a vmm reports them (running, or postmigrate while retiring). */
  hostedVms(): mpb.HostedVms {
    const running = [...this.world].filter(([, v]) => v === this.id).map(([name]) => name);
    return {
      version: BigInt(this.version),
      vms: [
        ...running.map((name) => this.vmOf(name, this.stateOf(name))),
        ...[...this.retiring.keys()]
          .filter((name) => !running.includes(name))
          .map((name) => this.vmOf(name, pb.VmState.VM_STATE_POSTMIGRATE)),
      ].map(({ name, spec, state }) => ({ name, spec, state })),
    };
  }

  /** Sends the VM set to `sink` now and after every change. */
  reportTo(sink: FakeReportSink): void {
    this.sink = sink;
    sink(this.hostedVms());
  }

  /**
   * Registers with the migrator at `address` (RegisterVmm with the VM set, as a vmm's first
   * registration), heartbeats at the interval it answers (sending the set when it asks), and
   * reports every change with ReportVms, one call at a time.
   */
  async registerWith(address: string): Promise<void> {
    this.migrator?.close();
    clearInterval(this.heartbeat);
    const client = createClient(
      mpb.MigratorServiceClient,
      address,
      channelCredentials(this.tls, { serverRole: 'migrator' }),
    );
    this.migrator = client;
    let chain: Promise<unknown> = Promise.resolve();
    const serial = (call: () => Promise<unknown>) =>
      (chain = chain.then(call).catch(() => undefined));
    const register = async (withVms: boolean) => {
      const set = this.hostedVms();
      const res = await unaryCall(client, 'registerVmm', {
        id: this.id,
        address: this.address,
        version: 'fake',
        vmCount: set.vms.length,
        vmsVersion: set.version,
        hostId: '',
        memstoreAddress: '',
        vms: withVms ? set : undefined,
      });
      if (res.vmsWanted) this.sink?.(this.hostedVms());
      return res.heartbeatIntervalMs;
    };
    const interval = await register(true);
    this.sink = (vms) => serial(() => unaryCall(client, 'reportVms', { vmmId: this.id, vms }));
    this.heartbeat = setInterval(() => void serial(() => register(false)), interval || 2000);
    this.heartbeat.unref();
  }

  /**
   * Holds the reports back (`false`: the migrator does not hear of changes, as when a report is
   * still in flight) or sends the current set and reports again (`true`).
   */
  setReporting(on: boolean): void {
    this.reportsOn = on;
    if (on) this.sink?.(this.hostedVms());
  }

  /** Names reserved here for arrivals that have not ended (tests look for leftovers). */
  reservedNames(): string[] {
    return [...this.reserved.keys()];
  }

  /**
   * The process dies: its VMs die with it (their leases stay with it), and nothing listens at
   * its address any more.
   */
  async die(): Promise<void> {
    if (this.dead) return;
    this.dead = true;
    for (const [name, at] of [...this.world]) if (at === this.id) this.world.delete(name);
    this.unsubscribe();
    clearInterval(this.heartbeat);
    this.migrator?.close();
    await this.server!.shutdown('the process died');
  }

  async stop(): Promise<void> {
    this.unsubscribe();
    clearInterval(this.heartbeat);
    this.migrator?.close();
    await this.server!.shutdown('test over');
  }

  /** An arrival of job `jobId` ran the VM here. */
  private arrived(jobId: string): void {
    const a = this.arrivals.get(jobId);
    if (a === undefined) return;
    a.end = 'arrived';
    if (this.reserved.get(a.name) === jobId) this.reserved.delete(a.name);
  }

  private changed(): void {
    this.version++;
    if (this.reportsOn) this.sink?.(this.hostedVms());
  }

  /** The state of a VM this fake runs, from its facts. */
  private stateOf(name: string): pb.VmState {
    const f = this.world.facts.get(name) ?? defaultFacts();
    if (f.poweredOff) return pb.VmState.VM_STATE_POWERED_OFF;
    return f.paused ? pb.VmState.VM_STATE_PAUSED : pb.VmState.VM_STATE_RUNNING;
  }

  /**
   * A VM as this fake reports it: shared RAM in the region created for it, `<vm>-ram0` (a VM
   * restored or cloned here: clone RAM of its snapshot).
   */
  private vmOf(name: string, state: pb.VmState): pb.Vm {
    const f = this.world.facts.get(name) ?? defaultFacts();
    return pb.Vm.fromPartial({
      name,
      vmmId: this.id,
      state,
      ready: f.ready,
      snapshot: f.snapshot,
      exitCode: 0,
      // a clone shares its template's pages: a small PSS, its own pages private
      memory:
        f.snapshot !== ''
          ? { pssBytes: 3n << 20n, privateDirtyBytes: 1n << 20n, rssBytes: 12n << 20n }
          : { pssBytes: 16n << 20n, privateDirtyBytes: 16n << 20n, rssBytes: 16n << 20n },
      spec: {
        name,
        guest: f.guest,
        ram: [
          {
            id: 'ram0',
            guestBase: 0x8000_0000n,
            size: 16n << 20n,
            backend:
              f.snapshot !== ''
                ? pb.RamBackend.RAM_BACKEND_CLONE
                : pb.RamBackend.RAM_BACKEND_SHARED,
            region: f.snapshot !== '' ? `${f.snapshot}-ram0` : `${name}-ram0`,
            regionOwned: f.snapshot === '',
          },
        ],
      },
    });
  }

  /** The migrated-away VM leaves this fake after {@link retireMs}, as a vmm retires its husk. */
  private retire(name: string): void {
    const gone = sleep(this.retireMs).then(() => {
      if (this.retiring.get(name) === gone) this.retiring.delete(name);
      this.changed();
    });
    this.retiring.set(name, gone);
  }

  private implementation(logger: ReturnType<typeof createLogger>): Partial<pb.VmmServiceServer> {
    const find = (name: string): pb.Vm | undefined => {
      if (this.world.get(name) === this.id) return this.vmOf(name, this.stateOf(name));
      if (this.retiring.has(name)) return this.vmOf(name, pb.VmState.VM_STATE_POSTMIGRATE);
      return undefined;
    };
    return {
      listVms: unary(logger, () => {
        this.calls.push('listVms:');
        return { vms: this.hostedVms().vms.map((v) => find(v.name)!) };
      }),
      getVm: unary(logger, (req) => {
        this.calls.push(`getVm:${req.name}`);
        const vm = find(req.name);
        if (vm === undefined) {
          throw new ServiceError('VMM_VM_NOT_FOUND', `no VM ${req.name} on ${this.id}`);
        }
        return { vm };
      }),
      ...snapshotHandlers(
        {
          id: this.id,
          world: this.world,
          calls: this.calls,
          guests: this.guests,
          snapshotScripts: this.snapshotScripts,
          vmOf: (name) => find(name)!,
        },
        logger,
      ),
      prepareIncoming: unary(logger, async (req) => {
        this.calls.push(`prepareIncoming:${req.name}`);
        this.prepared.push({
          name: req.name,
          specName: req.spec?.name,
          capabilities: [...req.capabilities],
        });
        await this.retiring.get(req.name); // a VM that just left under this name goes first
        if (this.world.get(req.name) === this.id) {
          throw new ServiceError('VMM_VM_EXISTS', `a VM named ${req.name} already exists`);
        }
        const holding = this.reserved.get(req.name);
        if (holding !== undefined) {
          throw new ServiceError(
            'VMM_VM_EXISTS',
            `a VM named ${req.name} is arriving on ${this.id} by migration job ${holding}`,
          );
        }
        this.reserved.set(req.name, req.jobId);
        this.arrivals.set(req.jobId, { name: req.name });
        return {
          token: `token-${req.jobId}`,
          address: this.address,
          dataAddress: '',
          handoffSlot: '',
        };
      }),
      getMigration: unary(logger, (req) => {
        this.calls.push(`getMigration:${req.name}`);
        const m = this.migrations.get(req.name);
        return {
          info: migrationInfoToWire(m?.info ?? emptyMigrationInfo('none')),
          jobId: m?.jobId ?? '',
        };
      }),
      cancelIncoming: unary(logger, (req) => {
        this.calls.push(`cancelIncoming:${req.name}`);
        const a = this.arrivals.get(req.jobId);
        if (a === undefined || (req.name !== '' && a.name !== req.name)) {
          return { outcome: pb.IncomingOutcome.INCOMING_OUTCOME_NONE };
        }
        if (a.end === undefined) {
          a.end = 'dropped';
          if (this.reserved.get(a.name) === req.jobId) this.reserved.delete(a.name);
        }
        return { outcome: ARRIVAL_TO_WIRE[a.end] };
      }),
      cancelMigration: unary(logger, (req) => {
        this.calls.push(`cancelMigration:${req.name}`);
        const m = this.migrations.get(req.name);
        if (m === undefined) {
          throw new ServiceError('VMM_INVALID_STATE', `no migration of ${req.name} is running`);
        }
        m.cancelled = true;
        return {};
      }),
      migrateVm: serverStream(logger, (req, call) => this.migrate(req, call)),
    };
  }

  /** MigrateVm: plays the VM's script, reporting each step, then moves it to the target. */
  private async migrate(
    req: pb.MigrateVmRequest,
    call: ServerWritableStream<pb.MigrateVmRequest, pb.MigrateVmResponse>,
  ): Promise<void> {
    this.calls.push(`migrateVm:${req.name}`);
    if (this.world.get(req.name) !== this.id) {
      throw new ServiceError('VMM_VM_NOT_FOUND', `no VM ${req.name} on ${this.id}`);
    }
    const target = this.peers.get(req.targetAddress);
    if (target === undefined || req.token !== `token-${req.jobId}`) {
      throw new ServiceError('VMM_INVALID_STATE', 'target unknown or token wrong');
    }
    const script = this.scripts.get(req.name) ?? DEFAULT_SCRIPT;
    const m = { info: emptyMigrationInfo('setup'), cancelled: false, jobId: req.jobId };
    this.migrations.set(req.name, m);
    this.maxConcurrent = Math.max(this.maxConcurrent, ++this.active);
    const started = Date.now();
    try {
      for (const step of script.steps) {
        await sleep(script.stepMs);
        if (m.cancelled) {
          m.info = { ...m.info, status: 'cancelled' };
          throw new ServiceError(
            'VMM_INVALID_STATE',
            `migration of ${req.name} was cancelled; the VM runs on ${this.id}`,
          );
        }
        m.info = {
          ...m.info,
          status: step.status,
          totalTimeMs: Date.now() - started,
          setupTimeMs: 2,
          iteration: m.info.iteration + 1,
          ram: {
            ...m.info.ram,
            transferred: step.transferred,
            remaining: step.remaining,
            total: 64 << 20,
            normal: Math.floor(step.transferred / 4096),
            normalBytes: step.transferred,
            zeroPages: 1024,
            bypassedBytes: 60 << 20,
          },
        };
        // one progress report per step (the real vmm sends one per status change and
        // about every 250 ms)
        call.write({ info: migrationInfoToWire(m.info) });
      }
      if (script.failWith !== undefined) {
        m.info = { ...m.info, status: 'failed', errorDesc: script.failWith };
        throw new ServiceError('VMM_INVALID_STATE', script.failWith);
      }
      if (script.end === 'source-dies-before-stop') {
        await this.die();
        return new Promise<void>(() => undefined); // the call dies with the process
      }
      m.info = { ...m.info, status: 'completed', downtimeUs: 1500, deviceBytes: 8192 };
      // postmigrate here at once, then gone; the target runs it
      this.retire(req.name);
      this.world.set(req.name, target.id);
      target.arrived(req.jobId);
      if (script.end === 'source-dies-after-handoff') {
        await this.die();
        return new Promise<void>(() => undefined);
      }
      if (script.end === 'drop-after-handoff') {
        // no Handoff code: what a broken connection looks like to the migrator
        call.emit('error', {
          code: grpcStatus.UNAVAILABLE,
          details: 'Connection dropped',
          metadata: new Metadata(),
        });
        return new Promise<void>(() => undefined);
      }
      call.write({ info: migrationInfoToWire(m.info) });
    } finally {
      this.active--;
    }
  }
}
