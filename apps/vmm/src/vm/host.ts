import type { ChannelCredentials } from '@grpc/grpc-js';
import type { Logger } from '@handoff/service';
import { GuestCatalog } from '../guests/catalog.js';
import type { ElfImage } from '../loader/elf.js';
import { checkLease } from '../leases/protocol.js';
import { closeRamBlocks, openRamBlocks, type RamBacking, type RamContext } from '../ram/index.js';
import { MemstoreAccess } from '../ram/memstore-access.js';
import { VmmError } from '../model/vmm-error.js';
import { normalizeSpec, validateSpec } from './spec.js';
import type { HostedVm, RamBlockSpec, VmInfo, VmSpec } from '../model/types.js';
import { Vm } from './vm.js';
import { VcpuThreadPool, type VcpuPoolReport } from '../vcpu/pool.js';
import { vcpuWorkerUrl } from '../vcpu/worker-url.js';
import type { MachineState } from '../machine/state.js';
import { createMachine } from '../machine/machine.js';
import type { ControlIdentity } from '../devices/control.js';
import { warmUpDeviceStateCodec } from '../snapshot/device-state.js';
import { ChangeNotice } from './change-notice.js';

/** How long after a change of the VM set its listeners hear of it (see VmHost.changed). */
const CHANGE_NOTICE_DELAY_MS = 20;
/** The shortest time between two notices of a burst of changes (see VmHost.changed). */
const CHANGE_NOTICE_INTERVAL_MS = 250;
/** How often running VMs' instret is sampled for MIPS. */
const SAMPLE_INTERVAL_MS = 250;
/** Encode + decode rounds run at start-up (≈45 ms of CPU, in slices of ≈1–3 ms). */
const CODEC_WARM_UP_ROUNDS = 500;

/** Options of a {@link VmHost}. */
export interface VmHostOptions {
  readonly vmmId: string;
  readonly logger: Logger;
  /** memstore address for shared and clone blocks. */
  readonly memstoreAddress: string;
  /** Credentials of the memstore client (this vmm's certificate, or plaintext). */
  readonly memstoreCredentials: ChannelCredentials;
  /** Largest total RAM of one VM, in bytes. */
  readonly maxVmMemory: number;
  /** Where built-in guests live (default: the repository's guests/). */
  readonly builtInGuestDir?: string;
  /** The one folder other guest images are read from (`--guest-dir`); absent: built-ins only. */
  readonly guestDir?: string | null;
  /** Deadline of each memstore call (default 10 s). */
  readonly memstoreDeadlineMs?: number;
  /** The compiled vCPU worker (default: {@link vcpuWorkerUrl}). */
  readonly workerUrl?: URL;
  /** vCPU threads kept standing (default: one per core); each runs many VMs. */
  readonly vcpuThreads?: number;
  /** Most vCPU threads the pool grows to while every thread has a busy VM (default 2× cores). */
  readonly maxVcpuThreads?: number;
  /** vCPU threads started at once when every thread has had a busy VM a while (default 1). */
  readonly spareThreads?: number;
}

/**
 * All VMs of one vmm instance: creation (spec checks, guest lookup, RAM backends, vCPU thread),
 * lookup by name, destruction, and MIPS sampling. Names are unique per instance (the cluster
 * keeps them unique across instances through vmctl).
 */
export class VmHost {
  private readonly vms = new Map<string, Vm>();
  /** Names whose creation is in progress. */
  private readonly creating = new Set<string>();
  /** Names reserved for VMs arriving by migration: the job, and since when (epoch ms). */
  private readonly arriving = new Map<string, { readonly jobId: string; readonly since: number }>();
  private readonly memstore: MemstoreAccess;
  private readonly sampler: NodeJS.Timeout;
  private readonly threads: VcpuThreadPool;
  private readonly guests: GuestCatalog;
  /** Migrated-away VMs still being torn down, by name: a VM arriving under the name waits. */
  private readonly retiring = new Map<string, Promise<void>>();
  private readonly changeListeners = new Set<() => void>();
  private readonly leaveListeners = new Set<(vm: Vm) => void>();
  private closed = false;

