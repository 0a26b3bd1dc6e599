/**
 * How a migrating VM's region leases move, both ends, in one place (the vCPU thread's part of a
 * switchover is thread-step.ts). memstore grants `{region, holder, epoch}`; every move below is
 * a compare-and-set on the epoch, so a lease can never be held by two VMs:
 *
 * - **take** (target): TransferLease source → target at the source's epoch (epoch + 1).
 * - **arm** (target, ahead of a switchover): memstore checks the transfer now and records it in
 *   a word of its arms file; the target's vCPU thread completes it with one compare-and-set.
 * - **settle**: memstore commits a flipped arm and cancels an unflipped one.
 * - **hand back** (a target that failed): TransferLease target → source, so the source can
 *   re-take its lease and run again.
 * - **re-take** (a source that failed after its stop): TransferLease self → self (epoch + 1),
 *   which fences any transfer the target may still present.
 * - **check** (a paused source about to resume): ValidateLease.
 *
 * @packageDocumentation
 */
import { memstore as pb } from '@handoff/proto';
import { isCodedError, type Logger } from '@handoff/service';
import { byId, holderOf, memstoreCall, unreachable, type LeaseContext } from './calls.js';
import type { ArmedTransfer, LeaseTransfer } from './thread-step.js';

/** How long a failed source waits for a failing target to hand a taken lease back. */
const HANDBACK_WAIT_MS = 3000;

/** One region whose lease a migration moves, at the epoch its holder holds it. */
export interface LeasedRegion {
  readonly regionId: string;
  readonly regionName: string;
  readonly epoch: number;
}

/** Where a source's lease stands after {@link retakeLease}. */
export type RetakeOutcome =
  | { readonly kind: 'ours'; readonly epoch: number }
  | { readonly kind: 'moved' }
  | { readonly kind: 'unknown' };

/**
 * Source, after a failure past its stop: compare-and-set of its own lease to itself (epoch + 1).
 * Afterwards no transfer that presents the old epoch can succeed. When the epoch moved but the
 * lease is ours again (a failing target handed it back), the CAS is retried at the current
 * epoch; a lease held elsewhere is watched for {@link HANDBACK_WAIT_MS} before it counts as
 * moved. `unknown`: memstore did not answer.
 */
