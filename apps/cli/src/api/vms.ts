import * as grpc from '@grpc/grpc-js';
import { timestampToDate, vmm as pb } from '@handoff/proto';
import { RemoteError, unaryCall } from '@handoff/service';
import { CliError } from '../errors.js';
import type { Clients } from './clients.js';

/** A vmm instance as the migrator lists it. */
export interface VmmRef {
  id: string;
  address: string;
  alive: boolean;
  /** The host it registered on ('' when it named none; absent when not asked). */
  hostId?: string;
  /** Its host's memstore ('' when it did not say; absent when not asked). */
  memstoreAddress?: string;
}

/** States a VM can be in, as vmctl prints them. */
export type VmStateName =
  | 'created'
  | 'running'
  | 'paused'
  | 'powered-off'
  | 'crashed'
  | 'postmigrate'
  | 'inmigrate'
  | 'unknown';

export type RamBackendName = 'private' | 'shared' | 'clone' | 'lazy' | 'unknown';

/** One RAM block of a VM. */
export interface RamBlockView {
  id: string;
  guestBase: number;
  size: bigint;
  backend: RamBackendName;
  region: string;
  dirtyPages: bigint;
  touchedPages: bigint;
  /** The memstore region mapped (shared, clone), with the lease epoch held. */
  regionRef: { id: string; epoch: bigint; memstore: string } | null;
}

/** A VM as vmctl shows it (converted from the wire at this edge). */
export interface VmView {
  name: string;
  vmm: string;
  vmmAddress: string;
  state: VmStateName;
  /** The finisher's code once powered off, else null. */
  exitCode: number | null;
  error: string;
  guest: string;
  args: Record<string, string>;
  instret: bigint;
  mips: number;
  ready: boolean;
  generationId: bigint;
  createdAt: string | undefined;
  ram: RamBlockView[];
  /** What its RAM costs, as the kernel counts it (GetVm sets it; ListVms does not). */
  memory: MemoryUsageView | null;
  /** The snapshot or template it was restored or cloned from; '' for a booted VM. */
  snapshot: string;
  /** While its RAM still arrives by post-copy: what is here and what it waits for; else null. */
  postcopy: VmPostcopyView | null;
}

/** A VM whose memory is still arriving by post-copy. */
export interface VmPostcopyView {
  presentPages: bigint;
  totalPages: bigint;
  /** Parked on a missing page now (`pageWaited`). */
  waiting: boolean;
  pageWaited: bigint;
  /** The fill lost its source: waits until `vmctl migrate NAME --recover`. */
  sourcePaused: boolean;
  pagesWaited: bigint;
  faultP50Us: bigint;
  faultP99Us: bigint;
}

/** What a VM's RAM mappings cost on its vmm's host. */
export interface MemoryUsageView {
  /** Proportional set size: shared pages divided among the mappings that share them. */
  pssBytes: bigint;
  /** Pages only this VM maps that it wrote. */
  privateDirtyBytes: bigint;
  /** Resident pages, counted whole even when shared. */
  rssBytes: bigint;
}

/** What `vm create` asks for. */
export interface VmCreateSpec {
  name: string;
  guest: string;
  memory: bigint;
  backend: 'private' | 'shared' | 'clone';
  /** shared: an existing region ('' = create one); clone: the template. */
  region: string;
  args: Record<string, string>;
  /** The guest ELF itself, sent when the file is vmctl's (`guest` then only names it). */
  guestImage?: Uint8Array | undefined;
}

const STATE: Record<number, VmStateName> = {
  [pb.VmState.VM_STATE_CREATED]: 'created',
  [pb.VmState.VM_STATE_RUNNING]: 'running',
  [pb.VmState.VM_STATE_PAUSED]: 'paused',
  [pb.VmState.VM_STATE_POWERED_OFF]: 'powered-off',
  [pb.VmState.VM_STATE_CRASHED]: 'crashed',
  [pb.VmState.VM_STATE_POSTMIGRATE]: 'postmigrate',
  [pb.VmState.VM_STATE_INMIGRATE]: 'inmigrate',
};

const BACKEND: Record<number, RamBackendName> = {
  [pb.RamBackend.RAM_BACKEND_PRIVATE]: 'private',
  [pb.RamBackend.RAM_BACKEND_SHARED]: 'shared',
  [pb.RamBackend.RAM_BACKEND_CLONE]: 'clone',
  [pb.RamBackend.RAM_BACKEND_LAZY]: 'lazy',
};

const BACKEND_TO_WIRE: Record<VmCreateSpec['backend'], pb.RamBackend> = {
  private: pb.RamBackend.RAM_BACKEND_PRIVATE,
  shared: pb.RamBackend.RAM_BACKEND_SHARED,
  clone: pb.RamBackend.RAM_BACKEND_CLONE,
};