  /** @throws VmmError `VMM_VCPU_FAILED` when the compiled vCPU worker is missing */
  constructor(private readonly opts: VmHostOptions) {
    this.memstore = new MemstoreAccess({
      vmmId: opts.vmmId,
      address: opts.memstoreAddress,
      credentials: opts.memstoreCredentials,
      logger: opts.logger,
      deadlineMs: opts.memstoreDeadlineMs ?? 10_000,
    });
    this.guests = new GuestCatalog({
      vmmId: opts.vmmId,
      ...(opts.builtInGuestDir !== undefined ? { builtInDir: opts.builtInGuestDir } : {}),
      guestDir: opts.guestDir ?? null,
    });
    this.threads = new VcpuThreadPool(opts.workerUrl ?? vcpuWorkerUrl(), {
      ...(opts.vcpuThreads !== undefined ? { threads: opts.vcpuThreads } : {}),
      ...(opts.maxVcpuThreads !== undefined ? { maxThreads: opts.maxVcpuThreads } : {}),
      spare: opts.spareThreads ?? 1,
      logger: opts.logger,
    });
    this.sampler = setInterval(() => {
      const now = performance.now();
      for (const vm of this.vms.values()) vm.sample(now);
    }, SAMPLE_INTERVAL_MS);
    this.sampler.unref();
    // Device state is encoded (outgoing) and decoded (incoming) once per migration, inside its
    // downtime: have V8 compile the codec now, off any migration's path.
    const sample = createMachine({ ramSize: 1 << 20, timeMode: 'realtime' }).save();
    warmUpDeviceStateCodec(sample, CODEC_WARM_UP_ROUNDS, () => this.closed);
  }

  /**
   * Creates a VM from a spec as it came from the wire (defaults filled here), optionally
   * starting it. With `guestImage` (an ELF a client sent) the spec's guest only labels it;
   * otherwise the guest is looked up by name (built-ins, the guest folder).
   *
   * @throws VmmError `VMM_INVALID_SPEC`, `VMM_LIMIT_EXCEEDED`, `VMM_GUEST_NOT_FOUND`,
   *   `VMM_INVALID_GUEST`, `VMM_REGION_NOT_FOUND`, `VMM_MEMSTORE_UNAVAILABLE`, `VMM_VM_EXISTS`;
   *   memstore's lease errors pass through with their codes.
   */
  async create(
    raw: VmSpec,
    opts: { start: boolean; guestImage?: Uint8Array | undefined },
  ): Promise<VmInfo> {
    if (this.closed) throw new VmmError('VMM_INVALID_STATE', 'this vmm instance is shutting down');
    const claimed = raw.ram.find((b) => b.regionOwned === true);
    if (claimed !== undefined) {
      throw new VmmError(
        'VMM_INVALID_SPEC',
        `RAM block ${claimed.id}: region_owned is set by the vmm, not by CreateVm; leave the ` +
          "block's region empty to have a region created that the VM owns (and deletes)",
      );
    }
    const spec = normalizeSpec(raw);
    validateSpec(spec, { maxVmMemory: this.opts.maxVmMemory });
    this.assertNameFree(spec.name);
    this.creating.add(spec.name);
    const log = this.opts.logger.child({ vm: spec.name });
    try {
      const guest =
        opts.guestImage !== undefined
          ? this.guests.fromClient(spec.guest, opts.guestImage)
          : this.guests.load(spec.guest);
      checkImageFits(spec.guest, guest.image, spec.ram);
      const ram = await openRamBlocks(spec.ram, this.memstore.context(spec.name, log));
      let vm: Vm;
      try {
        vm = await Vm.boot(spec, ram, guest, {
          vmmId: this.opts.vmmId,
          logger: log,
          threads: this.threads,
        });
      } catch (err) {
        await closeRamBlocks(ram);
        throw err;
      }
      this.vms.set(spec.name, vm);
      this.changed();
      log.info(
        {
          guest: guest.path,
          ram: spec.ram.map((b) => `${b.id}:${b.backend}:${b.size}`),
          generationId: vm.generationId.toString(16),
          vcpuThread: vm.vcpuThread,
          vcpuThreads: this.threads.report().vms,
        },
        opts.guestImage !== undefined
          ? 'VM created from a guest image sent by the client'
          : 'VM created',
      );
      if (opts.start) return await vm.start();
      return vm.info();
    } finally {
      this.creating.delete(spec.name);
    }
  }

