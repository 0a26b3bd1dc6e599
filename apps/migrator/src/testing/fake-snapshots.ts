import {
  Metadata,
  status as grpcStatus,
  type ServerWritableStream,
  type ServiceError as GrpcServiceError,
} from '@grpc/grpc-js';
import { dateToTimestamp, memstore as mspb, serviceNames, vmm as pb } from '@handoff/proto';
import {
  RemoteError,
  ServiceError,
  createLogger,
  serverStream,
  startServer,
  toGrpcError,
  unary,
  type Logger,
  type RunningServer,
  type TlsMaterial,
} from '@handoff/service';
import { openAccess } from '@handoff/service/testing';
import type { SnapshotCatalog, SnapshotFacts } from '../clients/memstore-client.js';

/**
 * The snapshot side of the fake vmm: CreateVm and DestroyVm, WatchVm (the ready doorbell),
 * SaveVm, RestoreVm and CloneVms, over a world that also holds memstore's snapshots. What the
 * migrator's snapshot jobs need to be tested, and no more: there is no RAM and no device state.
 */

/** How a fake guest behaves once its VM is created. */
export interface FakeGuest {
  /** It rings its ready doorbell this long after it starts (never when unset). */
  readyMs?: number;
  /** It powers off this long after it starts (with exit code 0). */
  powerOffMs?: number;
}

/**
 * How one fake SaveVm (key `save:<vm>`), RestoreVm (`restore:<snapshot>`) or CloneVms
 * (`clone:<snapshot>`) goes: after `delayMs`, it fails with `failWith` (a coded vmm error, and
 * nothing is made), or ends as a broken connection would (an uncoded UNAVAILABLE) `drop`: `after`
 * the work was done, or `before` anything was made.
 */
export interface FakeSnapshotScript {
  delayMs?: number;
  failWith?: string;
  drop?: 'before' | 'after';
}

/** Thrown by a script that drops the call before the work. */
class Dropped extends Error {}

/** A snapshot the fake memstore holds. */
export interface FakeSnapshot {
  readonly name: string;
  readonly vmName: string;
  readonly vmmId: string;
  readonly template: boolean;
  readonly kind: 'bypass' | 'full';
  readonly createdAt: Date;
}

/** What the fakes know of a VM besides where it is (a VM placed by a test has the defaults). */
export interface FakeVmFacts {
  guest: string;
  snapshot: string;
  ready: boolean;
  poweredOff: boolean;
  paused: boolean;
}

/** The defaults of a VM a test placed: an `ab` guest, booted, running, not ready. */
export function defaultFacts(): FakeVmFacts {
  return { guest: 'ab', snapshot: '', ready: false, poweredOff: false, paused: false };
}

/** The world of the fakes as the snapshot handlers use it. */
export interface SnapshotWorld {
  get(name: string): string | undefined;
  set(name: string, vmmId: string): unknown;
  delete(name: string): boolean;
  has(name: string): boolean;
  readonly facts: Map<string, FakeVmFacts>;
  readonly snapshots: Map<string, FakeSnapshot>;
  /** Tells every fake (and watcher) that something changed. */
  touch(): void;
  onChange(listener: () => void): () => void;
}

