/**
 * The protocol between the VM host (main thread) and the vCPU pool's worker threads. A pool
 * thread runs many VMs (scheduler.ts); each VM has its own control words, as below, and the
 * thread has one wake word for all of them.
 *
 * ```
 *  main thread (gRPC, VmHost, Vm)                 pool thread (thread.ts, scheduler.ts)
 *  ─────────────────────────────                  ────────────────────────────────────────
 *  per VM, control SAB (Int32Array, see Ctl):
 *    REQUEST ← run / pause / stop       ───────▶  read when its DOORBELL moved; the thread
 *    DOORBELL += 1, then the thread's WAKE         looks at the doorbells when WAKE moved (one
 *                                                  Atomics.load of WAKE per slice)
 *    HARVEST_REQ += 1                   ───────▶  swap the dirty buffers, HARVEST_ACK = req
 *    SAVE_REQ ← save id (after REQUEST) ───────▶  read before REQUEST, answered (`saved`) after the
 *                                                  run state applied: a save rung with a pause sees
 *                                                  the paused machine (one round trip for both)
 *    INSTRET (BigInt64)                 ◀───────  stored after every slice
 *    INPUT_TAKEN += n; notify           ◀───────  console bytes handed to the UART
 *    THROTTLE ← held share (1/10000)    ───────▶  read after every slice: the VM then waits
 *                                                  so that it ran only the rest of the time
 *  per thread, control SAB (ThreadCtl):
 *    WAKE += 1; futexWake when SLEEPING ───────▶  the one word the thread sleeps on (futexWaitAny,
 *                                                  with the switchover slots of its VMs)
 *    VMS, RUNNABLE, STARTED, WARM, TURNS ◀──────  what the pool places VMs by
 *  worker port, host → thread (ThreadCommand, drained with receiveMessageOnPort when WAKE moved):
 *    add (a VM's VcpuInit), cmd (a VM's VcpuCommand: input bytes, the device state of an
 *    incoming migration, the switchover slots), exit
 *  worker port, thread → host (ThreadMessage: a VM's id and its VcpuMessage, in order per VM):
 *    booted, state changes, output batches, ready, exit, fatal, replies, stopped
 * ```
 *
 * The thread never returns to its event loop while it lives: it runs its VMs' guests in short
 * slices and sleeps in one futex wait (the earliest WFI deadline as timeout, indefinitely when
 * every VM is paused or idle without a timer), so host requests reach it through shared memory
 * and the synchronous port read, never through 'message' events.
 */
import type { ControlIdentity } from '../devices/control.js';
import type { LeasePlan } from '../leases/thread-step.js';
import type { MachineState } from '../machine/state.js';
import type { SwitchoverOutcome } from '../switchover/outcome.js';

/** Int32 indices of a VM's control SharedArrayBuffer. */
export const Ctl = {
  /** Bumped by the host after every request (then it bumps its thread's wake word). */
  DOORBELL: 0,
  /** The run state the host wants: {@link Request}. */
  REQUEST: 1,
  /** Harvest sequence asked by the host. */
  HARVEST_REQ: 2,
  /** Last harvest sequence the thread completed (swapped buffers for). */
  HARVEST_ACK: 3,
  /** Which dirty buffer (0 or 1) the CPU marks now; the other is the last harvest's result. */
  DIRTY_ACTIVE: 4,
  /** Console bytes the thread has handed to the guest's UART (host flow control). */
  INPUT_TAKEN: 5,
  /** The VM's {@link RunCode} (diagnostics; the host follows the ordered messages). */
  RUN_CODE: 6,
  /** Id of the last save the host asked for; the thread answers each new id once. */
  SAVE_REQ: 7,
  /**
   * The share of each period the host holds the VM back (auto-converge), in 1/10000
   * (0: full speed, at most 9999); the thread reads it after every slice (throttle.ts).
   */
  THROTTLE: 12,
  /** Pages of lazy RAM the guest waited for since the VM was placed (bumped at each wait). */
  PAGE_WAITS: 13,
  /** While the guest waits for a page of lazy RAM: that page + 1; 0 otherwise. */
  PAGE_WAITING: 14,
  /** BigInt64 index: instructions retired (stored after every slice). */
  INSTRET64: 4,
  /** Float64 index: epoch milliseconds (timeOrigin + now) of the host's last pause request. */
  PAUSE_REQUESTED_AT: 5,
} as const;