  /** This instance's id (lease holders are `<vmm-id>/<vm>`). */
  get vmmId(): string {
    return this.opts.vmmId;
  }

  /** What opening RAM blocks for VM `name` needs (incoming migrations open blocks themselves). */
  ramContext(name: string): RamContext {
    return this.memstore.context(name, this.opts.logger.child({ vm: name }));
  }

  /** Checks an incoming VM's spec like CreateVm would. @throws VmmError `VMM_INVALID_SPEC`... */
  checkIncomingSpec(raw: VmSpec): VmSpec {
    const spec = normalizeSpec(raw);
    validateSpec(spec, { maxVmMemory: this.opts.maxVmMemory });
    return spec;
  }

  /**
   * Reserves a name for a VM arriving by migration job `jobId` (PrepareIncoming) so no CreateVm
   * or other arrival takes it meanwhile; returns the release function (idempotent). The caller
   * releases it the moment that arrival ends, whichever way: the VM runs here (registered under
   * the name by then), the migration failed or was cancelled, or it was never used. Nothing
   * else frees it.
   *
   * @throws VmmError `VMM_VM_EXISTS`
   */
  async reserve(name: string, jobId = ''): Promise<() => void> {
    await this.retiring.get(name); // a VM that just left under this name is gone first
    this.assertNameFree(name);
    const mine = { jobId, since: Date.now() };
    this.arriving.set(name, mine);
    return () => {
      if (this.arriving.get(name) === mine) this.arriving.delete(name);
    };
  }

