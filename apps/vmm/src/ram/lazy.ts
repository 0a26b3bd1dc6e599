/**
 * **Lazy** RAM (post-copy across hosts): a block whose memory is a lazy memstore region — its
 * file mapped MAP_SHARED like a `shared` block, its pages arriving over time — with the
 * region's present map (libs/bitmap present-map.ts) mapped beside it. The vCPU tests a page's
 * bit before it touches the page (memory/ram-block.ts); the host asks memstore for missing
 * pages with FetchPages on the lease channel (vcpu/page-requests.ts).
 *
 * Entry points (the migration's incoming side calls one per lazy block):
 * - {@link openLazy}: takes the region's writer lease (AcquireLease, as `shared` blocks do), then
 *   maps it;
 * - {@link mapLazy}: maps a region whose lease this VM holds already (TransferLease).
 *
 * @packageDocumentation
 */
import { PresentMap, PresentState } from '@handoff/bitmap';
import type { memstore as pb } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import { mapFile, type Mapping } from '@handoff/shm';
import { byId, holderOf, memstoreCall } from '../leases/calls.js';
import type { PageCalls } from '../leases/lease-channel.js';
import type { RamBlockSpec } from '../model/types.js';
import { VmmError } from '../model/vmm-error.js';
import type { LazyRam, RamBacking, RamContext } from './backing.js';
import { mapShared } from './shared.js';

/** Guest page size (memory/pages.ts; the present map has a bit per page). */
const PAGE_SIZE = 4096;
/** A FetchPages waits this long before it is asked again (it waits while the source is paused). */
const FETCH_DEADLINE_MS = 30_000;

/** Options of {@link openLazy} and {@link mapLazy}. */
export interface LazyOptions {
  /**
   * The page calls (FetchPages): the instance's lease-channel client. Default: `ctx.pages()`,
   * which is that client in a vmm.
   */
  readonly pages?: PageCalls;
  /** Deadline of one FetchPages (default 30 s; the host asks again after it). */
  readonly fetchDeadlineMs?: number;
  /** Runs after the lease was released at `close()` (e.g. deleting a region the VM owns). */
  readonly afterRelease?: () => Promise<void>;
}

/**
 * Takes the writer lease of lazy region `region` (holder `<vmm-id>/<vm>`) and maps it as the
 * lazy block `spec` ({@link mapLazy}). The lease is released again if the mapping fails.
 *
 * @throws VmmError `VMM_INVALID_SPEC` when the region is not lazy or not the block's size;
 *   memstore's errors as {@link memstoreCall} turns them
 */
export async function openLazy(
  spec: RamBlockSpec,
  region: pb.Region,
  ctx: RamContext,
  opts: LazyOptions = {},
): Promise<RamBacking> {
  checkLazy(spec, region);
  const client = ctx.memstore();
  const holder = holderOf(ctx);
  const callOpts = { deadlineMs: ctx.deadlineMs };
  const lease = (
    await memstoreCall(ctx, `RAM block ${spec.id}: lease on lazy region ${region.name}`, () =>
      unaryCall(client, 'acquireLease', { region: byId(region.id), holder }, callOpts),
    )
  ).lease!;
  try {
    return mapLazy(spec, region, Number(lease.epoch), ctx, opts);
  } catch (err) {
    await unaryCall(
      client,
      'releaseLease',
      { region: byId(region.id), holder, epoch: lease.epoch },
      callOpts,
    ).catch(() => undefined);
    throw err;
  }
}

/**
 * Maps lazy region `region`, whose lease this VM holds at `epoch`, as block `spec`: the region
 * file shared (as {@link mapShared}: `close()` revokes it and releases the lease) and its present
 * map from `region.lazy.presentPath`, privately and never written (the file is memstore's; a
 * private mapping that is only read shows the file's pages as memstore writes them), checked as
 * a hostile file ({@link PresentMap.open}). The backing's {@link RamBacking.lazy} is what the VM
 * needs: the map's buffer for its vCPU thread, the host's view, and FetchPages for the region.
 *
 * The present map stays mapped until `close()` / `abandon()`, also after it says Complete: the
 * vCPU thread reads it until its block settles (at its next slice), and a revoked mapping reads
 * as "nothing present", which would park the guest for good.
 *
 * @throws VmmError `VMM_INVALID_SPEC` when the region is not lazy or not the block's size,
 *   `VMM_INVALID_SPEC` when its present map is malformed; ShmError when a file cannot be mapped
 */