/** Main RAM of the QEMU virt board. */
const DRAM_BASE = 0x8000_0000;

function toView(v: pb.Vm, vmm: VmmRef): VmView {
  const state = STATE[v.state] ?? 'unknown';
  return {
    name: v.name,
    vmm: v.vmmId || vmm.id,
    vmmAddress: vmm.address,
    state,
    exitCode: state === 'powered-off' ? v.exitCode : null,
    error: v.error,
    guest: v.spec?.guest ?? '',
    args: { ...(v.spec?.args ?? {}) },
    instret: v.instret,
    mips: v.mips,
    ready: v.ready,
    generationId: v.generationId,
    createdAt: timestampToDate(v.createdAt)?.toISOString(),
    memory:
      v.memory !== undefined
        ? {
            pssBytes: v.memory.pssBytes,
            privateDirtyBytes: v.memory.privateDirtyBytes,
            rssBytes: v.memory.rssBytes,
          }
        : null,
    snapshot: v.snapshot,
    postcopy: v.postcopy !== undefined ? { ...v.postcopy } : null,
    ram: v.ram.map((b) => ({
      id: b.spec?.id ?? '',
      guestBase: Number(b.spec?.guestBase ?? 0n),
      size: b.spec?.size ?? 0n,
      backend: BACKEND[b.spec?.backend ?? 0] ?? 'unknown',
      region: b.spec?.region ?? '',
      dirtyPages: b.dirtyPages,
      touchedPages: b.touchedPages,
      regionRef:
        b.regionRef !== undefined && b.regionRef.regionId !== ''
          ? { id: b.regionRef.regionId, epoch: b.regionRef.epoch, memstore: b.regionRef.memstore }
          : null,
    })),
  };
}

/**
 * The JSON document of a VM (`--output json`): stable kebab-case keys, e.g.
 * `{"name","vmm","state","exit-code","instret","mips","ram":[...]}`.
 */
export function vmJson(v: VmView): Record<string, unknown> {
  return {
    name: v.name,
    vmm: v.vmm,
    'vmm-address': v.vmmAddress,
    state: v.state,
    ...(v.exitCode !== null ? { 'exit-code': v.exitCode } : {}),
    ...(v.error !== '' ? { error: v.error } : {}),
    guest: v.guest,
    args: v.args,
    instret: v.instret,
    mips: Math.round(v.mips * 10) / 10,
    ready: v.ready,
    'generation-id': v.generationId.toString(16).padStart(16, '0'),
    created: v.createdAt ?? null,
    memory: v.ram.reduce((sum, b) => sum + b.size, 0n),
    ...(v.snapshot !== '' ? { snapshot: v.snapshot } : {}),
    ...(v.postcopy !== null
      ? {
          postcopy: {
            'present-pages': v.postcopy.presentPages,
            'total-pages': v.postcopy.totalPages,
            waiting: v.postcopy.waiting,
            ...(v.postcopy.waiting ? { 'page-waited': v.postcopy.pageWaited } : {}),
            'source-paused': v.postcopy.sourcePaused,
            'pages-waited': v.postcopy.pagesWaited,
            'fault-p50-us': v.postcopy.faultP50Us,
            'fault-p99-us': v.postcopy.faultP99Us,
          },
        }
      : {}),
    ...(v.memory !== null
      ? {
          usage: {
            pss: v.memory.pssBytes,
            'private-dirty': v.memory.privateDirtyBytes,
            rss: v.memory.rssBytes,
          },
        }
      : {}),
    ram: v.ram.map((b) => ({
      id: b.id,
      base: `0x${b.guestBase.toString(16)}`,
      size: b.size,
      backend: b.backend,
      ...(b.region !== '' ? { region: b.region } : {}),
      'dirty-pages': b.dirtyPages,
      'touched-pages': b.touchedPages,
      ...(b.regionRef !== null
        ? { 'region-id': b.regionRef.id, 'lease-epoch': b.regionRef.epoch }
        : {}),
    })),
  };
}

function notFound(name: string, where: VmmRef[]): RemoteError {
  const ids = where.map((v) => v.id).join(', ') || 'none registered';
  return new RemoteError(
    'VMM_VM_NOT_FOUND',
    grpc.status.NOT_FOUND,
    `no VM named ${name} on any vmm instance (${ids}); list them with \`vmctl vm list\``,
  );
}

