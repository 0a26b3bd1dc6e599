import type * as grpc from '@grpc/grpc-js';
import { serviceNames, vmm as pb, vmmStream } from '@handoff/proto';
import {
  ANY_ROLE,
  anyEvent,
  bidiStream,
  callerId,
  callerOf,
  serverStream,
  unary,
  HANDOFF_VERSION,
  ServiceError,
  type AccessTable,
  type Logger,
  type ServiceRegistration,
} from '@handoff/service';
import { assertValidMigrationConfig, isActive } from '@handoff/qapi';
import { capabilitiesFromWire, migrationInfoToWire, parametersFromWire } from '@handoff/qapi/wire';
import {
  grpcIncoming,
  STREAM_FORMAT,
  type CancelIncomingOutcome,
  type IncomingHint,
  type MigrationManager,
} from '../migration/index.js';
import { VmmError } from '../model/vmm-error.js';
import { SaveRestore, type StartedVm } from '../save-restore/index.js';
import type { VmHost } from '../vm/host.js';
import type { ConsoleSink, Vm } from '../vm/vm.js';
import { specFromPb } from '../wire/spec.js';
import { currentToPb, eventToPb, snapshotToPb, vmToPb } from './convert.js';
import { streamMigration } from './migrate-stream.js';

/** How an arrival ended, on the wire (CancelIncoming). */
const INCOMING_OUTCOME_TO_PB: Record<CancelIncomingOutcome, pb.IncomingOutcome> = {
  none: pb.IncomingOutcome.INCOMING_OUTCOME_NONE,
  dropped: pb.IncomingOutcome.INCOMING_OUTCOME_DROPPED,
  arrived: pb.IncomingOutcome.INCOMING_OUTCOME_ARRIVED,
  failed: pb.IncomingOutcome.INCOMING_OUTCOME_FAILED,
};

/** Migration stream format versions this instance speaks ("major.minor"). */
export const STREAM_VERSIONS = [`${STREAM_FORMAT.major}.${STREAM_FORMAT.minor}`];

/** Console output queued for one slow console before bytes are dropped. */
const CONSOLE_QUEUE_LIMIT = 4 * 1024 * 1024;
/** Console input in flight to a guest before the console stream is paused. */
const CONSOLE_INPUT_LIMIT = 1024 * 1024;

/** VM lifecycle: the operator (vmctl) and the migrator. */
const LIFECYCLE = ['operator', 'migrator'] as const;

/**
 * Who may call what on a vmm (roles of the caller's certificate; startServer enforces it). VMs
 * are run by the operator and the migrator; only the migrator prepares and starts migrations
 * (so nobody else can send a VM away or reserve a name for a stream), the operator may follow
 * and cancel them; snapshots are the operator's and the migrator's.
 */
export const VMM_ACCESS: AccessTable = {
  GetInfo: ANY_ROLE,
  CreateVm: LIFECYCLE,
  StartVm: LIFECYCLE,
  PauseVm: LIFECYCLE,
  ResumeVm: LIFECYCLE,
  DestroyVm: LIFECYCLE,
  GetVm: LIFECYCLE,
  ListVms: LIFECYCLE,
  WatchVm: LIFECYCLE,
  Console: LIFECYCLE,
  PrepareIncoming: ['migrator'],
  // gives an arrival up before its point of no return: as CancelMigration, the operator too
  CancelIncoming: ['migrator', 'operator'],
  MigrateVm: ['migrator'],
  GetMigration: ['migrator', 'operator'],
  CancelMigration: ['migrator', 'operator'],
  SaveVm: LIFECYCLE,
  RestoreVm: LIFECYCLE,
  CloneVms: LIFECYCLE,
};

/**
 * The migration stream comes only from another vmm, and only from the one PrepareIncoming
 * named (its token is bound to that id; the stream's caller is checked against it).
 */
export const MIGRATION_ACCESS: AccessTable = { Incoming: ['vmm'] };

