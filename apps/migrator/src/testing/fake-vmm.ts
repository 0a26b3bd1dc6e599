import { serviceNames, vmm as pb } from '@handoff/proto';
import { emptyMigrationInfo, type MigrationInfo, type MigrationStatus } from '@handoff/qapi';
import { migrationInfoToWire } from '@handoff/qapi/wire';
import {
  ServiceError,
  createLogger,
  serverStream,
  startServer,
  unary,
  type RunningServer,
} from '@handoff/service';

/** One scripted progress report of a fake migration. */
export interface FakeStep {
  status: MigrationStatus;
  transferred: number;
  remaining: number;
}

/** How a fake migration of one VM behaves. */
export interface FakeScript {
  steps: FakeStep[];
  /** Delay before each step, in milliseconds. */
  stepMs: number;
  /** Fail after the steps with this message (a coded gRPC error), instead of completing. */
  failWith?: string;
}

/** Where the fake VMs live: VM name -> vmm id (shared by the fakes of one test). */
export type FakeWorld = Map<string, string>;

const DEFAULT_SCRIPT: FakeScript = {
  steps: [
    { status: 'setup', transferred: 0, remaining: 4 << 20 },
    { status: 'active', transferred: 1 << 20, remaining: 3 << 20 },
    { status: 'active', transferred: 3 << 20, remaining: 1 << 20 },
    { status: 'device', transferred: 4 << 20, remaining: 0 },
  ],
  stepMs: 40,
};

/**
 * An in-process stand-in for a vmm instance's migration RPCs (ListVms,
 * PrepareIncoming, MigrateVm, GetMigration, CancelMigration), served over
 * real gRPC on loopback, with scripted progress and failures. It tests the
 * migrator's coordination only; the real vmm has its own tests.
 */
export class FakeVmm {
  /** Every call received, as `method:vm`. */
  readonly calls: string[] = [];
  /** What each PrepareIncoming carried besides the name: the spec's name and the capabilities. */
  readonly prepared: { name: string; specName: string | undefined; capabilities: number[] }[] = [];
  /** Scripts by VM name (default: four steps, then completed). */
  readonly scripts = new Map<string, FakeScript>();
  /** Most migrations that ran at the same time. */
  maxConcurrent = 0;
  private active = 0;
  /** VMs handed to a target and still listed here as postmigrate. */
  /** VMs listed as `postmigrate` here (a test may add one to play a husk left behind). */
  readonly husks = new Set<string>();
  private readonly migrations = new Map<string, { info: MigrationInfo; cancelled: boolean }>();

  private constructor(
    readonly id: string,
    private readonly world: FakeWorld,
    private readonly peers: Map<string, FakeVmm>,
    private server: RunningServer | undefined,
  ) {}

  /** Starts a fake on a free loopback port. */
  static async start(id: string, world: FakeWorld, peers = new Map<string, FakeVmm>()) {
    const fake = new FakeVmm(id, world, peers, undefined);
    const logger = createLogger({ name: `fake-${id}`, level: 'silent', format: 'json' });
    fake.server = await startServer({
      name: 'vmm',
      host: '127.0.0.1',
      port: 0,
      logger,
      shutdownTimeoutMs: 100,
      services: [
        {
          name: serviceNames.vmm,
          definition: pb.VmmServiceService,
          implementation: fake.implementation(logger) as never,
        },
      ],
    });
    peers.set(fake.address, fake);
    return fake;
  }

  get address(): string {
    return this.server!.address;
  }

  stop(): Promise<void> {
    return this.server!.shutdown('test over');
  }

  private implementation(logger: ReturnType<typeof createLogger>): Partial<pb.VmmServiceServer> {
    const vmOf = (name: string): pb.Vm =>
      pb.Vm.fromPartial({
        name,
        vmmId: this.id,
        state: pb.VmState.VM_STATE_RUNNING,
        spec: { name, guest: 'ab' },
      });
    return {
      listVms: unary(logger, () => {
        this.calls.push('listVms:');
        return {
          vms: [...this.world].filter(([, v]) => v === this.id).map(([name]) => vmOf(name)),
        };
      }),
      getVm: unary(logger, (req) => {
        this.calls.push(`getVm:${req.name}`);
        if (this.husks.has(req.name)) {
          return {
            vm: pb.Vm.fromPartial({
              name: req.name,
              vmmId: this.id,
              state: pb.VmState.VM_STATE_POSTMIGRATE,
            }),
          };
        }
        if (this.world.get(req.name) !== this.id) {
          throw new ServiceError('VMM_VM_NOT_FOUND', `no VM ${req.name} on ${this.id}`);
        }
        return { vm: vmOf(req.name) };
      }),
      destroyVm: unary(logger, (req) => {
        this.calls.push(`destroyVm:${req.name}`);
        if (!this.husks.delete(req.name)) {
          throw new ServiceError('VMM_INVALID_STATE', `test fake destroys only postmigrate VMs`);
        }
        return {};
      }),
      prepareIncoming: unary(logger, (req) => {
        this.calls.push(`prepareIncoming:${req.name}`);
        this.prepared.push({
          name: req.name,
          specName: req.spec?.name,
          capabilities: [...req.capabilities],
        });
        if (this.husks.has(req.name) || this.world.get(req.name) === this.id) {
          throw new ServiceError('VMM_VM_EXISTS', `a VM named ${req.name} already exists`);
        }
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
        return { info: migrationInfoToWire(m?.info ?? emptyMigrationInfo('none')) };
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
      migrateVm: serverStream(logger, async (req, call) => {
        this.calls.push(`migrateVm:${req.name}`);
        if (this.world.get(req.name) !== this.id) {
          throw new ServiceError('VMM_VM_NOT_FOUND', `no VM ${req.name} on ${this.id}`);
        }
        const target = this.peers.get(req.targetAddress);
        if (target === undefined || req.token !== `token-${req.jobId}`) {
          throw new ServiceError('VMM_INVALID_STATE', 'target unknown or token wrong');
        }
        const script = this.scripts.get(req.name) ?? DEFAULT_SCRIPT;
        const m = { info: emptyMigrationInfo('setup'), cancelled: false };
        this.migrations.set(req.name, m);
        this.maxConcurrent = Math.max(this.maxConcurrent, ++this.active);
        const started = Date.now();
        try {
          for (const step of script.steps) {
            await new Promise((r) => setTimeout(r, script.stepMs));
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
          m.info = { ...m.info, status: 'completed', downtimeUs: 1500, deviceBytes: 8192 };
          this.world.set(req.name, target.id);
          this.husks.add(req.name);
          call.write({ info: migrationInfoToWire(m.info) });
        } finally {
          this.active--;
        }
      }),
    };
  }
}