/** VM calls vmctl makes, in domain terms. */
export const vms = {
  /** The registered vmm instances (live ones first). */
  async instances(c: Clients): Promise<VmmRef[]> {
    const res = await unaryCall(c.migrator, 'listVmms', {}, { deadlineMs: c.endpoints.timeoutMs });
    return res.vmms
      .map((v) => ({
        id: v.id,
        address: v.address,
        alive: v.alive,
        hostId: v.hostId,
        memstoreAddress: v.memstoreAddress,
      }))
      .sort((a, b) => Number(b.alive) - Number(a.alive) || a.id.localeCompare(b.id));
  },

  /** One vmm instance by id. @throws CliError when it is not registered. */
  async instance(c: Clients, id: string): Promise<VmmRef> {
    const all = await vms.instances(c);
    const found = all.find((v) => v.id === id);
    if (found === undefined) {
      throw new CliError(
        'CLI_USAGE',
        `--vmm ${id} is not a registered vmm instance; known: ${all.map((v) => v.id).join(', ') || 'none'}`,
      );
    }
    return found;
  },

  /** Every VM of every vmm instance; instances that do not answer are listed apart. */
  async list(
    c: Clients,
  ): Promise<{ vms: VmView[]; unreachable: { vmm: string; error: string }[] }> {
    const instances = await vms.instances(c);
    const results = await Promise.all(
      instances.map(async (vmm) => {
        try {
          const res = await unaryCall(
            c.vmm(vmm.address),
            'listVms',
            {},
            { deadlineMs: c.endpoints.timeoutMs },
          );
          return { vms: res.vms.map((v) => toView(v, vmm)) };
        } catch (err) {
          return { error: { vmm: vmm.id, error: (err as Error).message } };
        }
      }),
    );
    const list: VmView[] = [];
    const unreachable: { vmm: string; error: string }[] = [];
    for (const r of results) {
      if ('error' in r) unreachable.push(r.error!);
      else list.push(...r.vms);
    }
    list.sort((a, b) => a.name.localeCompare(b.name) || a.vmm.localeCompare(b.vmm));
    return { vms: list, unreachable };
  },

  /**
   * GetVm of `name` on one instance; null when it holds no VM of that name. `withMemory` also
   * has the vmm measure what its RAM costs (a walk of its page tables: only to show it).
   */
  async on(c: Clients, vmm: VmmRef, name: string, withMemory = false): Promise<VmView | null> {
    try {
      const res = await unaryCall(
        c.vmm(vmm.address),
        'getVm',
        { name, withMemory },
        { deadlineMs: c.endpoints.timeoutMs },
      );
      return toView(res.vm!, vmm);
    } catch (err) {
      if (err instanceof RemoteError && err.status === grpc.status.NOT_FOUND) return null;
      throw err;
    }
  },

  /**
   * Finds a VM by name: on `vmmId` when given, else by asking every vmm instance (names are
   * unique in the cluster). @throws RemoteError VMM_VM_NOT_FOUND
   */
  async find(c: Clients, name: string, vmmId?: string, withMemory = false): Promise<VmView> {
    const candidates =
      vmmId !== undefined ? [await vms.instance(c, vmmId)] : await vms.instances(c);
    const found = await Promise.all(
      candidates.map(async (vmm) => {
        try {
          return await vms.on(c, vmm, name, withMemory);
        } catch (err) {
          if (vmmId !== undefined) throw err;
          return null; // an unreachable instance cannot hold it for us; the others may
        }
      }),
    );
    const hit = found.find((v) => v !== null);
    if (hit === undefined || hit === null) throw notFound(name, candidates);
    return hit;
  },

  /**
   * Creates a VM with one RAM block (ram0) on `vmmId`, or on the instance with the fewest VMs
   * (for RAM in an existing region or template: among the instances whose memstore is vmctl's,
   * which holds it, when any is — another host's vmm cannot map it).
   * Refuses a name already used anywhere in the cluster. Answers the VM as GetVm sees it once
   * CreateVm returned (a guest such as hello may have powered off by then), or CreateVm's own
   * answer when that GetVm fails.
   */
  async create(
    c: Clients,
    spec: VmCreateSpec,
    opts: { vmm?: string; start: boolean },
  ): Promise<VmView> {
    const instances = (await vms.instances(c)).filter((v) => v.alive || v.id === opts.vmm);
    if (instances.length === 0) {
      throw new CliError(
        'CLI_FAILED',
        'no vmm instance is registered with the migrator; start the cluster with `npm start`',
      );
    }
    const existing = await vms.find(c, spec.name).catch(() => null);
    if (existing !== null) {
      throw new RemoteError(
        'VMM_VM_EXISTS',
        grpc.status.ALREADY_EXISTS,
        `a VM named ${spec.name} already exists on ${existing.vmm}; VM names are unique in the ` +
          'cluster: destroy it first or pick another name',
      );
    }
    let target: VmmRef;
    if (opts.vmm !== undefined) {
      target = await vms.instance(c, opts.vmm);
    } else {
      const here = instances.filter((v) => v.memstoreAddress === c.endpoints.memstore);
      const candidates = spec.region !== '' && here.length > 0 ? here : instances;
      const loads = await Promise.all(
        candidates.map(async (vmm) => {
          try {
            const info = await unaryCall(
              c.vmm(vmm.address),
              'getInfo',
              {},
              { deadlineMs: c.endpoints.timeoutMs },
            );
            return { vmm, count: info.vmCount };
          } catch {
            return { vmm, count: Infinity };
          }
        }),
      );
      loads.sort((a, b) => a.count - b.count || a.vmm.id.localeCompare(b.vmm.id));
      target = loads[0]!.vmm;
    }
    const res = await unaryCall(
      c.vmm(target.address),
      'createVm',
      {
        spec: {
          name: spec.name,
          guest: spec.guest,
          ram: [
            {
              id: 'ram0',
              guestBase: BigInt(DRAM_BASE),
              size: spec.memory,
              backend: BACKEND_TO_WIRE[spec.backend],
              region: spec.region,
            },
          ],
          args: spec.args,
        },
        start: opts.start,
        ...(spec.guestImage !== undefined ? { guestImage: spec.guestImage } : {}),
      },
      { deadlineMs: Math.max(c.endpoints.timeoutMs, 30_000) },
    );
    const now = await vms.on(c, target, spec.name).catch(() => null);
    return now ?? toView(res.vm!, target);
  },

  /** start / pause / resume on the VM's instance. */
  async control(
    c: Clients,
    action: 'start' | 'pause' | 'resume',
    name: string,
    vmmId?: string,
  ): Promise<VmView> {
    const vm = await vms.find(c, name, vmmId);
    const ref: VmmRef = { id: vm.vmm, address: vm.vmmAddress, alive: true };
    const method = action === 'start' ? 'startVm' : action === 'pause' ? 'pauseVm' : 'resumeVm';
    const res = await unaryCall(
      c.vmm(vm.vmmAddress),
      method,
      { name },
      { deadlineMs: c.endpoints.timeoutMs },
    );
    return toView(res.vm!, ref);
  },

  /** Destroys a VM; returns the instance it was on. */
  async destroy(c: Clients, name: string, vmmId?: string): Promise<VmView> {
    const vm = await vms.find(c, name, vmmId);
    await unaryCall(
      c.vmm(vm.vmmAddress),
      'destroyVm',
      { name },
      { deadlineMs: Math.max(c.endpoints.timeoutMs, 15_000) },
    );
    return vm;
  },

  /** Opens the VM's console (see {@link ConsoleSession}). */
  console(c: Clients, vm: VmView): ConsoleSession {
    const stream = c.vmm(vm.vmmAddress).console();
    return new ConsoleSession(stream, vm.name);
  },
};