/** The gRPC edge of a vmm instance. */
export function vmmServices(deps: {
  logger: Logger;
  id: string;
  address: () => string;
  host: VmHost;
  migrations: MigrationManager;
}): ServiceRegistration[] {
  const { logger, host } = deps;
  const vm = (name: string): Vm => host.get(requireName(name));
  const { migrations } = deps;
  const saves = new SaveRestore(host);
  const vmm: pb.VmmServiceServer = {
    getInfo: unary(logger, () => {
      const counts = host.counts();
      return {
        vmmId: deps.id,
        version: HANDOFF_VERSION,
        address: deps.address(),
        vmCount: counts.total,
        runningVmCount: counts.running,
        streamVersions: STREAM_VERSIONS,
        vcpuThreads: counts.vcpuThreads,
      };
    }),
    createVm: unary(logger, async (req: pb.CreateVmRequest) => ({
      vm: vmToPb(
        await host.create(specFromPb(req.spec), {
          start: req.start,
          guestImage: req.guestImage,
        }),
      ),
    })),
    startVm: unary(logger, async (req: pb.StartVmRequest) => ({
      vm: vmToPb(await vm(req.name).start()),
    })),
    pauseVm: unary(logger, async (req: pb.PauseVmRequest) => ({
      vm: vmToPb(await vm(req.name).pause()),
    })),
    resumeVm: unary(logger, async (req: pb.ResumeVmRequest) => ({
      vm: vmToPb(await host.resume(requireName(req.name))),
    })),
    destroyVm: unary(logger, async (req: pb.DestroyVmRequest) => {
      await host.destroy(requireName(req.name));
      return {};
    }),
    getVm: unary(logger, (req: pb.GetVmRequest) => {
      const v = vm(req.name);
      return {
        vm: vmToPb(req.withMemory === true ? { ...v.info(), memory: v.memoryUsage() } : v.info()),
      };
    }),
    listVms: unary(logger, () => ({ vms: host.list().map(vmToPb) })),
    watchVm: serverStream(logger, (req: pb.WatchVmRequest, call) => watch(vm(req.name), call)),
    console: bidiStream(logger, (call) => consoleSession(host, call)),
    prepareIncoming: unary(logger, async (req: pb.PrepareIncomingRequest, call) => {
      if (callerOf(call).secure && req.sourceVmm === '') {
        throw new ServiceError(
          'SERVICE_INVALID_ARGUMENT',
          'PrepareIncoming names no source vmm; set "source_vmm" to the id of the instance the ' +
            'VM comes from (the token is valid only for it)',
        );
      }
      const capabilities = fromWireOrUndefined(() => capabilitiesFromWire(req.capabilities));
      const prepared = await migrations.prepare(requireName(req.name), req.jobId, {
        hint: hintOf(req, host),
        capabilities,
        source: req.sourceVmm,
        sourceMemstore: req.sourceMemstore ?? '',
      });
      return {
        token: prepared.token,
        address: deps.address(),
        dataAddress: migrations.dataAddress ?? '',
        handoffSlot: prepared.switchoverSlot ?? '',
      };
    }),
    cancelIncoming: unary(logger, async (req: pb.CancelIncomingRequest) => ({
      outcome: INCOMING_OUTCOME_TO_PB[await migrations.cancelIncoming(req.name, req.jobId)],
    })),
    migrateVm: serverStream(logger, async (req: pb.MigrateVmRequest, call) => {
      const set = req.parameters === undefined ? {} : parametersFromWire(req.parameters);
      const { capabilities, parameters } = assertValidMigrationConfig({
        capabilities: capabilitiesFromWire(req.capabilities),
        parameters: set,
      });
      if (saves.isSaving(req.name)) {
        throw new VmmError(
          'VMM_INVALID_STATE',
          `VM ${req.name} is being saved; migrate it once the save has ended`,
        );
      }
      const request = {
        name: requireName(req.name),
        jobId: req.jobId,
        target: {
          address: req.targetAddress,
          dataChannel: req.targetDataAddress !== '' ? req.targetDataAddress : null,
          switchoverSlot: req.targetHandoffSlot !== '' ? req.targetHandoffSlot : null,
        },
        token: req.token,
        capabilities,
        parameters,
      };
      await streamMigration(migrations, request, call);
    }),
    getMigration: unary(logger, (req: pb.GetMigrationRequest) => ({
      info: migrationInfoToWire(migrations.info(requireName(req.name))),
      jobId: migrations.jobOf(req.name),
    })),
    cancelMigration: unary(logger, (req: pb.CancelMigrationRequest) => {
      migrations.cancel(requireName(req.name));
      return {};
    }),
    ...saveRestoreHandlers(logger, saves, migrations),
  };
  const migration: vmmStream.MigrationServiceServer = {
    incoming: bidiStream(logger, (call) =>
      migrations.serveIncoming(grpcIncoming(call, callerId(call))),
    ),
  };
  return [
    {
      name: serviceNames.vmm,
      definition: pb.VmmServiceService,
      implementation: vmm as unknown as ServiceRegistration['implementation'],
      access: VMM_ACCESS,
    },
    {
      name: serviceNames.migration,
      definition: vmmStream.MigrationServiceService,
      implementation: migration as unknown as ServiceRegistration['implementation'],
      access: MIGRATION_ACCESS,
    },
  ];
}