/** What one fake vmm gives the handlers. */
export interface FakeHost {
  readonly id: string;
  readonly world: SnapshotWorld;
  readonly calls: string[];
  readonly guests: Map<string, FakeGuest>;
  readonly snapshotScripts: Map<string, FakeSnapshotScript>;
  /** The VM as this fake answers GetVm. */
  vmOf(name: string): pb.Vm;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A unary handler that may end as a broken connection (an uncoded UNAVAILABLE). */
function droppable<Req, Res>(
  fn: (req: Req) => Promise<{ res: Res; drop: boolean }>,
): (
  call: { request: Req },
  callback: (err: Partial<GrpcServiceError> | null, res?: Res) => void,
) => void {
  return (call, callback) => {
    const dropped = () =>
      callback({
        code: grpcStatus.UNAVAILABLE,
        details: 'Connection dropped',
        metadata: new Metadata(),
      });
    fn(call.request).then(
      ({ res, drop }) => (drop ? dropped() : callback(null, res)),
      (err: unknown) => (err instanceof Dropped ? dropped() : callback(toGrpcError(err))),
    );
  };
}

/** The script of `key`, after its delay; throws its failure. */
async function play(host: FakeHost, key: string): Promise<boolean> {
  const script = host.snapshotScripts.get(key) ?? {};
  if (script.delayMs !== undefined) await sleep(script.delayMs);
  if (script.failWith !== undefined) throw new ServiceError('VMM_INVALID_STATE', script.failWith);
  if (script.drop === 'before') throw new Dropped('dropped before the work');
  return script.drop === 'after';
}

/** Starts a new VM on `host` (its guest's doorbell and power-off timed as scripted). */
function startVm(host: FakeHost, name: string, facts: FakeVmFacts): void {
  const { world } = host;
  world.facts.set(name, facts);
  world.set(name, host.id);
  const guest = host.guests.get(facts.guest);
  const later = (ms: number | undefined, change: (f: FakeVmFacts) => void) => {
    if (ms === undefined) return;
    setTimeout(() => {
      const f = world.facts.get(name);
      if (f !== facts || world.get(name) !== host.id) return; // destroyed meanwhile
      change(f);
      world.touch();
    }, ms).unref();
  };
  if (facts.snapshot === '') {
    later(guest?.readyMs, (f) => (f.ready = true));
    later(guest?.powerOffMs, (f) => (f.poweredOff = true));
  }
}

/** The VmmService handlers of the snapshot side (see the module comment). */
export function snapshotHandlers(host: FakeHost, logger: Logger): Partial<pb.VmmServiceServer> {
  const { world } = host;
  const mine = (name: string) => world.get(name) === host.id;
  const requireFree = (name: string) => {
    if (world.has(name)) throw new ServiceError('VMM_VM_EXISTS', `a VM named ${name} exists`);
  };
  return {
    createVm: droppable(async (req: pb.CreateVmRequest) => {
      const name = req.spec?.name ?? '';
      // a sent guest image shows as its size: `createVm:NAME:image(BYTES)`
      host.calls.push(
        req.guestImage !== undefined
          ? `createVm:${name}:image(${req.guestImage.length})`
          : `createVm:${name}`,
      );
      requireFree(name);
      startVm(host, name, { ...defaultFacts(), guest: req.spec?.guest ?? '' });
      return { res: { vm: host.vmOf(name) }, drop: false };
    }) as never,
    destroyVm: droppable(async (req: pb.DestroyVmRequest) => {
      host.calls.push(`destroyVm:${req.name}`);
      if (!mine(req.name)) throw new ServiceError('VMM_VM_NOT_FOUND', `no VM ${req.name}`);
      world.delete(req.name);
      return { res: {}, drop: false };
    }) as never,
    watchVm: serverStream(logger, (req: pb.WatchVmRequest, call) => watch(host, req.name, call)),
    saveVm: droppable(async (req: pb.SaveVmRequest) => {
      host.calls.push(`saveVm:${req.name}`);
      if (!mine(req.name)) throw new ServiceError('VMM_VM_NOT_FOUND', `no VM ${req.name}`);
      const drop = await play(host, `save:${req.name}`);
      if (world.snapshots.has(req.snapshot)) {
        throw new ServiceError('SNAPSHOT_EXISTS', `a snapshot named ${req.snapshot} exists`);
      }
      const snap: FakeSnapshot = {
        name: req.snapshot,
        vmName: req.name,
        vmmId: host.id,
        template: req.template,
        kind: req.full ? 'full' : 'bypass',
        createdAt: new Date(),
      };
      world.snapshots.set(req.snapshot, snap);
      if (req.stop) {
        world.delete(req.name);
      } else if (!req.full) {
        // a bypass save seals the VM's region: it runs on as a clone of the snapshot
        world.facts.set(req.name, {
          ...(world.facts.get(req.name) ?? defaultFacts()),
          snapshot: snap.name,
        });
        world.touch();
      }
      const vm = req.stop ? undefined : host.vmOf(req.name);
      return {
        res: {
          snapshot: mspb.Snapshot.fromPartial({
            name: snap.name,
            kind: req.full
              ? mspb.SnapshotKind.SNAPSHOT_KIND_FULL
              : mspb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
            template: req.template,
            vmName: req.name,
            vmmId: host.id,
          }),
          pauseUs: req.stop ? 0n : 900n,
          durationUs: 2100n,
          bytes: req.full ? (16n << 20n) + 8192n : 8192n,
          vm,
        },
        drop,
      };
    }) as never,
    restoreVm: droppable(async (req: pb.RestoreVmRequest) => {
      host.calls.push(`restoreVm:${req.snapshot}`);
      const snap = world.snapshots.get(req.snapshot);
      if (snap === undefined) {
        throw new ServiceError('SNAPSHOT_NOT_FOUND', `no snapshot named ${req.snapshot}`);
      }
      const name = req.name !== '' ? req.name : snap.vmName;
      requireFree(name);
      const drop = await play(host, `restore:${req.snapshot}`);
      startVm(host, name, {
        ...defaultFacts(),
        snapshot: snap.name,
        ready: true,
        paused: req.paused,
      });
      return { res: { vm: host.vmOf(name), durationUs: 2500n }, drop };
    }) as never,
    cloneVms: droppable(async (req: pb.CloneVmsRequest) => {
      host.calls.push(`cloneVms:${req.snapshot}`);
      const snap = world.snapshots.get(req.snapshot);
      if (snap === undefined) {
        throw new ServiceError('SNAPSHOT_NOT_FOUND', `no snapshot named ${req.snapshot}`);
      }
      const prefix = req.namePrefix !== '' ? req.namePrefix : snap.name;
      const first = req.firstIndex > 0 ? req.firstIndex : 1;
      const names = Array.from({ length: req.count }, (_, i) => `${prefix}-${first + i}`);
      for (const n of names) requireFree(n);
      const drop = await play(host, `clone:${req.snapshot}`);
      for (const n of names) {
        startVm(host, n, {
          ...defaultFacts(),
          snapshot: snap.name,
          ready: true,
          paused: req.paused,
        });
      }
      return {
        res: {
          vms: names.map((n) => host.vmOf(n)),
          runningAfterUs: names.map((_, i) => BigInt(1000 + 100 * i)),
          durationUs: BigInt(1000 + 100 * names.length),
        },
        drop,
      };
    }) as never,
  };
}

/** WatchVm: the VM now, then READY, POWERED_OFF or DESTROYED as they happen. */
async function watch(
  host: FakeHost,
  name: string,
  call: ServerWritableStream<pb.WatchVmRequest, pb.WatchVmResponse>,
): Promise<void> {
  host.calls.push(`watchVm:${name}`);
  if (host.world.get(name) !== host.id) {
    throw new ServiceError('VMM_VM_NOT_FOUND', `no VM ${name}`);
  }
  const event = (kind: pb.VmEventKind, vm: pb.Vm | undefined) =>
    call.write(pb.WatchVmResponse.fromPartial({ kind, vm, detail: '' }));
  event(pb.VmEventKind.VM_EVENT_KIND_UNSPECIFIED, host.vmOf(name));
  const facts = host.world.facts.get(name);
  let told = { ready: facts?.ready === true, off: facts?.poweredOff === true };
  await new Promise<void>((resolve) => {
    const check = () => {
      if (host.world.get(name) !== host.id) {
        event(pb.VmEventKind.VM_EVENT_KIND_DESTROYED, undefined);
        return end();
      }
      const f = host.world.facts.get(name);
      if (f?.ready === true && !told.ready) {
        event(pb.VmEventKind.VM_EVENT_KIND_READY, host.vmOf(name));
      }
      if (f?.poweredOff === true && !told.off) {
        event(pb.VmEventKind.VM_EVENT_KIND_POWERED_OFF, host.vmOf(name));
      }
      told = { ready: f?.ready === true, off: f?.poweredOff === true };
    };
    const stop = host.world.onChange(check);
    const end = () => {
      stop();
      resolve();
    };
    call.on('cancelled', end);
    call.on('close', end);
  });
}

/** The fake memstore's snapshots, as the migrator asks for them. */
export class FakeSnapshotCatalog implements SnapshotCatalog {
  /** Every question fails as an unreachable memstore would. */
  down = false;
  readonly asked: string[] = [];

