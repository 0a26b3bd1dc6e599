import { PageBitmap, PresentState } from '@handoff/bitmap';
import type { Logger } from '@handoff/service';
import { ControlDevice, type ControlIdentity } from '../devices/control.js';
import type { GuestImage } from '../guests/catalog.js';
import type { LeasePlan } from '../leases/thread-step.js';
import type { MachineState } from '../machine/state.js';
import { PAGE_SHIFT } from '../memory/pages.js';
import type {
  VmEvent,
  VmEventKind,
  VmInfo,
  VmMemoryUsage,
  VmSpec,
  VmState,
  VmPostcopyInfo,
} from '../model/types.js';
import { VmmError } from '../model/vmm-error.js';
import { closeRamBlocks, type RamBacking } from '../ram/index.js';
import type { SwitchoverOutcome } from '../switchover/outcome.js';
import type { SwitchoverPublish } from '../switchover/thread.js';
import { PageRequests, type PostcopyWaits } from '../vcpu/page-requests.js';
import type { VcpuHandle, VcpuThreadPool } from '../vcpu/pool.js';
import {
  CONTROL_BYTES,
  Ctl,
  Request,
  type VcpuCommand,
  type VcpuInit,
  type VcpuMessage,
  type VcpuRunState,
} from '../vcpu/protocol.js';
import { hostArgsOf } from './spec.js';

/** How long a state change (start, pause, resume) may take before the vCPU counts as failed. */
const STATE_TIMEOUT_MS = 5000;
/** How long the worker may take to boot the guest (load the ELF). */
const BOOT_TIMEOUT_MS = 10_000;
/** How long a stop request may take before the thread is terminated. */
const STOP_TIMEOUT_MS = 2000;
/** Console output kept for consoles that attach later. */
export const CONSOLE_BACKLOG_BYTES = 64 * 1024;
/** MIPS is averaged over about this window. */
const MIPS_WINDOW_MS = 1000;

/** `Atomics.waitAsync` (ES2024; in Node 16+, not in this project's `lib`). */
type WaitAsync = (
  cells: Int32Array,
  index: number,
  value: number,
  timeoutMs?: number,
) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** Where console output goes; `end()` when the VM stops producing (powered off, destroyed). */
export interface ConsoleSink {
  write(bytes: Uint8Array): void;
  end(): void;
}

/** What a VM needs from its host. */
export interface VmDeps {
  readonly vmmId: string;
  readonly logger: Logger;
  /** The vCPU thread pool the VM is placed on. */
  readonly threads: VcpuThreadPool;
  /** Generation id and entropy; fresh random when omitted. */
  readonly identity?: ControlIdentity;
}

/**
 * One VM: its vCPU, run by one of the pool's threads over RAM mapped by this process, and the
 * host-side state the API reports. Control requests go through the control SharedArrayBuffer
 * (see `protocol.ts`); the thread reports state changes, output and READY in order through the
 * VM's handle, and this object turns them into {@link VmEvent}s.
 *
 * Dirty tracking: main RAM's dirty bitmap is double-buffered in a SharedArrayBuffer. The CPU
 * marks the active buffer with plain stores; {@link Vm.harvestDirty} clears the other one, asks
 * the worker to swap at its next slice boundary (or at once when idle) and waits for the
 * acknowledgement, whose Atomics store/load pair orders every guest store and mark before the
 * harvester's reads (the EpochDirtyLog contract, with the machine's own `swapDirty`).
 */
export class Vm {
  readonly name: string;
  readonly createdAt = new Date();
  /**
   * Booted here from a guest image (its instruction count started at 0 in this process); false
   * for a VM that arrived with a state (migration, restore, clone).
   */
  readonly bootedHere: boolean;
  readonly generationId: bigint;
  readonly log: Logger;
  private readonly vmmId: string;
  /** Main RAM first; a block's backing changes only by {@link Vm.replaceBlock}. */
  private ram: readonly RamBacking[];
  private currentSpec: VmSpec;
  /** The snapshot the VM runs from ({@link Vm.runsFrom}), or ''. */
  private snapshotName = '';
  private readonly worker: VcpuHandle;
  private readonly ctl: Int32Array;
  private readonly ctl64: BigInt64Array;
  private readonly ctlF64: Float64Array;
  private readonly dirty: readonly [PageBitmap, PageBitmap];
  private readonly touched: PageBitmap;
  private state: VmState = 'created';
  private exitCode = 0;
  private error = '';
  private ready = false;
  private lastPauseLatencyMs: number | null = null;
  /** Epoch ms at which the vCPU last entered `running` / `paused` (the worker's clock). */
  private lastRunAt = 0;
  private lastPauseAt = 0;
  /** Incoming migration: the machine is built ({@link Vm.spawned}). */
  private built: Promise<void> = Promise.resolve();
  /** The teardown of {@link Vm.becomePostmigrate}, which destroy() waits for. */
  private leaving: Promise<void> | undefined;
  private destroying: Promise<void> | undefined;
  private gone = false;
  /** Serializes start/pause/resume/harvest so requests never interleave. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly stateWaiters = new Set<(s: VcpuRunState | 'gone') => void>();
  private readonly listeners = new Set<(e: VmEvent) => void>();
  private readonly consoles = new Set<ConsoleSink>();
  private backlog: Uint8Array[] = [];
  private backlogBytes = 0;
  private inputSent = 0;
  private samples: { t: number; instret: number }[] = [];
  private saveId = 0;
  private readonly saves = new Map<number, (m: VcpuMessage & { t: 'saved' }) => void>();
  private workerExited: Promise<void>;
  /** The save that holds the run state ({@link Vm.beginSave}), or null. */
  private saveWindow: { readonly ended: Promise<void> } | null = null;
  /** Set once the VM migrated away (postmigrate): it never runs here again. */
  private migratedAway = false;
  /** Why the VM must not resume here (its lease moved), or null. */
  private fencedReason: string | null = null;
  /** Whether pages of main RAM outside {@link Vm.touchedPages} are known to be zero. */
  readonly untouchedAreZero: boolean;
  /** Main RAM is lazy (post-copy): the page requests of its vCPU's waits, else null. */
  private readonly pageRequests: PageRequests | null = null;