export function mapLazy(
  spec: RamBlockSpec,
  region: pb.Region,
  epoch: number,
  ctx: RamContext,
  opts: LazyOptions = {},
): RamBacking {
  const presentPath = checkLazy(spec, region);
  const calls = opts.pages ?? ctx.pages?.();
  if (calls === undefined) {
    throw new VmmError(
      'VMM_MEMSTORE_UNAVAILABLE',
      `RAM block ${spec.id}: no way to ask memstore for pages (no lease-channel client)`,
    );
  }
  const pages = spec.size / PAGE_SIZE;
  const presentMapping: Mapping<SharedArrayBuffer> = mapFile(presentPath, { sharing: 'private' });
  let map: PresentMap;
  try {
    map = PresentMap.open(presentMapping.buffer, pages);
  } catch (err) {
    presentMapping.close();
    throw new VmmError(
      'VMM_INVALID_SPEC',
      `RAM block ${spec.id}: the present map ${presentPath} of lazy region ${region.name} is ` +
        `unusable (${(err as Error).message}); recover or recreate the lazy region`,
      { cause: err },
    );
  }
  let base: RamBacking;
  try {
    base = mapShared(spec, region, epoch, ctx, opts.afterRelease);
  } catch (err) {
    presentMapping.close();
    throw err;
  }
  const deadlineMs = opts.fetchDeadlineMs ?? FETCH_DEADLINE_MS;
  const selector = byId(region.id);
  const fetchPages: LazyRam['fetchPages'] = async (first, count) => {
    await calls.fetchPages(
      { region: selector, firstPage: BigInt(first), pageCount: count },
      { deadlineMs },
    );
  };
  const lazy: LazyRam = { map, presentBuffer: presentMapping.buffer, fetchPages };
  let unmapped = false;
  const unmapPresent = (): void => {
    if (unmapped) return;
    unmapped = true;
    presentMapping.close();
  };
  return {
    ...base,
    lazy,
    zeroed: false,
    // Lazy pages are not in the file yet: reading them would not be the guest's memory.
    dataRanges: () => null,
    abandon: () => {
      unmapPresent();
      base.abandon();
    },
    close: async () => {
      unmapPresent();
      await base.close();
    },
  };
}

/**
 * StartLazyFill for region `regionId` (over the lease channel when there is one, else gRPC):
 * memstore starts fetching its pages in the background — call it once the guest runs here.
 * Answers the region as memstore then reports it.
 *
 * @throws VmmError / ServiceError as {@link memstoreCall} turns memstore's failure
 */
export async function startLazyFill(ctx: RamContext, regionId: string): Promise<pb.Region> {
  const calls = ctx.pages?.();
  const req = { region: byId(regionId) };
  const callOpts = { deadlineMs: ctx.deadlineMs };
  const res = await memstoreCall(ctx, `starting the lazy fill of region ${regionId}`, () =>
    calls !== undefined
      ? calls.startLazyFill(req, callOpts)
      : unaryCall(ctx.memstore(), 'startLazyFill', req, callOpts),
  );
  return res.region!;
}

/** The present map's path of a lazy region that fits `spec`. @throws VmmError otherwise */
function checkLazy(spec: RamBlockSpec, region: pb.Region): string {
  const block = `RAM block ${spec.id}`;
  const presentPath = region.lazy?.presentPath ?? '';
  if (presentPath === '') {
    throw new VmmError(
      'VMM_INVALID_SPEC',
      `${block}: region ${region.name} is not a lazy region (no present map); map it as a ` +
        'shared block instead',
    );
  }
  if (region.size !== BigInt(spec.size)) {
    throw new VmmError(
      'VMM_INVALID_SPEC',
      `${block}: lazy region ${region.name} holds ${region.size} bytes but the block is ` +
        `${spec.size}; give the block the region size`,
    );
  }
  return presentPath;
}

/**
 * Lazy blocks whose pages are not all here yet, described for an error message ("ram0: 1200 of
 * 65536 pages"), or null when every block is whole. A VM in that state must not be saved or
 * migrated again: its missing pages would be read as zeros.
 */
export function stillArriving(blocks: readonly RamBacking[]): string | null {
  const parts: string[] = [];
  for (const b of blocks) {
    const map = b.lazy?.map;
    if (map === undefined || map.state === PresentState.Complete) continue;
    parts.push(`${b.spec.id}: ${map.presentPages} of ${map.pages} pages`);
  }
  return parts.length === 0 ? null : parts.join(', ');
}
