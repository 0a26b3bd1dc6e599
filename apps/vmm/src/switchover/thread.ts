/**
 * The switchover as the two vCPU threads run it (README.md beside this file): the source's
 * thread publishes its device state into the slot at its stop; the target's thread takes it,
 * restores it, moves the leases and runs the guest — neither process's main thread is woken
 * inside the guest's pause. Both threads run other VMs as well, so nothing here sleeps: each
 * step says which slot word the thread sleeps on (beside its own wake word) and what it waits
 * for. Called by the vCPU threads (vcpu/) only.
 *
 * @packageDocumentation
 */
import { failpoint } from '../failpoints.js';
import { openLeaseStep, type LeasePlan, type LeaseStep } from '../leases/thread-step.js';
import type { Machine } from '../machine/machine.js';
import type { MachineState } from '../machine/state.js';
import {
  decodeCompactState,
  encodeCompactState,
  isCompactState,
} from '../snapshot/compact-state.js';
import { decodeDeviceState, encodeDeviceState } from '../snapshot/device-state.js';
import type { SwitchoverOutcome } from './outcome.js';
import {
  abortSlot,
  announcedStop,
  announceStop,
  finishSlot,
  publishState,
  SLOT_STATE_OFFSET,
  slotState,
  SlotState,
  tryTakeState,
  type SlotTake,
} from './slot.js';

/** How long the source's thread waits for the target's to take over before reporting the stop. */
export const TAKEOVER_WAIT_MS = 100;

/** What the target's thread is armed with: the slot, and how it moves the leases. */
export interface SwitchoverArm {
  readonly slot: SharedArrayBuffer;
  readonly lease: LeasePlan;
}

/** What the source's thread publishes into: the slot, and whether the target reads compact state. */
export interface SwitchoverPublish {
  readonly slot: SharedArrayBuffer;
  readonly compact: boolean;
}

/** A switchover the target's thread completed up to the run: the leases are here, the state in. */
export interface TakenOver {
  readonly ok: true;
  readonly arm: SwitchoverArm;
  readonly epochs: readonly (number | null)[];
  readonly stopAtMs: number;
  readonly stopSeenAtMs: number;
  readonly publishedAtMs: number;
  readonly restoredAtMs: number;
  readonly leasedAtMs: number;
  /** Closed once the guest runs: unmapping the arms file costs cross-CPU work in the pause. */
  readonly link: LeaseStep;
}

/** A failed attempt, as reported: nothing of it runs here; the thread waits again. */
export type FailedTakeOver = SwitchoverOutcome & { readonly ok: false };

/** A word a vCPU thread sleeps on beside its own wake word: a slot's state and its last value. */
export interface SlotWord {
  readonly buffer: SharedArrayBuffer;
  readonly byteOffset: number;
  readonly expected: number;
}

/**
 * Target's vCPU thread: one switchover, stepped without blocking, since the thread runs other
 * VMs meanwhile. The constructor prepares the lease step; {@link IncomingSwitchover.poll}, called
 * whenever the thread looks (it sleeps on {@link IncomingSwitchover.word} with its wake word),
 * notices the source's stop, takes the state and restores it into the machine, then moves the
 * leases — that last part runs straight through once the state is there (the guest's pause).
 */
export class IncomingSwitchover {
  private link: LeaseStep | null = null;
  private opened: FailedTakeOver | null = null;
  /** `armed`: before the source's stop; `stopped`: the state is on its way. */
  private phase: 'armed' | 'stopped' = 'armed';
  private seen: number = SlotState.ARMED;
  private stopSeenAtMs = 0;
  /** performance.now() by which the state must be there, once stopped. */
  private takeBy = Infinity;

  constructor(
    private readonly m: Machine,
    readonly arm: SwitchoverArm,
  ) {
    try {
      this.link = openLeaseStep(arm.lease); // connected or mapped now, off the pause
    } catch (err) {
      abortSlot(arm.slot);
      this.opened = failure(arm, {
        stage: 'connect',
        code: 'VMM_MEMSTORE_UNAVAILABLE',
        message: `memstore's lease step cannot be prepared: ${(err as Error).message}`,
      });
    }
  }

  /** The slot's state word as last seen: a change (the source's stop, publish, abort) wakes. */
  get word(): SlotWord {
    return { buffer: this.arm.slot, byteOffset: SLOT_STATE_OFFSET, expected: this.seen };
  }

