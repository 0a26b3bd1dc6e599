/**
 * The switchover as the two vCPU threads run it (README.md beside this file): the source's
 * thread publishes its device state into the slot at its stop; the target's thread takes it,
 * restores it, moves the leases and runs the guest — neither process's main thread is woken
 * inside the guest's pause. Called by the vCPU thread (vcpu/thread.ts) only.
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
  announceStop,
  awaitStop,
  awaitTakeover,
  finishSlot,
  publishState,
  SlotState,
  takeState,
} from './slot.js';

/** While an armed target waits for the source's stop, how often it looks for a stop request. */
const STOP_POLL_MS = 20;
/** How long the source's thread waits for the target's to take over before reporting the stop. */
const TAKEOVER_WAIT_MS = 100;

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

/**
 * Target's vCPU thread: one switchover. Prepares the lease step, sleeps until the source's stop,
 * takes the state and restores it into `m`, then moves the leases. `stopRequested` is asked
 * while it waits for the stop. Returns the take-over (the caller runs or holds the guest, then
 * calls {@link finishTakeOver}), or the failure to report.
 */
export function takeOver(
  m: Machine,
  arm: SwitchoverArm,
  stopRequested: () => boolean,
): TakenOver | FailedTakeOver {
  const { slot, lease } = arm;
  const none = lease.transfers.map(() => null);
  const fail = (
    o: Pick<SwitchoverOutcome, 'stage' | 'code' | 'message' | 'uncertain'> & {
      epochs?: readonly (number | null)[];
      stopAtMs?: number;
    },
  ): FailedTakeOver => ({ ok: false, runAtMs: 0, stopAtMs: 0, epochs: none, ...o });
  let link: LeaseStep;
  try {
    link = openLeaseStep(lease); // connected or mapped now, off the pause
  } catch (err) {
    abortSlot(slot);
    return fail({
      stage: 'connect',
      code: 'VMM_MEMSTORE_UNAVAILABLE',
      message: `memstore's lease step cannot be prepared: ${(err as Error).message}`,
    });
  }
  try {
    // An armed lease has nothing to do at the stop: sleep on until the state is there.
    const stopped = awaitStop(slot, STOP_POLL_MS, stopRequested, !link.early);
    if (stopped !== 'stopped') {
      link.close();
      return fail({ stage: 'aborted' });
    }
    const stopSeenAtMs = performance.timeOrigin + performance.now();
    // Over the lease channel the requests go out now, while the source saves, encodes and
    // publishes its state, and this thread decodes and restores it.
    if (link.early) link.send();
    const took = takeState(slot, lease.timeoutMs);
    let failure: Parameters<typeof fail>[0] | null = null;
    if (took.kind === 'state') {
      try {
        m.restore(decodeSwitchoverState(took.bytes));
      } catch (err) {
        failure = {
          stage: 'state',
          code: 'MIGRATION_BAD_STREAM',
          message: `the device state in the switchover slot does not load: ${(err as Error).message}`,
        };
      }
    } else {
      failure = {
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
    if (!link.early && failure === null) {
      try {
        failpoint('switchover-before-lease');
        link.send();
      } catch (err) {
        failure = { stage: 'state', code: 'VMM_VCPU_FAILED', message: (err as Error).message };
      }
    }
    // Always read the answers: which leases moved here decides what must be given back.
    const leased = link.receive();
    const leasedAtMs = performance.timeOrigin + performance.now();
    const stopAtMs = took.kind === 'state' ? took.stopAtMs : 0;
    if (failure === null && !leased.ok) {
      failure = {
        stage: 'lease',
        code: leased.code!,
        message: leased.message!,
        uncertain: leased.uncertain === true,
      };
    }
    if (failure === null) {
      try {
        failpoint('incoming-after-lease');
      } catch (err) {
        failure = { stage: 'state', code: 'VMM_VCPU_FAILED', message: (err as Error).message };
      }
    }
    if (failure !== null) {
      finishSlot(slot, SlotState.FAILED);
      link.close();
      return fail({ ...failure, epochs: leased.epochs, stopAtMs });
    }
    return {
      ok: true,
      arm,
      epochs: leased.epochs,
      stopAtMs,
      stopSeenAtMs,
      publishedAtMs: took.kind === 'state' ? took.publishedAtMs : 0,
      restoredAtMs,
      leasedAtMs,
      link,
    };
  } catch (err) {
    link.close();
    throw err;
  }
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
 * Source's vCPU thread, at its stop (`stopAtMs`, epoch ms) and before anything is posted: saves,
 * publishes the state into the slot (waking the target's thread) and sleeps until that thread
 * runs the guest or fails (at most {@link TAKEOVER_WAIT_MS}), so that this process's main
 * thread does not compete for the CPU with the target and memstore inside the pause. Returns
 * null when published; otherwise the saved state, which then travels on the stream.
 */
export function publishAtStop(
  m: Machine,
  out: SwitchoverPublish,
  stopAtMs: number,
): MachineState | null {
  const announced = announceStop(out.slot, stopAtMs); // the target may ask for the lease now
  const state = m.save();
  if (!announced) return state;
  let bytes: Uint8Array | null;
  try {
    bytes = out.compact ? encodeCompactState(state) : encodeDeviceState(state);
  } catch {
    bytes = null; // aborts the slot: the state goes on the stream, the lease comes back
  }
  if (!publishState(out.slot, bytes)) return state;
  awaitTakeover(out.slot, TAKEOVER_WAIT_MS);
  return null;
}

/** The state a source published: compact (the layout of this build) or a container. */
function decodeSwitchoverState(bytes: Uint8Array): MachineState {
  return isCompactState(bytes) ? decodeCompactState(bytes) : decodeDeviceState(bytes).state;
}