  private constructor(
    spec: VmSpec,
    ram: readonly RamBacking[],
    guest: GuestImage | null,
    deps: VmDeps,
    incoming?: { touched: PageBitmap | null },
  ) {
    this.name = spec.name;
    this.bootedHere = guest !== null;
    this.currentSpec = { ...spec, ram: ram.map((b) => b.spec) };
    this.vmmId = deps.vmmId;
    this.ram = ram;
    this.log = deps.logger;
    const identity = deps.identity ?? ControlDevice.randomIdentity();
    this.generationId = identity.generationId;
    const control = new SharedArrayBuffer(CONTROL_BYTES);
    this.ctl = new Int32Array(control);
    this.ctl64 = new BigInt64Array(control);
    this.ctlF64 = new Float64Array(control);
    const main = ram[0]!;
    const pages = main.spec.size >>> PAGE_SHIFT;
    const words = PageBitmap.wordCountFor(pages);
    const bytes = PageBitmap.byteLengthFor(pages);
    const bitmaps = new SharedArrayBuffer(3 * bytes);
    this.dirty = [
      new PageBitmap(pages, { buffer: bitmaps, byteOffset: 0 }),
      new PageBitmap(pages, { buffer: bitmaps, byteOffset: bytes }),
    ];
    this.touched = new PageBitmap(pages, { buffer: bitmaps, byteOffset: 2 * bytes });
    if (incoming !== undefined) {
      if (incoming.touched !== null) this.touched.copyFrom(incoming.touched);
      else this.touched.setAll();
    }
    this.untouchedAreZero = (incoming === undefined || incoming.touched !== null) && main.zeroed;
    const init: VcpuInit = {
      name: spec.name,
      control,
      ram: main.buffer,
      ramSize: main.spec.size,
      bitmaps,
      dirty: [0, bytes],
      touched: 2 * bytes,
      bitmapWords: words,
      ramNotZero: !main.zeroed,
      ...(main.lazy !== undefined ? { present: main.lazy.presentBuffer } : {}),
      elf: guest?.bytes ?? new Uint8Array(0),
      incoming: incoming !== undefined,
      identity,
      hostArgs: hostArgsOf(spec.args),
    };
    this.worker = deps.threads.take(init);
    if (main.lazy !== undefined) {
      this.pageRequests = new PageRequests({
        map: main.lazy.map,
        fetch: main.lazy.fetchPages,
        wake: () => this.ring(),
        logger: this.log,
      });
    }
    this.workerExited = new Promise((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.on('message', (m: VcpuMessage) => this.onMessage(m));
    this.worker.on('error', (err) => this.onWorkerGone(`vCPU thread failed: ${err.message}`));
    this.worker.on('exit', (code) => {
      if (this.destroying === undefined && !this.migratedAway)
        this.onWorkerGone(`vCPU thread exited (code ${code})`);
    });
  }

  /**
   * Starts the vCPU thread and boots the guest into `created` (loaded, not running). On failure
   * the thread is stopped; the caller still owns (and closes) `ram`.
   *
   * @throws VmmError `VMM_INVALID_GUEST` when the image does not load, `VMM_VCPU_FAILED`
   */
  static async boot(
    spec: VmSpec,
    ram: readonly RamBacking[],
    guest: GuestImage,
    deps: VmDeps,
  ): Promise<Vm> {
    const vm = new Vm(spec, ram, guest, deps);
    try {
      await vm.waitBoot();
      return vm;
    } catch (err) {
      vm.destroying = Promise.resolve(); // not a crash: the caller reports the boot failure
      vm.ring(Request.STOP);
      await vm.stopThread();
      throw err;
    }
  }

  /**
   * Starts the vCPU thread of an incoming migration early (off the downtime path): the machine
   * is built in the thread ({@link Vm.spawned}) and waits for its device state
   * ({@link Vm.runIncoming}, which may be called at once: the state waits in the command port). `zeroKnown`: main RAM starts zero and
   * the receiver marks {@link Vm.touchedPages} as pages arrive; otherwise every page counts as
   * touched. A thread that fails to build the machine fails `runIncoming`; the caller destroys
   * the VM on any failure and still owns `ram` until then.
   */
  static spawnIncoming(
    spec: VmSpec,
    ram: readonly RamBacking[],
    zeroKnown: boolean,
    deps: VmDeps,
  ): Vm {
    const touched = zeroKnown ? new PageBitmap(ram[0]!.spec.size >>> PAGE_SHIFT) : null;
    const vm = new Vm(spec, ram, null, deps, { touched });
    vm.built = vm.waitBoot('spawned');
    vm.built.catch(() => undefined); // also fails runIncoming, which the caller awaits
    return vm;
  }

  /**
   * Incoming migration: resolves once the vCPU thread built the machine (its per-page tables
   * grow with RAM size: ≈40 ms at 2 GiB), so that work stays out of the downtime.
   *
   * @throws VmmError `VMM_VCPU_FAILED` when the thread could not build it
   */
  spawned(): Promise<void> {
    return this.built;
  }

  /**
   * Incoming migration: loads the device state into the waiting machine and runs it, in one
   * round trip to the vCPU thread (the run request is set before the state is posted).
   * Resolves with the epoch milliseconds at which the vCPU started.
   *
   * With `run` false (a restore asked to stay paused) the state is loaded and the VM stays
   * `paused` at that point, its clock held; ResumeVm runs it. Resolves with the epoch
   * milliseconds at which it was loaded.
   *
   * @throws VmmError `VMM_VCPU_FAILED` when the state does not load or the thread is gone
   */
  runIncoming(state: MachineState, run = true): Promise<number> {
    return this.serial(async () => {
      this.assertAlive();
      const cmd: VcpuCommand = { t: 'restore', state };
      this.worker.command(cmd);
      // A guest that rang READY before it was saved (a template's clone) is past its ready point.
      if (state.control.readyCount > 0) this.ready = true;
      if (!run) {
        this.ring(); // REQUEST stays HOLD: loaded, not run
        await this.waitBoot();
        this.state = 'paused'; // the thread's `created`, shown as a pause at the snapshot point
        this.lastPauseAt = performance.timeOrigin + performance.now();
        return this.lastPauseAt;
      }
      // Rings at once; the replies are read on later turns of the event loop, after the boot
      // listeners are in place. The worker reports the start first, then the boot.
      const running = this.requestState(Request.RUN, (s) => s !== 'created');
      await Promise.all([this.waitBoot(), running]);
      if (this.state !== 'running') this.invalidState('start after the migration');
      return this.lastRunAt;
    });
  }

  /**
   * Incoming migration by switchover (switchover/README.md): arms the waiting vCPU thread on the
   * switchover `slot`. When the source's thread publishes the state there, this VM's thread
   * takes the leases with `lease`, restores and runs the guest without a word from this thread.
   * Resolves with how it ended; an outcome that is not `ok` leaves the VM waiting (for a
   * {@link Vm.runIncoming}, or a destroy). Abort the slot to end a wait.
   */
  armSwitchover(slot: SharedArrayBuffer, lease: LeasePlan): Promise<SwitchoverOutcome> {
    this.assertAlive();
    const outcome = new Promise<SwitchoverOutcome>((resolve) => {
      this.switchoverWaiter = resolve;
    });
    const cmd: VcpuCommand = { t: 'switchover-in', slot, lease };
    this.worker.command(cmd);
    this.ring(Request.RUN); // the thread runs the guest the moment the leases are here
    return outcome;
  }

  private switchoverWaiter: ((o: SwitchoverOutcome) => void) | undefined;

  private waitBoot(kind: 'booted' | 'spawned' = 'booted'): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new VmmError('VMM_VCPU_FAILED', `VM ${this.name}: the guest did not boot in time`));
      }, BOOT_TIMEOUT_MS);
      const onMessage = (m: VcpuMessage): void => {
        if (m.t === kind) {
          cleanup();
          resolve();
        } else if (m.t === 'boot-failed') {
          cleanup();
          reject(
            new VmmError(
              m.code === 'out-of-ram' || m.code === 'bad-header' || m.code === 'not-elf'
                ? 'VMM_INVALID_GUEST'
                : 'VMM_VCPU_FAILED',
              `VM ${this.name}: the guest ${this.spec.guest} does not boot: ${m.message}`,
            ),
          );
        }
      };
      const onExit = (): void => {
        cleanup();
        reject(new VmmError('VMM_VCPU_FAILED', `VM ${this.name}: the vCPU thread ended at boot`));
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        this.worker.off('message', onMessage);
        this.worker.off('exit', onExit);
      };
      this.worker.on('message', onMessage);
      this.worker.once('exit', onExit);
    });
  }

  // ---- requests ---------------------------------------------------------------------------

  /** Runs a created VM. Starting a running VM is a no-op. */
  start(): Promise<VmInfo> {
    return this.serial(async () => {
      this.assertAlive();
      if (this.state === 'running') return this.info();
      if (this.state !== 'created') {
        this.invalidState('start', this.state === 'paused' ? 'resume it instead' : undefined);
      }
      await this.requestState(Request.RUN, (s) => s !== 'created');
      return this.info();
    });
  }

  /**
   * A save takes the VM's run state until `end()`: meanwhile {@link Vm.pause} and
   * {@link Vm.resume} are refused (`VMM_INVALID_STATE`) — the save pauses and resumes the vCPU
   * through the returned `pause` and `resume` — and {@link Vm.destroy} waits for `end()`. For a
   * bypass save, whose guest runs on private mappings while memstore seals its regions: a pause
   * or resume from outside would leave it not knowing what to restore. `end()` is idempotent.
   *
   * @throws VmmError `VMM_INVALID_STATE` when a save has it already
   */
  beginSave(): { pause(): Promise<VmInfo>; resume(): Promise<VmInfo>; end(): void } {
    if (this.saveWindow !== null) {
      throw new VmmError('VMM_INVALID_STATE', `VM ${this.name} is being saved already`);
    }
    let end!: () => void;
    const ended = new Promise<void>((resolve) => (end = resolve));
    const window = { ended };
    this.saveWindow = window;
    return {
      pause: () => this.pauseNow(),
      resume: () => this.resumeNow(),
      end: () => {
        if (this.saveWindow === window) this.saveWindow = null;
        end();
      },
    };
  }

  /** @throws VmmError `VMM_INVALID_STATE` while a save holds the run state */
  private refuseWhileSaving(action: string): void {
    if (this.saveWindow === null) return;
    throw new VmmError(
      'VMM_INVALID_STATE',
      `cannot ${action} VM ${this.name}: it is being saved (its guest runs on while memstore ` +
        'records the snapshot); try again once the save has answered',
    );
  }

  /** Stops the vCPU at an instruction boundary. Pausing a paused VM is a no-op. */
  pause(): Promise<VmInfo> {
    this.refuseWhileSaving('pause');
    return this.pauseNow();
  }

  private pauseNow(): Promise<VmInfo> {
    return this.serial(async () => {
      this.assertAlive();
      if (this.state === 'paused') return this.info();
      if (this.state !== 'running') this.invalidState('pause');
      this.ctlF64[Ctl.PAUSE_REQUESTED_AT] = performance.timeOrigin + performance.now();
      await this.requestState(Request.PAUSE, (s) => s !== 'running');
      return this.info();
    });
  }

  /** Lets a paused VM run again. Resuming a running VM is a no-op. */
  resume(): Promise<VmInfo> {
    this.refuseWhileSaving('resume');
    return this.resumeNow();
  }

  private resumeNow(): Promise<VmInfo> {
    return this.serial(async () => {
      this.assertAlive();
      if (this.fencedReason !== null || this.migratedAway) {
        throw new VmmError(
          'VMM_LEASE_LOST',
          `VM ${this.name} must not resume here: ${this.fencedReason ?? 'it was migrated away'}; ` +
            'it runs (or may run) on the migration target; destroy it here',
        );
      }
      if (this.state === 'running') return this.info();
      if (this.state !== 'paused') {
        this.invalidState('resume', this.state === 'created' ? 'start it instead' : undefined);
      }
      await this.requestState(Request.RUN, (s) => s !== 'paused');
      return this.info();
    });
  }

  /**
   * Stops the vCPU thread, unmaps RAM and gives back leases / clone attachments, then emits
   * `destroyed` and ends every console and watcher. Idempotent. While a save holds the run
   * state ({@link Vm.beginSave}), it begins once that save has ended.
   */
  destroy(detail = 'the VM was destroyed'): Promise<void> {
    const saving = this.saveWindow;
    if (saving !== null && this.destroying === undefined) {
      return saving.ended.then(() => this.destroy(detail)); // the save settles first
    }
    this.destroying ??= (async () => {
      await this.leaving?.catch(() => undefined); // its blocks are unmapped their own way
      this.ring(Request.STOP);
      this.pageRequests?.close();
      await this.stopThread();
      await closeRamBlocks(this.ram);
      this.gone = true;
      for (const w of [...this.stateWaiters]) w('gone');
      this.emit('destroyed', detail);
      for (const c of this.consoles) c.end();
      this.consoles.clear();
      this.listeners.clear();
      this.log.info('VM destroyed');
    })();
    return this.destroying;
  }

  /** Hands bytes to the guest's UART (queued while the VM is not running). */
  input(bytes: Uint8Array): void {
    this.assertAlive();
    if (bytes.length === 0) return;
    const cmd: VcpuCommand = { t: 'input', bytes };
    this.worker.command(cmd);
    this.inputSent = (this.inputSent + bytes.length) | 0;
    this.ring();
  }

  /** Console bytes sent and not yet taken by the guest's UART. */
  inputPending(): number {
    return (this.inputSent - Atomics.load(this.ctl, Ctl.INPUT_TAKEN)) | 0;
  }

  /** Resolves once at most `limit` input bytes are pending (or the VM is gone). */
  async inputDrained(limit: number): Promise<void> {
    while (!this.gone && this.destroying === undefined && this.inputPending() > limit) {
      const taken = Atomics.load(this.ctl, Ctl.INPUT_TAKEN);
      if (this.inputPending() <= limit) return;
      const r = waitAsync(this.ctl, Ctl.INPUT_TAKEN, taken, 200);
      if (r.async) await r.value;
    }
  }

  /**
   * Harvests main RAM's dirty pages: the pages written since the previous harvest (or boot).
   * The bitmap belongs to the VM and stays valid until the next harvest. Works in every state
   * (a paused or idle vCPU answers at once).
   */
  harvestDirty(timeoutMs = 1000): Promise<PageBitmap> {
    return this.serial(async () => {
      this.assertAlive();
      const active = Atomics.load(this.ctl, Ctl.DIRTY_ACTIVE) & 1;
      const result = active === 0 ? this.dirty[0] : this.dirty[1];
      (active === 0 ? this.dirty[1] : this.dirty[0]).clearAll(); // the previous result
      const req = (Atomics.add(this.ctl, Ctl.HARVEST_REQ, 1) + 1) | 0;
      this.ring();
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const ack = Atomics.load(this.ctl, Ctl.HARVEST_ACK);
        if (ack === req) return result;
        const left = deadline - performance.now();
        if (left <= 0 || this.gone) {
          throw new VmmError(
            'VMM_VCPU_FAILED',
            `VM ${this.name}: the vCPU did not answer a dirty-page harvest within ${timeoutMs} ms`,
          );
        }
        const r = waitAsync(this.ctl, Ctl.HARVEST_ACK, ack, left);
        if (r.async) await r.value;
      }
    });
  }

  /**
   * Throttles the vCPU (auto-converge): its thread holds it back for `units`/10000 of each
   * period from its next slice on (0: full speed again, at once). Works in every state.
   */
  setCpuThrottle(units: number): void {
    const u = units > 0 ? Math.min(9999, Math.round(units)) : 0;
    if (this.gone || Atomics.exchange(this.ctl, Ctl.THROTTLE, u) === u) return;
    this.worker.wake(); // a thread asleep until a hold ends looks again
  }

  /** The vCPU's throttle now, 1/10000 (see {@link Vm.setCpuThrottle}). */
  get cpuThrottle(): number {
    return Atomics.load(this.ctl, Ctl.THROTTLE);
  }

  /** The index of the pool thread that runs the VM's vCPU. */
  get vcpuThread(): number {
    return this.worker.threadIndex;
  }

  /** The VM's RAM blocks, in table order (block 0 is main RAM, the only dirty-tracked one). */
  get ramBlocks(): readonly RamBacking[] {
    return this.ram;
  }

  /** The VM's spec, its blocks as they are backed now. */
  get spec(): VmSpec {
    return this.currentSpec;
  }

  /** Epoch milliseconds at which the vCPU last started running (0: never). */
  get lastRunAtMs(): number {
    return this.lastRunAt;
  }

  /** Epoch milliseconds at which the vCPU last stopped (0: never). */
  get lastPauseAtMs(): number {
    return this.lastPauseAt;
  }

  /**
   * Puts `backing` in place of block `k`'s: the same memory (the vCPU's buffer) backed another
   * way — a bypass save's shared block become clone RAM of the sealed region. The spec follows.
   * The old backing is the caller's (spent, or closed by it).
   *
   * @throws VmmError `VMM_INVALID_STATE` when `backing` is not the block's memory
   */
  replaceBlock(k: number, backing: RamBacking): void {
    const old = this.ram[k];
    if (old === undefined || old.buffer !== backing.buffer || old.spec.id !== backing.spec.id) {
      throw new VmmError(
        'VMM_INVALID_STATE',
        `VM ${this.name}: block ${k} can only be re-backed by its own memory`,
      );
    }
    this.ram = this.ram.map((b, i) => (i === k ? backing : b));
    this.currentSpec = { ...this.currentSpec, ram: this.ram.map((b) => b.spec) };
  }

  /** Records the snapshot the VM runs from (restored, cloned, or saved in place). */
  runsFrom(snapshot: string): void {
    this.snapshotName = snapshot;
  }

  /**
   * What the VM's RAM mappings cost now, summed over its blocks (reads `/proc/self/smaps`
   * once per block: for GetVm, not for lists).
   */
  memoryUsage(): VmMemoryUsage {
    let pss = 0;
    let privateDirty = 0;
    let rss = 0;
    for (const b of this.ram) {
      const u = b.memoryUsage?.() ?? null;
      if (u === null) continue;
      pss += u.pss;
      privateDirty += u.privateDirty;
      rss += u.rss;
    }
    return { pss, privateDirty, rss };
  }

  /** Main-RAM pages written since boot (or since the incoming migration). Live view. */
  get touchedPages(): PageBitmap {
    return this.touched;
  }

  /** Why this VM must never resume here, or null. */
  get fenced(): string | null {
    return this.fencedReason;
  }

  /** Refuses every later resume (its shared-RAM lease moved or may have moved). */
  fence(reason: string): void {
    this.fencedReason ??= reason;
    this.log.warn({ reason }, 'VM fenced: it will not resume here');
  }

  /**
   * Outgoing migration completed: the target runs the guest. From this call on the VM is
   * `postmigrate` and never resumes here; the returned promise is the teardown: stop the vCPU
   * thread, unmap every block without giving back what moved (`abandon` for blocks handed off
   * by reference, `close` for the others). VmHost.retire then removes the VM.
   */
  becomePostmigrate(keep: (block: RamBacking) => boolean): Promise<void> {
    this.assertAlive();
    this.migratedAway = true;
    this.fencedReason ??= 'it was migrated away';
    this.state = 'postmigrate';
    this.logAfterTurn('VM migrated away (postmigrate)');
    this.emit('paused', 'migrated away: postmigrate, never resumes here');
    this.leaving ??= this.serial(async () => {
      this.ring(Request.STOP);
      await this.stopThread();
      for (let k = this.ram.length - 1; k >= 0; k--) {
        const b = this.ram[k]!;
        if (keep(b)) b.abandon();
        else await b.close();
      }
    });
    return this.leaving;
  }

  /**
   * Outgoing migration: pauses the vCPU and saves the device state in one round trip (the save
   * is answered right after the pause, at the same instruction boundary). `onPaused` runs as
   * soon as the vCPU stopped, before the state is copied out. A paused VM is only saved. With
   * `publish`, the vCPU thread publishes the state into that switchover slot at its stop
   * instead (`published`), or, when it cannot, answers with the state as usual.
   *
   * @returns the state (unless published) and the epoch milliseconds at which the vCPU stopped
   * @throws VmmError `VMM_INVALID_STATE`, `VMM_VCPU_FAILED`
   */
  pauseAndSave(
    onPaused?: (pausedAtMs: number) => void,
    publish?: SwitchoverPublish,
  ): Promise<
    | { published: false; state: MachineState; pausedAtMs: number }
    | { published: true; pausedAtMs: number }
  > {
    return this.serial(async () => {
      this.assertAlive();
      const wasRunning = this.state === 'running';
      if (!wasRunning && this.state !== 'paused') this.invalidState('pause');
      const id = ++this.saveId;
      const reply = new Promise<VcpuMessage & { t: 'saved' }>((resolve) =>
        this.saves.set(id, resolve),
      );
      if (publish !== undefined) {
        // Read at the same doorbell as the pause: the thread publishes the state it saves.
        const cmd: VcpuCommand = { t: 'switchover-out', ...publish, saveId: id };
        this.worker.command(cmd);
      }
      // Rung with the pause (one round trip, no command message), stored after the request it
      // goes with: the worker reads SAVE_REQ before REQUEST at a doorbell.
      if (wasRunning) Atomics.store(this.ctl, Ctl.REQUEST, Request.PAUSE);
      Atomics.store(this.ctl, Ctl.SAVE_REQ, id);
      let pausedAtMs = performance.timeOrigin + performance.now();
      if (wasRunning) {
        this.ctlF64[Ctl.PAUSE_REQUESTED_AT] = pausedAtMs;
        await this.requestState(Request.PAUSE, (s) => s !== 'running');
        if (this.state !== 'paused') this.invalidState('pause it for the migration');
        pausedAtMs = this.lastPauseAt;
      } else {
        this.ring();
      }
      onPaused?.(pausedAtMs);
      const m = await withTimeout(reply, STATE_TIMEOUT_MS, () => this.saves.delete(id));
      if (m.published === true) return { published: true, pausedAtMs };
      if (m.state === null) {
        throw new VmmError('VMM_INVALID_STATE', `VM ${this.name}: ${m.error ?? 'cannot save'}`);
      }
      return { published: false, state: m.state, pausedAtMs };
    });
  }

  // ---- observation ------------------------------------------------------------------------

  /** A snapshot of the VM for GetVm / ListVms / events. */
  info(now = performance.now()): VmInfo {
    const instret = this.instret();
    const activeDirty =
      (Atomics.load(this.ctl, Ctl.DIRTY_ACTIVE) & 1) === 0 ? this.dirty[0] : this.dirty[1];
    return {
      name: this.name,
      vmmId: this.vmmId,
      state: this.state,
      spec: this.spec,
      ram: this.ram.map((b, k) => ({
        spec: b.spec,
        dirtyPages: k === 0 ? activeDirty.popcount() : 0,
        touchedPages: k === 0 ? this.touched.popcount() : 0,
        regionRef: b.regionRef,
      })),
      instret,
      mips: this.mips(now, instret),
      exitCode: this.exitCode,
      error: this.error,
      createdAt: this.createdAt,
      generationId: this.generationId,
      ready: this.ready,
      lastPauseLatencyMs: this.lastPauseLatencyMs,
      snapshot: this.snapshotName,
      ...this.postcopyInfo(),
    };
  }

  /** `{ postcopy }` while main RAM is a lazy region whose fill is not complete; else `{}`. */
  private postcopyInfo(): { postcopy?: VmPostcopyInfo } {
    const map = this.ram[0]?.lazy?.map;
    if (map === undefined || map.state === PresentState.Complete) return {};
    const w = this.postcopyWaits();
    const paused = map.state === PresentState.SourcePaused;
    return {
      postcopy: {
        presentPages: map.presentPages,
        totalPages: map.pages,
        waiting: (w?.waiting ?? 0) > 0,
        pageWaited: Math.max(0, w?.page ?? -1),
        sourcePaused: paused,
        pagesWaited: w?.pagesWaited ?? 0,
        faultP50Us: Math.round(w?.p50Us ?? 0),
        faultP99Us: Math.round(w?.p99Us ?? 0),
      },
    };
  }

  get currentState(): VmState {
    return this.state;
  }

  /** Whether {@link Vm.destroy} has begun. */
  get destroyed(): boolean {
    return this.destroying !== undefined;
  }

  /** Subscribes to lifecycle events; returns the unsubscribe function. */
  watch(listener: (e: VmEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Attaches a console: it first gets the backlog (the last {@link CONSOLE_BACKLOG_BYTES} of
   * output), then live output; it is ended when the VM powers off, crashes or is destroyed.
   * Returns the detach function.
   */
  attachConsole(sink: ConsoleSink): () => void {
    if (this.backlogBytes > 0) sink.write(concat(this.backlog, this.backlogBytes));
    if (this.gone || this.state === 'powered-off' || this.state === 'crashed') {
      sink.end();
      return () => {};
    }
    this.consoles.add(sink);
    return () => this.consoles.delete(sink);
  }

  /** Records an instret sample for MIPS (the host calls this a few times a second). */
  sample(now = performance.now()): void {
    if (this.state !== 'running') {
      this.samples.length = 0;
      return;
    }
    this.samples.push({ t: now, instret: this.instret() });
    while (this.samples.length > 2 && now - this.samples[1]!.t >= MIPS_WINDOW_MS) {
      this.samples.shift();
    }
  }

  private instret(): number {
    return Number(Atomics.load(this.ctl64, Ctl.INSTRET64));
  }

  /** Instructions the guest retired so far (metrics; one atomic load, no allocation). */
  retiredInstructions(): number {
    return this.instret();
  }

  /** The guest's recent MIPS, as {@link Vm.info} reports it (metrics; no allocation). */
  currentMips(now = performance.now()): number {
    return this.mips(now, this.instret());
  }

  private mips(now: number, instret: number): number {
    if (this.state !== 'running') return 0;
    const first = this.samples[0];
    if (first === undefined || now - first.t < 10) return 0;
    return (instret - first.instret) / (now - first.t) / 1000;
  }

  /**
   * Post-copy: the guest's waits for pages of its lazy main RAM (pages waited for, a wait in
   * progress, whether it waits on a paused source — `postcopy-paused` — and the fault latency
   * the guest saw, p50/p99). Null when main RAM is not lazy.
   */
  postcopyWaits(): PostcopyWaits | null {
    return this.pageRequests?.waits() ?? null;
  }

  // ---- worker plumbing --------------------------------------------------------------------

  private ring(request?: number): void {
    if (request !== undefined) Atomics.store(this.ctl, Ctl.REQUEST, request);
    Atomics.add(this.ctl, Ctl.DOORBELL, 1);
    this.worker.wake();
  }

  private async requestState(request: number, done: (s: VcpuRunState) => boolean): Promise<void> {
    const reached = new Promise<void>((resolve, reject) => {
      const waiter = (s: VcpuRunState | 'gone'): void => {
        if (s === 'gone') {
          this.stateWaiters.delete(waiter);
          reject(new VmmError('VMM_VCPU_FAILED', `VM ${this.name}: the vCPU thread is gone`));
        } else if (done(s)) {
          this.stateWaiters.delete(waiter);
          resolve();
        }
      };
      this.stateWaiters.add(waiter);
    });
    this.ring(request);
    await withTimeout(reached, STATE_TIMEOUT_MS, () => undefined).catch((err: unknown) => {
      if (VmmError.is(err)) throw err;
      throw new VmmError(
        'VMM_VCPU_FAILED',
        `VM ${this.name}: the vCPU did not answer within ${STATE_TIMEOUT_MS} ms`,
      );
    });
  }

  private onMessage(m: VcpuMessage): void {
    switch (m.t) {
      case 'output':
        this.onOutput(m.bytes);
        return;
      case 'state':
        this.onState(m);
        return;
      case 'ready':
        this.ready = true;
        this.log.info({ tag: m.tag }, 'guest rang READY');
        this.emit('ready', `READY doorbell, tag ${m.tag}`);
        return;
      case 'saved':
        this.saves.get(m.id)?.(m);
        this.saves.delete(m.id);
        return;
      case 'page-wait':
      case 'page-arrived':
        this.pageRequests?.onMessage(m);
        return;
      case 'switchover': {
        const waiter = this.switchoverWaiter;
        this.switchoverWaiter = undefined;
        waiter?.(m);
        return;
      }
      default:
        return;
    }
  }

  private onState(m: VcpuMessage & { t: 'state' }): void {
    const before = this.state;
    this.state = this.migratedAway ? 'postmigrate' : m.state;
    switch (m.state) {
      case 'running':
        this.lastRunAt = m.at;
        this.samples.length = 0;
        this.sample();
        if (before === 'created') {
          this.logAfterTurn('VM started');
          this.emit('started', 'the vCPU runs');
        } else {
          this.logAfterTurn('VM resumed');
          this.emit('resumed', 'the vCPU runs again');
        }
        break;
      case 'paused':
        this.lastPauseAt = m.at;
        this.lastPauseLatencyMs = m.latencyMs ?? null;
        this.logAfterTurn('VM paused', { instret: m.instret, pauseLatencyMs: m.latencyMs });
        this.emit('paused', `stopped at an instruction boundary after ${m.instret} instructions`);
        break;
      case 'powered-off': {
        this.exitCode = m.exitCode ?? 0;
        const detail =
          m.exitKind === 'reset'
            ? 'the guest asked for a reset; powered off'
            : `exit code ${this.exitCode}`;
        this.log.info({ exitCode: this.exitCode, instret: m.instret }, 'VM powered off');
        this.emit('powered-off', detail);
        this.endConsoles();
        break;
      }
      case 'crashed':
        this.error = m.error ?? 'the vCPU stopped';
        this.log.warn({ error: this.error }, 'VM crashed');
        this.emit('guest-error', this.error);
        this.endConsoles();
        break;
      case 'created':
        break;
    }
    for (const w of [...this.stateWaiters]) w(m.state);
  }

  private onOutput(bytes: Uint8Array): void {
    this.backlog.push(bytes);
    this.backlogBytes += bytes.length;
    while (this.backlogBytes - this.backlog[0]!.length >= CONSOLE_BACKLOG_BYTES) {
      this.backlogBytes -= this.backlog.shift()!.length;
    }
    if (this.backlog.length > 64) {
      const all = concat(this.backlog, this.backlogBytes);
      this.backlog = [all];
    }
    for (const c of this.consoles) c.write(bytes);
  }

  private onWorkerGone(reason: string): void {
    if (this.destroying !== undefined || this.gone) return;
    this.gone = true;
    if (this.state !== 'powered-off') {
      this.state = 'crashed';
      this.error = reason;
      this.log.error({ error: reason }, 'VM crashed');
      this.emit('guest-error', reason);
    }
    for (const w of [...this.stateWaiters]) w('gone');
    this.switchoverWaiter?.({
      ok: false,
      stage: 'aborted',
      epochs: [],
      runAtMs: 0,
      stopAtMs: 0,
      code: 'VMM_VCPU_FAILED',
      message: reason,
    });
    this.switchoverWaiter = undefined;
    this.endConsoles();
  }

  private async stopThread(): Promise<void> {
    const timer = setTimeout(() => {
      this.log.warn('the vCPU thread did not stop in time; terminating it');
      void this.worker.terminate();
    }, STOP_TIMEOUT_MS);
    await this.workerExited;
    clearTimeout(timer);
  }

  private endConsoles(): void {
    for (const c of this.consoles) c.end();
    this.consoles.clear();
  }

  /**
   * An info line about a run-state change, written once the current turn is over: whatever
   * waits for the change (a migration's next step, a resume's answer) goes first. Lines keep
   * their order.
   */
  private logAfterTurn(msg: string, fields?: Record<string, unknown>): void {
    setImmediate(() => this.log.info(fields ?? {}, msg));
  }

  private emit(kind: VmEventKind, detail: string): void {
    if (this.listeners.size === 0) return;
    const event: VmEvent = { kind, at: new Date(), vm: this.info(), detail };
    for (const l of [...this.listeners]) l(event);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private assertAlive(): void {
    if (this.destroying !== undefined) {
      throw new VmmError('VMM_VM_NOT_FOUND', `VM ${this.name} is being destroyed`);
    }
  }

  private invalidState(action: string, hint?: string): never {
    const what =
      this.state === 'powered-off'
        ? `it is powered off (exit code ${this.exitCode}); destroy it and create it again`
        : this.state === 'crashed'
          ? `it crashed (${this.error}); destroy it`
          : `it is ${this.state}`;
    throw new VmmError(
      'VMM_INVALID_STATE',
      `cannot ${action} VM ${this.name}: ${what}${hint !== undefined ? `; ${hint}` : ''}`,
    );
  }
}

function concat(chunks: readonly Uint8Array[], total: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

async function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`timed out after ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
