/**
 * The target's main thread prepares a switchover (README.md beside this file): it creates the
 * slot, records which VM it expects, and has memstore arm the lease transfers (or encodes them
 * for the lease channel). The caller hands {@link OfferedSwitchover.slot} and
 * {@link OfferedSwitchover.plan} to the waiting vCPU thread and the slot's path to the source.
 *
 * @packageDocumentation
 */
import type { Logger } from '@handoff/service';
import type { LeaseContext } from '../leases/calls.js';
import {
  armTransfers,
  channelTransfers,
  settleArms,
  type LeasedRegion,
} from '../leases/protocol.js';
import type { LeasePlan } from '../leases/thread-step.js';
import { SwitchoverSlot } from './slot.js';

/** One block of the VM a switchover moves (every block travels by reference). */
export interface SwitchoverBlock extends LeasedRegion {
  /** The block's id in the VM spec. */
  readonly id: string;
  readonly identity: string;
  readonly size: number;
  readonly guestBase: number;
}

/** A prepared switchover: the slot, the vCPU thread's lease step and what memstore armed. */
export interface OfferedSwitchover {
  readonly slot: SwitchoverSlot;
  readonly plan: LeasePlan;
  /** How the target's vCPU thread moves the leases. */
  readonly lease: 'armed' | 'channel';
  /** Regions whose transfer memstore armed (to settle afterwards, flipped or not). */
  readonly armed: readonly string[];
  /** The lease holder the transfers come from (the source's VM). */
  readonly from: string;
}

/**
 * Prepares a switchover for a VM arriving from lease holder `from` with `blocks`. Undefined
 * (the device state then comes on the stream; this is never a failure) when switchovers are off
 * here (`dir` null), memstore serves no lease channel, or the slot cannot be created.
 */
export async function offerSwitchover(
  dir: string | null,
  ctx: LeaseContext,
  blocks: readonly SwitchoverBlock[],
  from: string,
  log: Logger,
): Promise<OfferedSwitchover | undefined> {
  if (dir === null) return undefined;
  const socketPath = await ctx.leaseChannel();
  if (socketPath === null) {
    log.info('memstore serves no lease channel: the device state comes on the stream');
    return undefined;
  }
  const armed = await armTransfers(ctx, blocks, from, log);
  const lease = armed !== null ? 'armed' : 'channel';
  let slot: SwitchoverSlot | undefined;
  try {
    slot = SwitchoverSlot.create(dir, ctx.vmmId, ctx.vmName);
    slot.expect({
      from,
      lease,
      blocks: blocks.map((b) => ({
        id: b.id,
        regionId: b.regionId,
        identity: b.identity,
        epoch: b.epoch,
        size: b.size,
        guestBase: b.guestBase,
      })),
    });
  } catch (err) {
    slot?.close();
    if (armed !== null)
      settleArms(
        ctx,
        blocks.map((b) => b.regionId),
        log,
      ); // cancels them
    log.warn(
      { error: (err as Error).message, dir },
      'cannot create a switchover slot: the device state comes on the stream',
    );
    return undefined;
  }
  const timeoutMs = ctx.deadlineMs;
  let plan: LeasePlan;
  if (armed !== null) {
    plan = { kind: 'armed', armsPath: armed.armsPath, transfers: armed.transfers, timeoutMs };
  } else {
    let hello: Uint8Array;
    try {
      hello = await ctx.channelHello(); // the thread's connection is a session of its own
    } catch (err) {
      slot.close();
      log.warn(
        { error: (err as Error).message },
        'memstore opened no session for the switchover: the device state comes on the stream',
      );
      return undefined;
    }
    const transfers = channelTransfers(ctx, blocks, from);
    plan = { kind: 'channel', socketPath, hello, transfers, timeoutMs };
  }
  return {
    slot,
    plan,
    lease,
    armed: armed === null ? [] : blocks.map((b) => b.regionId),
    from,
  };
}
