/**
 * The region a VM owned on its source, after a copy migration moved the VM to private memory
 * here. The source deletes it when it retires the VM; when the source dies after the hand-off
 * and before that, memstore fences its lease and keeps the region — memory nobody will run
 * again, since the VM runs here. The target, now the VM's only home, takes that duty over.
 *
 * @packageDocumentation
 */
import * as grpc from '@grpc/grpc-js';
import { memstore as msPb } from '@handoff/proto';
import { RemoteError, unaryCall, type Logger } from '@handoff/service';
import { byId, byName } from '../leases/calls.js';
import type { RamContext } from '../ram/backing.js';

/** How often and how long the target watches the source's region. */
export interface ReapTiming {
  readonly intervalMs: number;
  readonly timeoutMs: number;
}

/** Default: every 250 ms for up to a minute (memstore fences a dead holder within a second). */
export const REAP_TIMING: ReapTiming = { intervalMs: 250, timeoutMs: 60_000 };

/** What became of one region. */
export type ReapOutcome = 'deleted-by-source' | 'deleted-here' | 'not-ours' | 'left';

/**
 * Watches region `name`, which VM `sourceHolder` (`<source vmm>/<vm>`) owned on its source,
 * until it is gone. Deletes it here only when memstore fenced the source's lease because the
 * source's process is gone (so the source will never delete it); a region leased to anyone
 * else, fenced by an operator, or re-created since is not ours to touch. Never throws.
 */
export async function reapCopiedRegion(
  ctx: RamContext,
  name: string,
  sourceHolder: string,
  log: Logger,
  timing: ReapTiming = REAP_TIMING,
): Promise<ReapOutcome> {
  const deadline = Date.now() + timing.timeoutMs;
  const opts = { deadlineMs: ctx.deadlineMs };
  for (;;) {
    let region: msPb.Region | undefined;
    try {
      region = (await unaryCall(ctx.memstore(), 'getRegion', { region: byName(name) }, opts))
        .region;
    } catch (err) {
      if (err instanceof RemoteError && err.status === grpc.status.NOT_FOUND) {
        return 'deleted-by-source';
      }
      // memstore unreachable: ask again until the deadline.
    }
    if (region !== undefined) {
      const holder = region.lease?.holder ?? '';
      if (holder !== '' && holder !== sourceHolder) return 'not-ours';
      const fence = region.fenced;
      if (holder === '' && fence !== undefined) {
        if (
          fence.holder !== sourceHolder ||
          fence.reason !== msPb.FenceReason.FENCE_REASON_HOLDER_GONE
        ) {
          return 'not-ours';
        }
        try {
          await unaryCall(ctx.memstore(), 'deleteRegion', { region: byId(region.id) }, opts);
          log.info(
            { region: name, source: sourceHolder },
            'deleted the region this VM owned on its source: the source died after the hand-off',
          );
          return 'deleted-here';
        } catch (err) {
          if (err instanceof RemoteError && err.status === grpc.status.NOT_FOUND) {
            return 'deleted-by-source';
          }
          // Leased again in between, or memstore busy: look again.
        }
      }
    }
    if (Date.now() > deadline) {
      log.warn(
        { region: name, source: sourceHolder },
        'the region this VM owned on its source is still there; delete it with `vmctl region delete` once nothing maps it',
      );
      return 'left';
    }
    await new Promise((r) => setTimeout(r, timing.intervalMs));
  }
}