  constructor(private readonly snapshots: Map<string, FakeSnapshot>) {}

  snapshotOf(name: string): Promise<SnapshotFacts | null> {
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
    const s = this.snapshots.get(name);
    if (s === undefined) return Promise.resolve(null);
    return Promise.resolve({
      id: `id-${s.name}`,
      name: s.name,
      kind: s.kind,
      template: s.template,
      vmName: s.vmName,
      vmmId: s.vmmId,
      createdAt: s.createdAt,
      storedBytes: 8192,
    });
  }

  close(): void {}
}

/** A snapshot of the world on the wire; its clones are the VMs restored or cloned from it. */
function snapshotToWire(world: SnapshotWorld & Iterable<[string, string]>, s: FakeSnapshot) {
  const clones = [...world]
    .filter(([name]) => world.facts.get(name)?.snapshot === s.name)
    .map(([name, vmm]) => `${vmm}/${name}`);
  return mspb.Snapshot.fromPartial({
    id: `id-${s.name}`,
    name: s.name,
    kind:
      s.kind === 'full'
        ? mspb.SnapshotKind.SNAPSHOT_KIND_FULL
        : mspb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
    template: s.template,
    createdAt: dateToTimestamp(s.createdAt),
    vmName: s.vmName,
    vmmId: s.vmmId,
    blocks: [
      {
        id: 'ram0',
        guestBase: 0x8000_0000n,
        size: 16n << 20n,
        regionId: `region-${s.name}`,
        regionName: `${s.vmName}-ram0`,
        owned: true,
        storedBytes: 4n << 20n,
      },
    ],
    deviceStateBytes: 8192n,
    clones,
    storedBytes: (4n << 20n) + 8192n,
  });
}

/**
 * memstore's snapshot calls (GetSnapshot, ListSnapshots, DeleteSnapshot) over the fakes' world,
 * served over gRPC on loopback (plaintext, or mutual TLS with `tls`): for tests of the migrator
 * executable and vmctl with fake vmm instances. Every other memstore call is unimplemented.
 */
export class FakeMemstore {
  /** Every call received, as `method:name`. */
  readonly calls: string[] = [];