  /** performance.now() by which the thread must look again (the state's deadline), or Infinity. */
  get deadline(): number {
    return this.takeBy;
  }

  /**
   * One look: `waiting`, or how it ended — taken over (the caller runs or holds the guest, then
   * calls {@link finishTakeOver}) or failed (to report; nothing of it runs here). With
   * `stopRequested` a switchover still before the source's stop is given up.
   */
  poll(stopRequested: boolean): 'waiting' | TakenOver | FailedTakeOver {
    if (this.opened !== null) return this.opened;
    const link = this.link!;
    const { slot } = this.arm;
    try {
      if (this.phase === 'armed') {
        const s = (this.seen = slotState(slot));
        if (s === SlotState.ARMED) {
          if (stopRequested && abortSlot(slot)) return this.failed({ stage: 'aborted' });
          return 'waiting';
        }
        // An armed lease has nothing to do at the stop: sleep on until the state is there.
        if (s === SlotState.STOPPED && !link.early) return 'waiting';
        if (s === SlotState.ABORTED && !announcedStop(slot)) {
          return this.failed({ stage: 'aborted' });
        }
        this.stopSeenAtMs = performance.timeOrigin + performance.now();
        // Over the lease channel the requests go out now, while the source saves, encodes and
        // publishes its state, and this thread decodes and restores it.
        if (link.early) link.send();
        this.phase = 'stopped';
        this.takeBy = performance.now() + this.arm.lease.timeoutMs;
      }
      let took = tryTakeState(slot);
      if (took === null) {
        if (performance.now() < this.takeBy) {
          this.seen = SlotState.STOPPED;
          return 'waiting';
        }
        took = { kind: 'timed-out' };
      }
      const done = this.complete(link, took);
      if (done.ok) this.link = null; // the caller closes it once the guest runs
      return done;
    } catch (err) {
      this.closeLink();
      throw err;
    }
  }

  /** Gives the lease step back (the VM goes away while armed). Idempotent. */
  close(): void {
    this.closeLink();
  }

  /** The state is taken (or is not coming): restore it, move the leases. */
  private complete(link: LeaseStep, took: SlotTake): TakenOver | FailedTakeOver {
    const { slot, lease } = this.arm;
    let fail: FailureFields | null = null;
    if (took.kind === 'state') {
      try {
        this.m.restore(decodeSwitchoverState(took.bytes));
      } catch (err) {
        fail = {
          stage: 'state',
          code: 'MIGRATION_BAD_STREAM',
          message: `the device state in the switchover slot does not load: ${(err as Error).message}`,
        };
      }
    } else {
      fail = {
        stage: 'state',
        code: took.kind === 'invalid' ? 'MIGRATION_BAD_STREAM' : 'MIGRATION_FAILED',
        message:
          took.kind === 'invalid'
            ? took.reason
            : took.kind === 'aborted'
              ? "the source's vCPU thread could not publish the device state"
              : `the device state did not arrive within ${lease.timeoutMs} ms of the stop`,
      };
    }
    const restoredAtMs = performance.timeOrigin + performance.now();
    // Armed transfers flip only once the state is in: nothing moves for a state that fails.
    if (!link.early && fail === null) {
      try {
        failpoint('switchover-before-lease', this.m);
        link.send();
      } catch (err) {
        fail = { stage: 'state', code: 'VMM_VCPU_FAILED', message: (err as Error).message };
      }
    }
    // Always read the answers: which leases moved here decides what must be given back.
    const leased = link.receive();
    const leasedAtMs = performance.timeOrigin + performance.now();
    const stopAtMs = took.kind === 'state' ? took.stopAtMs : 0;
    if (fail === null && !leased.ok) {
      fail = {
        stage: 'lease',
        code: leased.code!,
        message: leased.message!,
        uncertain: leased.uncertain === true,
      };
    }
    if (fail === null) {
      try {
        failpoint('incoming-after-lease', this.m);
      } catch (err) {
        fail = { stage: 'state', code: 'VMM_VCPU_FAILED', message: (err as Error).message };
      }
    }
    if (fail !== null) {
      finishSlot(slot, SlotState.FAILED);
      return this.failed({ ...fail, epochs: leased.epochs, stopAtMs });
    }
    return {
      ok: true,
      arm: this.arm,
      epochs: leased.epochs,
      stopAtMs,
      stopSeenAtMs: this.stopSeenAtMs,
      publishedAtMs: took.kind === 'state' ? took.publishedAtMs : 0,
      restoredAtMs,
      leasedAtMs,
      link,
    };
  }

