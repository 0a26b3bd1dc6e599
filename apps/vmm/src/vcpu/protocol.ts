/**
 * The protocol between the VM host (main thread) and a vCPU worker thread.
 *
 * ```
 *  main thread (gRPC, VmHost, Vm)                 vCPU worker (thread.ts)  
 *  ─────────────────────────────                  ────────────────────────────
 *  control SAB (Int32Array, see Ctl):
 *    REQUEST ← run / pause / stop       ───────▶  read when DOORBELL moved (one Atomics.load
 *    DOORBELL += 1; Atomics.notify                 per slice; Atomics.wait on it when idle)
 *    HARVEST_REQ += 1                   ───────▶  swap the dirty buffers, HARVEST_ACK = req
 *    SAVE_REQ ← save id (after REQUEST) ───────▶  read before REQUEST, answered (`saved`) after the
 *                                                  run state applied: a save rung with a pause sees
 *                                                  the paused machine (one round trip for both)
 *    INSTRET (BigInt64)                 ◀───────  stored after every slice
 *    INPUT_TAKEN += n; notify           ◀───────  console bytes handed to the UART
 *  command port (MessagePort, drained by the worker with receiveMessageOnPort at the same
 *  DOORBELL check): input bytes, the device state of an incoming migration (restored, then
 *  REQUEST applies at once: RUN starts the guest before the boot is reported), and the
 *  switchover slots (../switchover: the source's thread publishes its saved state there; the
 *  target's thread sleeps on the slot's futex, takes the leases itself and runs).
 *  parentPort messages (worker → host, ordered): booted, state changes, output batches, ready,
 *  exit, fatal, replies.
 * ```
 *
 * The worker never returns to its event loop while it lives: it runs the guest in short slices
 * and sleeps in `Atomics.wait` (WFI with the timer's delay as timeout, or indefinitely while
 * paused / powered off), so host requests reach it through shared memory and the synchronous
 * port read, never through 'message' events.
 */
import type { MessagePort } from 'node:worker_threads';
import type { ControlIdentity } from '../devices/control.js';
import type { LeasePlan } from '../leases/thread-step.js';
import type { MachineState } from '../machine/state.js';
import type { SwitchoverOutcome } from '../switchover/outcome.js';

/** Int32 indices of the control SharedArrayBuffer. */
export const Ctl = {
  /** Bumped by the host after every request; the worker waits on it when idle. */
  DOORBELL: 0,
  /** The run state the host wants: {@link Request}. */
  REQUEST: 1,
  /** Harvest sequence asked by the host. */
  HARVEST_REQ: 2,
  /** Last harvest sequence the worker completed (swapped buffers for). */
  HARVEST_ACK: 3,
  /** Which dirty buffer (0 or 1) the CPU marks now; the other is the last harvest's result. */
  DIRTY_ACTIVE: 4,
  /** Console bytes the worker has taken from the command port (host flow control). */
  INPUT_TAKEN: 5,
  /** Worker's {@link RunCode} (diagnostics; the host follows the ordered messages). */
  RUN_CODE: 6,
  /** Id of the last save the host asked for; the worker answers each new id once. */
  SAVE_REQ: 7,
  /** BigInt64 index: instructions retired (stored after every slice). */
  INSTRET64: 4,
  /** Float64 index: epoch milliseconds (timeOrigin + now) of the host's last pause request. */
  PAUSE_REQUESTED_AT: 5,
} as const;

/** Bytes of the control buffer. */
export const CONTROL_BYTES = 64;

/** Values of {@link Ctl.REQUEST}. */
export const Request = {
  /** Stay as created (boot done, not started). */
  HOLD: 0,
  RUN: 1,
  PAUSE: 2,
  /** Leave the loop and end the thread. */
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

/** What the worker starts with (`workerData`). */
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
  readonly elf: Uint8Array;
  /**
   * Incoming migration: the machine is built without loading `elf` (RAM already holds the
   * guest) and waits for its device state — a `restore` command, or a switchover — then reports
   * `booted` with entry -1. The thread is started early, off the migration's pause.
   */
  readonly incoming: boolean;
  readonly identity: ControlIdentity;
  readonly hostArgs: Uint8Array;
  /** Host → worker commands (read synchronously by the worker). */
  readonly commands: MessagePort;
}

/** Host → worker commands on the command port. */
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

/** Worker run states reported in order. */
export type VcpuRunState = 'created' | 'running' | 'paused' | 'powered-off' | 'crashed';

/** Worker → host messages. */
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
  | { readonly t: 'stopped' };