  private constructor(private server: RunningServer | undefined) {}

  static async start(
    world: SnapshotWorld & Iterable<[string, string]>,
    tls: TlsMaterial | null = null,
  ): Promise<FakeMemstore> {
    const fake = new FakeMemstore(undefined);
    const logger = createLogger({ name: 'fake-memstore', level: 'silent', format: 'json' });
    const find = (sel: mspb.SnapshotSelector | undefined) => {
      const name = sel?.selector?.value ?? '';
      const s =
        world.snapshots.get(name) ??
        [...world.snapshots.values()].find((x) => `id-${x.name}` === name);
      if (s === undefined)
        throw new ServiceError('SNAPSHOT_NOT_FOUND', `no snapshot named ${name}`);
      return s;
    };
    const implementation: Partial<mspb.MemstoreServiceServer> = {
      getSnapshot: unary(logger, (req: mspb.GetSnapshotRequest) => {
        fake.calls.push(`getSnapshot:${req.snapshot?.selector?.value ?? ''}`);
        return {
          snapshot: snapshotToWire(world, find(req.snapshot)),
          deviceState: new Uint8Array(),
        };
      }),
      listSnapshots: unary(logger, (req: mspb.ListSnapshotsRequest) => {
        fake.calls.push('listSnapshots:');
        return {
          snapshots: [...world.snapshots.values()]
            .filter((s) => !req.templatesOnly || s.template)
            .map((s) => snapshotToWire(world, s)),
        };
      }),
      deleteSnapshot: unary(logger, (req: mspb.DeleteSnapshotRequest) => {
        fake.calls.push(`deleteSnapshot:${req.snapshot?.selector?.value ?? ''}`);
        const s = find(req.snapshot);
        const clones = snapshotToWire(world, s).clones;
        if (clones.length > 0) {
          throw new ServiceError(
            'SNAPSHOT_IN_USE',
            `snapshot ${s.name} is in use by ${clones.join(', ')}`,
          );
        }
        world.snapshots.delete(s.name);
        return {};
      }),
    };
    fake.server = await startServer({
      name: 'memstore',
      host: '127.0.0.1',
      port: 0,
      logger,
      tls,
      shutdownTimeoutMs: 100,
      services: [
        {
          name: serviceNames.memstore,
          definition: mspb.MemstoreServiceService,
          implementation: implementation as never,
          access: openAccess(mspb.MemstoreServiceService, ['operator', 'migrator']),
        },
      ],
    });
    return fake;
  }

  get address(): string {
    return this.server!.address;
  }

  async stop(): Promise<void> {
    await this.server!.shutdown('test over');
  }
}