  /**
   * Reserves names for VMs made here other than by CreateVm (RestoreVm, CloneVms): all of them
   * or none. Returns the release function (idempotent), to call once each VM is registered or
   * given up.
   *
   * @throws VmmError `VMM_VM_EXISTS` naming the first that is taken, `VMM_INVALID_STATE` while
   *   the instance shuts down
   */
  reserveNames(names: readonly string[]): () => void {
    if (this.closed) throw new VmmError('VMM_INVALID_STATE', 'this vmm instance is shutting down');
    const unique = new Set(names);
    for (const name of unique) this.assertNameFree(name);
    for (const name of unique) this.creating.add(name);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const name of unique) this.creating.delete(name);
    };
  }

  /**
   * Block `k` of `vm` is backed another way now (see {@link Vm.replaceBlock}); the VM's new
   * spec goes out with the next report of the VM set.
   */
  rebacked(vm: Vm, k: number, backing: RamBacking): void {
    vm.replaceBlock(k, backing);
    this.changed();
  }

  /** @throws VmmError `VMM_VM_EXISTS`, saying what holds the name and what to do */
  private assertNameFree(name: string): void {
    const at = this.opts.vmmId;
    const arriving = this.arriving.get(name);
    if (arriving !== undefined) {
      const job = arriving.jobId !== '' ? `migration job ${arriving.jobId}` : 'a migration';
      const secs = Math.round((Date.now() - arriving.since) / 1000);
      throw new VmmError(
        'VMM_VM_EXISTS',
        `a VM named ${name} is arriving on ${at} by ${job} (prepared ${secs} s ago); wait ` +
          'for that job to end, or cancel it (`vmctl jobs cancel`), and the name is free at once',
      );
    }
    if (this.vms.has(name) || this.creating.has(name)) {
      throw new VmmError(
        'VMM_VM_EXISTS',
        `a VM named ${name} already exists on ${at}; destroy it first or pick another name`,
      );
    }
  }

  /**
   * Starts the (waiting) vCPU thread of an incoming VM; see {@link Vm.spawnIncoming}. A VM
   * restored from a snapshot passes its new `identity` (what its generation id reports).
   */
  spawnIncoming(
    spec: VmSpec,
    ram: readonly RamBacking[],
    zeroKnown: boolean,
    identity?: ControlIdentity,
  ): Vm {
    return Vm.spawnIncoming(spec, ram, zeroKnown, {
      vmmId: this.opts.vmmId,
      logger: this.opts.logger.child({ vm: spec.name }),
      threads: this.threads,
      ...(identity !== undefined ? { identity } : {}),
    });
  }

  /**
   * Registers an incoming VM (its name reserved), loads its device state and runs it (or, with
   * `run` false, leaves it paused at that point: a restore). Resolves with the epoch
   * milliseconds at which its vCPU started (or the state was loaded).
   */
  async adoptAndRun(vm: Vm, state: MachineState, run = true): Promise<number> {
    this.vms.set(vm.name, vm);
    try {
      const at = await vm.runIncoming(state, run);
      if (run) vm.log.info('VM arrived by migration and runs');
      return at;
    } catch (err) {
      this.vms.delete(vm.name);
      throw err;
    } finally {
      this.changed();
    }
  }

  /**
   * Keeps vCPU threads from starting and warming up until the returned release is called: for a
   * migration, in or out, until its end (see VcpuThreadPool.hold).
   */
  holdSpares(): () => void {
    return this.threads.hold();
  }

  /**
   * Registers an incoming VM (its name reserved) whose vCPU thread took it over by switchover
   * and runs it. Logs nothing: the caller logs the arrival once its source had the CPU to finish.
   */
  adoptRunning(vm: Vm): void {
    this.vms.set(vm.name, vm);
    this.changed();
  }

  /**
   * An outgoing migration completed: the target runs the guest. The VM is `postmigrate` here at
   * once (it never resumes here) and leaves this instance once its vCPU thread stopped and its
   * blocks are unmapped — `keep` blocks (handed off by reference) without giving back their
   * lease or region. Resolves when it is gone; never rejects (a failed teardown is logged).
   */
  retire(vm: Vm, keep: (block: RamBacking) => boolean): Promise<void> {
    const gone = vm
      .becomePostmigrate(keep)
      .catch((err: unknown) =>
        vm.log.warn({ error: (err as Error).message }, 'postmigrate teardown failed'),
      )
      .then(() => vm.destroy('migrated away: the VM runs on the migration target'))
      .catch(() => undefined)
      .finally(() => {
        if (this.vms.get(vm.name) === vm) this.vms.delete(vm.name);
        if (this.retiring.get(vm.name) === gone) this.retiring.delete(vm.name);
        this.left(vm);
        this.changed();
      });
    this.retiring.set(vm.name, gone);
    return gone;
  }

  /**
   * Calls `listener` shortly after the set of this instance's VMs changed (created, arrived,
   * destroyed, migrated away); returns the unsubscribe function.
   */
  onVmsChanged(listener: () => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /**
   * Calls `listener` synchronously with each VM that leaves this instance (destroyed, or gone
   * after migrating away), once it stopped running; returns the unsubscribe function.
   */
  onVmLeft(listener: (vm: Vm) => void): () => void {
    this.leaveListeners.add(listener);
    return () => this.leaveListeners.delete(listener);
  }

  private left(vm: Vm): void {
    for (const l of this.leaveListeners) {
      try {
        l(vm);
      } catch (err) {
        this.opts.logger.warn({ error: (err as Error).message }, 'a VM-left listener failed');
      }
    }
  }

  /**
   * Tells the listeners of a change of the VM set: never inside the turn that made it (a
   * migration's answer goes out first), and a burst (a live update) costs one notice per
   * {@link CHANGE_NOTICE_INTERVAL_MS}, not one per change (see {@link ChangeNotice}).
   */
  private changed(): void {
    if (this.changeListeners.size === 0) return;
    this.changeNotice.changed();
  }

  private readonly changeNotice = new ChangeNotice(
    () => {
      for (const l of [...this.changeListeners]) {
        try {
          l();
        } catch (err) {
          this.opts.logger.warn({ error: (err as Error).message }, 'a VM-set listener failed');
        }
      }
    },
    CHANGE_NOTICE_DELAY_MS,
    CHANGE_NOTICE_INTERVAL_MS,
  );

  /**
   * ResumeVm: before a VM with shared RAM runs again, memstore must confirm that it still holds
   * every lease at its epoch; a VM whose lease moved is fenced for good.
   *
   * @throws VmmError `VMM_LEASE_LOST`, `VMM_MEMSTORE_UNAVAILABLE`, `VMM_INVALID_STATE`
   */
  async resume(name: string): Promise<VmInfo> {
    const vm = this.get(name);
    if (vm.currentState === 'paused' && vm.fenced === null) {
      const ctx = this.ramContext(name);
      for (const b of vm.ramBlocks) {
        if (b.spec.backend !== 'shared' || b.regionRef === null) continue;
        const ref = b.regionRef;
        const lease = await checkLease(ctx, ref);
        if (!lease.valid) {
          vm.fence(
            `memstore says the lease of region ${ref.regionName} moved to ` +
              `${lease.holder} at epoch ${lease.epoch} (ours: ${ref.epoch})`,
          );
        }
      }
    }
    return vm.resume();
  }

  /** @throws VmmError `VMM_VM_NOT_FOUND` */
  get(name: string): Vm {
    const vm = this.vms.get(name);
    if (vm === undefined || vm.destroyed) {
      throw new VmmError(
        'VMM_VM_NOT_FOUND',
        `no VM named ${name} on ${this.opts.vmmId}; list them with \`vmctl vm list\``,
      );
    }
    return vm;
  }

  /**
   * Every VM's name, spec and state, for the migrator's registry: unlike {@link VmHost.list},
   * no counters are read (a list counts every VM's dirty and touched pages).
   */
  hosted(): HostedVm[] {
    return [...this.vms.values()]
      .filter((vm) => !vm.destroyed)
      .map((vm) => ({ name: vm.name, spec: vm.spec, state: vm.currentState }));
  }

  /** Calls `fn` with every VM not being destroyed, in no order (metrics: no array is built). */
  forEachVm(fn: (vm: Vm) => void): void {
    for (const vm of this.vms.values()) if (!vm.destroyed) fn(vm);
  }

  /** Every VM, by name. */
  list(): VmInfo[] {
    const now = performance.now();
    return [...this.vms.values()]
      .filter((vm) => !vm.destroyed)
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((vm) => vm.info(now));
  }

  /** Destroys a VM (see {@link Vm.destroy}). @throws VmmError `VMM_VM_NOT_FOUND` */
  async destroy(name: string): Promise<void> {
    const vm = this.get(name);
    try {
      await vm.destroy();
    } finally {
      if (this.vms.get(name) === vm) this.vms.delete(name);
      this.left(vm);
      this.changed();
    }
  }

  /** VM counts for GetInfo and the migrator heartbeat, and the vCPU threads running them. */
  counts(): { total: number; running: number; vcpuThreads: number } {
    let running = 0;
    for (const vm of this.vms.values()) if (vm.currentState === 'running') running++;
    return { total: this.vms.size, running, vcpuThreads: this.threads.size };
  }

  /** The vCPU threads and how many VMs each runs (all, and busy ones). */
  vcpuReport(): VcpuPoolReport {
    return this.threads.report();
  }

  /**
   * Destroys every VM and releases the memstore client and lease channel. VMs do not outlive
   * their instance yet.
   */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sampler);
    this.changeNotice.cancel();
    await Promise.all(
      [...this.vms.keys()].map((name) => this.destroy(name).catch(() => undefined)),
    );
    await Promise.all(this.retiring.values());
    await this.threads.close(); // after the VMs: a thread that ends crashes the VMs it runs
    this.memstore.close();
  }
}

/**
 * Checks that every loadable segment of the guest lies inside one RAM block.
 *
 * @throws VmmError `VMM_INVALID_GUEST`
 */
export function checkImageFits(guest: string, image: ElfImage, ram: readonly RamBlockSpec[]): void {
  const entryInside = ram.some(
    (b) => image.entry >= b.guestBase && image.entry < b.guestBase + b.size,
  );
  if (!entryInside) {
    throw new VmmError(
      'VMM_INVALID_GUEST',
      `guest ${guest}: its entry point 0x${image.entry.toString(16)} is not inside the VM's RAM; ` +
        'link it at 0x80000000 (QEMU virt) or give the VM more memory',
    );
  }
  for (const seg of image.segments) {
    const inside = ram.some(
      (b) => seg.paddr >= b.guestBase && seg.paddr + seg.memsz <= b.guestBase + b.size,
    );
    if (!inside) {
      throw new VmmError(
        'VMM_INVALID_GUEST',
        `guest ${guest}: its segment at 0x${seg.paddr.toString(16)} (+${seg.memsz} bytes) is ` +
          "not inside the VM's RAM; link it at 0x80000000 (QEMU virt) or give the VM more memory",
      );
    }
  }
}