/** Bytes of a VM's control buffer. */
export const CONTROL_BYTES = 64;

/** Values of {@link Ctl.REQUEST}. */
export const Request = {
  /** Stay as created (boot done, not started). */
  HOLD: 0,
  RUN: 1,
  PAUSE: 2,
  /** Stop the VM: its thread frees it and reports `stopped`. */
  STOP: 3,
} as const;

/** Values of {@link Ctl.RUN_CODE}. */
export const RunCode = {
  BOOTING: 0,
  CREATED: 1,
  RUNNING: 2,
  PAUSED: 3,
  POWERED_OFF: 4,
  CRASHED: 5,
  STOPPED: 6,
} as const;

/** Int32 indices of a pool thread's control SharedArrayBuffer. */
export const ThreadCtl = {
  /** Bumped by the host after every message and every request to one of the thread's VMs. */
  WAKE: 0,
  /** 1 while the thread sleeps: the host calls futexWake only then. */
  SLEEPING: 1,
  /** VMs the thread holds. */
  VMS: 2,
  /** VMs that want the CPU now (running and not waiting in WFI). */
  RUNNABLE: 3,
  /** 1 once the thread runs its loop. */
  STARTED: 4,
  /** 1 once the thread's warm-up is complete (spare.ts). */
  WARM: 5,
  /** Bumped on every turn of the thread's loop (it is alive and not stuck in one VM). */
  TURNS: 6,
} as const;

/** Bytes of a pool thread's control buffer. */
export const THREAD_CONTROL_BYTES = 64;

/** What a pool thread starts with (`workerData`). */
export interface PoolThreadData {
  readonly t: 'pool';
  /** Its index in the pool (logs). */
  readonly index: number;
  /** {@link ThreadCtl} words. */
  readonly control: SharedArrayBuffer;
  /**
   * Int32 word 0: not 0 while latency-critical work runs in this process (a migration in or
   * out). The thread's warm-up pauses then (it looks again every few milliseconds) so that it
   * does not take a CPU from that work; the VMs it runs are not affected.
   */
  readonly hush: SharedArrayBuffer;
}

/** Host → pool thread messages (read synchronously when {@link ThreadCtl.WAKE} moved). */
export type ThreadCommand =
  /** A VM placed on the thread: it boots it (or builds it to wait for an incoming state). */
  | { readonly t: 'add'; readonly id: number; readonly init: VcpuInit }
  /** A command for one of its VMs; the host rings the VM's doorbell after it. */
  | { readonly t: 'cmd'; readonly id: number; readonly cmd: VcpuCommand }
  /** End the thread (it holds no VM). */
  | { readonly t: 'exit' };

/** Pool thread → host: a message of one of its VMs. */
export interface ThreadMessage {
  readonly id: number;
  readonly m: VcpuMessage;
}