/**
 * PrepareIncoming's optional spec and capabilities. A spec that does not fit this board or
 * instance is refused like CreateVm's (the migration could not land here anyway); capabilities
 * that do not resolve only mean no machine is built ahead.
 *
 * @throws VmmError `VMM_INVALID_SPEC`, `VMM_LIMIT_EXCEEDED`
 */
function hintOf(req: pb.PrepareIncomingRequest, host: VmHost): IncomingHint | undefined {
  if (req.spec === undefined) return undefined;
  const spec = specFromPb(req.spec);
  host.checkIncomingSpec({ ...spec, name: req.name });
  const capabilities = fromWireOrUndefined(() => capabilitiesFromWire(req.capabilities));
  return capabilities === undefined ? undefined : { spec, capabilities };
}

/** A value read from the wire, or undefined when it does not parse. */
function fromWireOrUndefined<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}

/**
 * A VM that is migrating is not saved (both would pause it and take its state).
 *
 * @throws VmmError `VMM_INVALID_STATE`
 */
function refuseWhileMigrating(migrations: MigrationManager, name: string): void {
  let status;
  try {
    status = migrations.info(name).status;
  } catch {
    return; // no migration of it is known
  }
  if (isActive(status)) {
    throw new VmmError(
      'VMM_INVALID_STATE',
      `VM ${name} is migrating (${status}); save it once the migration has ended`,
    );
  }
}

function requireName(name: string): string {
  if (name === '') {
    throw new ServiceError('SERVICE_INVALID_ARGUMENT', 'the request names no VM; set "name"');
  }
  return name;
}

/** Resolves when the call can take more writes (or is gone). */
function drained<Req, Res>(call: grpc.ServerWritableStream<Req, Res>): Promise<void> {
  return anyEvent(call, ['drain', 'cancelled', 'close']);
}

/**
 * WatchVm: the current state first (kind UNSPECIFIED, detail "current state"), then every
 * lifecycle event until the VM is destroyed or the client cancels. Honours backpressure.
 */