  private failed(f: FailureFields): FailedTakeOver {
    this.closeLink();
    return failure(this.arm, f);
  }

  private closeLink(): void {
    this.link?.close();
    this.link = null;
  }
}

/** What a failed take-over reports beside its defaults. */
type FailureFields = Pick<SwitchoverOutcome, 'stage'> &
  Partial<Pick<SwitchoverOutcome, 'code' | 'message' | 'uncertain' | 'epochs' | 'stopAtMs'>>;

function failure(arm: SwitchoverArm, f: FailureFields): FailedTakeOver {
  const none = arm.lease.transfers.map(() => null);
  return { ok: false, runAtMs: 0, stopAtMs: 0, epochs: none, ...f };
}

/**
 * Target's vCPU thread, the guest started (`runAtMs`, epoch ms) or held paused (`runAtMs` 0):
 * records RUNNING or HELD in the slot, waking the source's thread, and returns the outcome to
 * report. The caller closes `t.link` after reporting.
 */
export function finishTakeOver(
  t: TakenOver,
  runAtMs: number,
  takenAtMs: number,
): SwitchoverOutcome {
  finishSlot(t.arm.slot, runAtMs > 0 ? SlotState.RUNNING : SlotState.HELD, takenAtMs);
  return {
    ok: true,
    stage: 'run',
    epochs: t.epochs,
    runAtMs,
    stopAtMs: t.stopAtMs,
    stopSeenAtMs: t.stopSeenAtMs,
    publishedAtMs: t.publishedAtMs,
    restoredAtMs: t.restoredAtMs,
    leasedAtMs: t.leasedAtMs,
  };
}

/**
 * Source's vCPU thread, at its stop (`stopAtMs`, epoch ms) and before anything is posted: saves
 * and publishes the state into the slot (waking the target's thread). Returns the hand-over to
 * follow when published: the thread reports the stop only once it ended, so that this process's
 * main thread does not compete for the CPU with the target and memstore inside the pause, and
 * runs its other VMs meanwhile. Otherwise returns the saved state, which then travels on the
 * stream.
 */
export function publishAtStop(
  m: Machine,
  out: SwitchoverPublish,
  stopAtMs: number,
): { readonly published: false; readonly state: MachineState } | HandOver {
  const announced = announceStop(out.slot, stopAtMs); // the target may ask for the lease now
  const state = m.save();
  if (!announced) return { published: false, state };
  let bytes: Uint8Array | null;
  try {
    bytes = out.compact ? encodeCompactState(state) : encodeDeviceState(state);
  } catch {
    bytes = null; // aborts the slot: the state goes on the stream, the lease comes back
  }
  if (!publishState(out.slot, bytes)) return { published: false, state };
  return new HandOver(out.slot);
}

/**
 * Source's vCPU thread, after publishing: the target's thread has the state in hand (READY or
 * TAKEN) until it runs the guest or fails, at most {@link TAKEOVER_WAIT_MS}. The thread sleeps
 * on {@link HandOver.word} with its wake word and asks {@link HandOver.ended} when it looks.
 */
export class HandOver {
  readonly published = true;
  /** performance.now() after which the thread reports the stop anyway. */
  readonly deadline = performance.now() + TAKEOVER_WAIT_MS;
  private seen: number = SlotState.READY;

  constructor(private readonly slot: SharedArrayBuffer) {}

  /** The slot's state word as last seen. */
  get word(): SlotWord {
    return { buffer: this.slot, byteOffset: SLOT_STATE_OFFSET, expected: this.seen };
  }

  /** Whether the target's thread ran the guest, failed or gave up, or the wait is over. */
  ended(now = performance.now()): boolean {
    const s = (this.seen = slotState(this.slot));
    return (s !== SlotState.READY && s !== SlotState.TAKEN) || now >= this.deadline;
  }
}

/** The state a source published: compact (the layout of this build) or a container. */
function decodeSwitchoverState(bytes: Uint8Array): MachineState {
  return isCompactState(bytes) ? decodeCompactState(bytes) : decodeDeviceState(bytes).state;
}