/**
 * A console attached to a VM: bytes in, bytes out. `closed` resolves when the stream ends
 * (the VM powered off or was destroyed, or {@link ConsoleSession.close} was called) and
 * rejects with a RemoteError when the vmm refused it (e.g. no such VM).
 */
export class ConsoleSession {
  readonly closed: Promise<void>;
  private ended = false;

  constructor(
    private readonly stream: grpc.ClientDuplexStream<pb.ConsoleRequest, pb.ConsoleResponse>,
    name: string,
  ) {
    this.closed = new Promise<void>((resolve, reject) => {
      stream.on('error', (err: grpc.ServiceError) => {
        if (err.code === grpc.status.CANCELLED) resolve();
        else reject(RemoteError.fromGrpc(err, 'console'));
      });
      stream.on('end', () => resolve());
    });
    this.closed.catch(() => undefined);
    stream.write({ name, input: new Uint8Array(0) });
  }

  /** Receives output bytes. */
  onOutput(fn: (bytes: Uint8Array) => void): void {
    this.stream.on('data', (res: pb.ConsoleResponse) => fn(res.output));
  }

  /** Sends input; false when the stream wants the caller to wait for {@link ConsoleSession.onDrain}. */
  write(bytes: Uint8Array): boolean {
    if (this.ended || bytes.length === 0) return true;
    return this.stream.write({ name: '', input: bytes });
  }

  onDrain(fn: () => void): void {
    this.stream.on('drain', fn);
  }

  /** Detaches: cancels the stream (the VM keeps running). */
  close(): void {
    this.ended = true;
    this.stream.cancel();
  }
}