async function watch(
  vm: Vm,
  call: grpc.ServerWritableStream<pb.WatchVmRequest, pb.WatchVmResponse>,
): Promise<void> {
  const queue: pb.WatchVmResponse[] = [currentToPb(vm.info())];
  let destroyed = false;
  let cancelled = false;
  let wake: (() => void) | undefined;
  const unsubscribe = vm.watch((e) => {
    queue.push(eventToPb(e));
    if (e.kind === 'destroyed') destroyed = true;
    wake?.();
  });
  const onCancel = (): void => {
    cancelled = true;
    wake?.();
  };
  call.on('cancelled', onCancel);
  try {
    for (;;) {
      while (queue.length > 0 && !cancelled) {
        if (!call.write(queue.shift()!)) await drained(call);
      }
      if (destroyed || cancelled || call.cancelled) return;
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
  } finally {
    unsubscribe();
    call.off('cancelled', onCancel);
  }
}

/**
 * Console: the first request names the VM (and may carry input). The console gets the VM's
 * output backlog, then live output; input bytes go to the guest's UART. Several consoles may
 * be attached at once. The stream ends when the VM powers off, crashes or is destroyed, or when
 * the client cancels; a client that half-closes keeps receiving output. A console that cannot
 * keep up loses output beyond {@link CONSOLE_QUEUE_LIMIT} (the guest never waits for it);
 * input is flow-controlled (the stream is paused while the guest has not taken 1 MiB).
 */
function consoleSession(
  host: VmHost,
  call: grpc.ServerDuplexStream<pb.ConsoleRequest, pb.ConsoleResponse>,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let vm: Vm | undefined;
    let detach: (() => void) | undefined;
    let finished = false;
    let ending = false;
    let blocked = false;
    const queued: Uint8Array[] = [];
    let queuedBytes = 0;
    let dropped = 0;

    const finish = (err?: unknown): void => {
      if (finished) return;
      finished = true;
      detach?.();
      call.off('data', onData);
      call.off('drain', onDrain);
      call.off('end', onEnd);
      call.off('cancelled', onCancel);
      call.off('error', onCancel);
      if (dropped > 0) vm?.log.warn({ dropped }, 'a slow console lost output');
      if (err !== undefined) reject(err);
      else resolve();
    };
    const send = (bytes: Uint8Array): void => {
      if (!call.write({ output: bytes })) blocked = true;
    };
    const onDrain = (): void => {
      blocked = false;
      while (queued.length > 0 && !blocked) {
        const bytes = queued.shift()!;
        queuedBytes -= bytes.length;
        send(bytes);
      }
      if (ending && !blocked && queued.length === 0) finish();
    };
    const sink: ConsoleSink = {
      write: (bytes) => {
        if (finished) return;
        if (!blocked) {
          send(bytes);
        } else if (queuedBytes + bytes.length <= CONSOLE_QUEUE_LIMIT) {
          queued.push(bytes);
          queuedBytes += bytes.length;
        } else {
          dropped += bytes.length;
        }
      },
      end: () => {
        ending = true;
        if (!blocked) finish();
      },
    };
    const onData = (req: pb.ConsoleRequest): void => {
      if (finished) return;
      try {
        if (vm === undefined) {
          vm = host.get(requireName(req.name));
          if (req.input.length > 0) vm.input(req.input);
          detach = vm.attachConsole(sink);
          return;
        }
        if (req.input.length === 0) return;
        vm.input(req.input);
        if (vm.inputPending() > CONSOLE_INPUT_LIMIT) {
          call.pause();
          void vm.inputDrained(CONSOLE_INPUT_LIMIT / 2).then(() => call.resume());
        }
      } catch (err) {
        finish(err);
      }
    };
    const onEnd = (): void => {
      if (vm === undefined) {
        finish(
          new ServiceError(
            'SERVICE_INVALID_ARGUMENT',
            'the console stream ended before naming a VM; send {name} first',
          ),
        );
      }
    };
    const onCancel = (): void => finish();
    call.on('data', onData);
    call.on('drain', onDrain);
    call.on('end', onEnd);
    call.on('cancelled', onCancel);
    call.on('error', onCancel);
  });
}

/** Microseconds from `t0` (a performance.now() reading) to epoch milliseconds `atMs`. */
function usSince(t0: number, atMs = performance.timeOrigin + performance.now()): bigint {
  return BigInt(Math.max(0, Math.round((atMs - (performance.timeOrigin + t0)) * 1000)));
}

/** SaveVm, RestoreVm and CloneVms (save-restore/). */
function saveRestoreHandlers(
  logger: Logger,
  saves: SaveRestore,
  migrations: MigrationManager,
): Pick<pb.VmmServiceServer, 'saveVm' | 'restoreVm' | 'cloneVms'> {
  return {
    saveVm: unary(logger, async (req: pb.SaveVmRequest) => {
      const t0 = performance.now();
      const name = requireName(req.name);
      refuseWhileMigrating(migrations, name);
      const r = await saves.save({
        name,
        snapshot: req.snapshot,
        full: req.full,
        stop: req.stop,
        template: req.template,
        jobId: req.jobId,
      });
      return {
        snapshot: snapshotToPb(r.snapshot),
        pauseUs: BigInt(r.pauseUs),
        durationUs: usSince(t0),
        bytes: BigInt(r.bytes),
        vm: r.vm === null ? undefined : vmToPb(r.vm),
      };
    }),
    restoreVm: unary(logger, async (req: pb.RestoreVmRequest) => {
      const t0 = performance.now();
      const started = await saves.restore({
        snapshot: req.snapshot,
        name: req.name,
        paused: req.paused,
        jobId: req.jobId,
      });
      return { vm: vmToPb(started.vm), durationUs: usSince(t0, started.runningAtMs) };
    }),
    cloneVms: unary(logger, async (req: pb.CloneVmsRequest) => {
      const t0 = performance.now();
      const started: StartedVm[] = await saves.clone({
        snapshot: req.snapshot,
        count: req.count,
        namePrefix: req.namePrefix,
        firstIndex: req.firstIndex,
        paused: req.paused,
        jobId: req.jobId,
      });
      return {
        vms: started.map((s) => vmToPb(s.vm)),
        runningAfterUs: started.map((s) => usSince(t0, s.runningAtMs)),
        durationUs: usSince(t0),
      };
    }),
  };
}