export async function retakeLease(ctx: LeaseContext, r: LeasedRegion): Promise<RetakeOutcome> {
  const holder = holderOf(ctx);
  const opts = { deadlineMs: ctx.deadlineMs };
  const cas = async (epoch: bigint): Promise<number> => {
    const res = await ctx
      .leases()
      .transferLease(
        { region: byId(r.regionId), fromHolder: holder, expectedEpoch: epoch, toHolder: holder },
        opts,
      );
    return Number(res.lease!.epoch);
  };
  try {
    return { kind: 'ours', epoch: await cas(BigInt(r.epoch)) };
  } catch (e) {
    if (unreachable(e)) return { kind: 'unknown' };
  }
  // A target that failed after taking the lease hands it back: wait a little for that before
  // calling the lease moved for good.
  const deadline = performance.now() + HANDBACK_WAIT_MS;
  for (;;) {
    try {
      const res = await ctx
        .leases()
        .validateLease({ region: byId(r.regionId), holder, epoch: BigInt(r.epoch) }, opts);
      if (res.current?.holder === holder) {
        return { kind: 'ours', epoch: await cas(res.current.epoch) };
      }
    } catch (e) {
      if (unreachable(e)) return { kind: 'unknown' };
    }
    if (performance.now() >= deadline) return { kind: 'moved' };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Target: takes one region's lease from `from` at the region's epoch (epoch + 1). Resolves with
 * the new epoch.
 *
 * @throws VmmError `VMM_MEMSTORE_UNAVAILABLE`, or memstore's code (e.g. LEASE_EPOCH_MISMATCH)
 */
export async function takeLease(ctx: LeaseContext, r: LeasedRegion, from: string): Promise<number> {
  const res = await memstoreCall(ctx, `taking over the lease of region ${r.regionName}`, () =>
    ctx.leases().transferLease(
      {
        region: byId(r.regionId),
        fromHolder: from,
        expectedEpoch: BigInt(r.epoch),
        toHolder: holderOf(ctx),
      },
      { deadlineMs: ctx.deadlineMs },
    ),
  );
  return Number(res.lease!.epoch);
}

/**
 * Target, after a failed incoming migration: gives each region's lease this VM holds back to
 * `to` (the source), so that it can re-take its lease and resume. Failures are logged; the
 * source then finds the lease moved and stays paused.
 */
export async function handBack(
  ctx: LeaseContext,
  regionIds: readonly string[],
  to: string,
  log: Logger,
): Promise<void> {
  const me = holderOf(ctx);
  const opts = { deadlineMs: ctx.deadlineMs };
  for (const id of regionIds) {
    try {
      const held = (await ctx.leases().getRegion({ region: byId(id) }, opts)).region?.lease;
      if (held !== undefined && held.holder === me) {
        await ctx
          .leases()
          .transferLease(
            { region: byId(id), fromHolder: me, expectedEpoch: held.epoch, toHolder: to },
            opts,
          );
      }
    } catch (err) {
      log.warn({ error: (err as Error).message }, 'could not hand the lease back to the source');
    }
  }
}

/**
 * Target, ahead of a switchover: asks memstore to arm the transfer of every region's lease from
 * `from` to this VM. Null when it cannot arm them all (those armed are settled again, i.e.
 * cancelled): the switchover then uses TransferLease over the lease channel.
 */
export async function armTransfers(
  ctx: LeaseContext,
  regions: readonly LeasedRegion[],
  from: string,
  log: Logger,
): Promise<{ readonly armsPath: string; readonly transfers: ArmedTransfer[] } | null> {
  const to = holderOf(ctx);
  const transfers: ArmedTransfer[] = [];
  let armsPath = '';
  try {
    for (const r of regions) {
      const res = await ctx.leases().armTransfer(
        {
          region: byId(r.regionId),
          fromHolder: from,
          expectedEpoch: BigInt(r.epoch),
          toHolder: to,
        },
        { deadlineMs: ctx.deadlineMs },
      );
      if (armsPath !== '' && res.armsPath !== armsPath) {
        throw new Error(`memstore armed in two files (${armsPath}, ${res.armsPath})`);
      }
      armsPath = res.armsPath;
      transfers.push({
        regionName: r.regionName,
        offset: res.slotOffset,
        armedWord: res.armedWord,
        flippedWord: res.flippedWord,
        epoch: Number(res.epoch),
      });
    }
    return { armsPath, transfers };
  } catch (err) {
    const code = isCodedError(err) ? err.code : undefined;
    (code === 'LEASE_ARM_UNSUPPORTED' ? log.info.bind(log) : log.warn.bind(log))(
      { code, error: (err as Error).message },
      'memstore did not arm the lease transfers: the switchover uses TransferLease',
    );
    settleArms(
      ctx,
      regions.slice(0, transfers.length).map((r) => r.regionId),
      log,
    );
    return null;
  }
}

/**
 * Target, ahead of a switchover whose transfers memstore could not arm: the TransferLease
 * requests the vCPU thread sends over the lease channel, encoded here (the thread does not load
 * the generated codec).
 */
export function channelTransfers(
  ctx: LeaseContext,
  regions: readonly LeasedRegion[],
  from: string,
): LeaseTransfer[] {
  const to = holderOf(ctx);
  return regions.map((r, k) => {
    const id = BigInt(k + 1);
    const request = pb.LeaseChannelRequest.encode({
      id,
      call: {
        $case: 'transferLease',
        value: {
          region: byId(r.regionId),
          fromHolder: from,
          expectedEpoch: BigInt(r.epoch),
          toHolder: to,
        },
      },
    }).finish();
    return { id, request, toHolder: to, fromEpoch: BigInt(r.epoch) };
  });
}

/**
 * Settles armed transfers in the background (memstore commits a flipped one, cancels the rest),
 * so its catalog catches up at once and no arm waits for memstore's own timeout.
 */
export function settleArms(ctx: LeaseContext, regionIds: readonly string[], log: Logger): void {
  for (const id of regionIds) {
    ctx
      .leases()
      .resolveTransfer({ region: byId(id) }, { deadlineMs: ctx.deadlineMs })
      .catch((err: unknown) =>
        log.warn(
          { region: id, error: (err as Error).message },
          'could not settle an armed lease transfer (memstore settles it on its own later)',
        ),
      );
  }
}

/** What {@link checkLease} found. */
export interface LeaseCheck {
  readonly valid: boolean;
  /** The lease's holder and epoch now (`nobody` and 0 when the region is unleased). */
  readonly holder: string;
  readonly epoch: number;
}

/**
 * Whether this VM still holds the region's lease at its epoch (ValidateLease).
 *
 * @throws VmmError `VMM_MEMSTORE_UNAVAILABLE`, `VMM_REGION_NOT_FOUND`
 */
export async function checkLease(ctx: LeaseContext, r: LeasedRegion): Promise<LeaseCheck> {
  const res = await memstoreCall(
    ctx,
    `VM ${ctx.vmName}: checking the lease of ${r.regionName}`,
    () =>
      ctx
        .leases()
        .validateLease(
          { region: byId(r.regionId), holder: holderOf(ctx), epoch: BigInt(r.epoch) },
          { deadlineMs: ctx.deadlineMs },
        ),
  );
  return {
    valid: res.valid,
    holder: res.current?.holder ?? 'nobody',
    epoch: Number(res.current?.epoch ?? 0),
  };
}