/** What a VM starts with (the `add` message). */
export interface VcpuInit {
  readonly name: string;
  readonly control: SharedArrayBuffer;
  /** Main RAM bytes (a libs/shm mapping's SharedArrayBuffer). */
  readonly ram: SharedArrayBuffer;
  readonly ramSize: number;
  /** Dirty buffers 0 and 1 and the touched bitmap, as [byteOffset, words] in `bitmaps`. */
  readonly bitmaps: SharedArrayBuffer;
  readonly dirty: readonly [number, number];
  readonly touched: number;
  readonly bitmapWords: number;
  /** RAM may hold old data (a reused region, a template): zero the image's pages before loading. */
  readonly ramNotZero: boolean;
  /**
   * Main RAM is lazy (post-copy): the present map of its pages (libs/bitmap present-map.ts,
   * a mapping of memstore's map file). A guest access to a page that has not arrived parks the
   * VM (`page-wait`) until the host rings its doorbell after the page arrived.
   */
  readonly present?: SharedArrayBuffer;
  readonly elf: Uint8Array;
  /**
   * Incoming migration: the machine is built without loading `elf` (RAM already holds the
   * guest) and waits for its device state — a `restore` command, or a switchover — then reports
   * `booted` with entry -1. The VM is placed early, off the migration's pause.
   */
  readonly incoming: boolean;
  readonly identity: ControlIdentity;
  readonly hostArgs: Uint8Array;
}

/** Host → VM commands (`cmd` messages to its pool thread). */
export type VcpuCommand =
  | { readonly t: 'input'; readonly bytes: Uint8Array }
  | { readonly t: 'restore'; readonly state: MachineState }
  /**
   * Incoming migration by switchover (switchover/slot.ts): wait for the device state in `slot`,
   * take the leases with `lease`, restore, and run if REQUEST is RUN; report `switchover`.
   */
  | { readonly t: 'switchover-in'; readonly slot: SharedArrayBuffer; readonly lease: LeasePlan }
  /**
   * Outgoing migration: the save with this id also publishes the state into `slot`, in the
   * compact state layout when `compact` (the target reads it), else as a snapshot container.
   */
  | {
      readonly t: 'switchover-out';
      readonly slot: SharedArrayBuffer;
      readonly saveId: number;
      readonly compact: boolean;
    };

/** A VM's run states, reported in order. */
export type VcpuRunState = 'created' | 'running' | 'paused' | 'powered-off' | 'crashed';

/** Pool thread → host messages of one VM ({@link ThreadMessage}). */
export type VcpuMessage =
  | { readonly t: 'booted'; readonly entry: number }
  /** Incoming migration: the machine is built and waits for its device state. */
  | { readonly t: 'spawned' }
  | { readonly t: 'boot-failed'; readonly message: string; readonly code: string }
  | {
      readonly t: 'state';
      readonly state: VcpuRunState;
      readonly instret: number;
      /** Epoch milliseconds (timeOrigin + now) when the worker entered the state. */
      readonly at: number;
      /** paused: ms from the host's request to the stop at an instruction boundary. */
      readonly latencyMs?: number;
      /** powered-off: the finisher's code; crashed: the reason. */
      readonly exitCode?: number;
      readonly exitKind?: 'pass' | 'fail' | 'reset';
      readonly error?: string;
    }
  | { readonly t: 'output'; readonly bytes: Uint8Array }
  | { readonly t: 'ready'; readonly tag: number }
  | {
      readonly t: 'saved';
      readonly id: number;
      /** null: not saved (`error` says why), or published into a switchover slot. */
      readonly state: MachineState | null;
      readonly error?: string;
      /** The state was published into the slot of a `switchover-out` command instead. */
      readonly published?: boolean;
    }
  | ({ readonly t: 'switchover' } & SwitchoverOutcome)
  /**
   * The guest touched a page of lazy RAM that has not arrived: the VM is parked (it costs no
   * CPU; the thread's other VMs run on). The host asks memstore for the page and rings the
   * doorbell once it is present. `sourcePaused`: the map said SourcePaused at the fault.
   */
  | {
      readonly t: 'page-wait';
      readonly block: string;
      readonly page: number;
      readonly sourcePaused: boolean;
    }
  /** The page of the last `page-wait` arrived: the VM runs again, `waitedUs` after it parked. */
  | { readonly t: 'page-arrived'; readonly page: number; readonly waitedUs: number }
  /** The VM is gone from its thread (stopped, or it never booted): its last message. */
  | { readonly t: 'stopped' };
