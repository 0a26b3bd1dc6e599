/**
 * Blocks of a VM arriving from another host (post-copy through this host's memstore): each is
 * a lazy region of this host's memstore, filled from the source host's region, mapped here and
 * run before its pages are all in; the vCPU asks for what it touches first.
 *
 * Order of a cross-host arrival: at the header {@link openLazyBlock} creates the lazy region
 * (memstore opens the page source; nothing is fetched while the source VM runs) and maps it; at
 * the final marker {@link startLazyFills} has memstore claim the source region's lease and
 * start the fill; once the guest runs, {@link followLazyFills} reports the fill until every
 * page is here.
 *
 * @packageDocumentation
 */
import { memstore as pb } from '@handoff/proto';
import type { MigrationStatus } from '@handoff/qapi';
import { unaryCall } from '@handoff/service';
import { byId, memstoreCall } from '../leases/calls.js';
import type { RamBlockSpec } from '../model/types.js';
import type { RamBacking, RamContext } from '../ram/index.js';
import { openLazy, startLazyFill } from '../ram/lazy.js';
import { ownedRegionDeleter } from '../ram/shared.js';
import type { RemoteSource } from './incoming-blocks.js';

/**
 * Creates the lazy region of a block that lives on another host, takes its lease for this VM
 * and maps it. Nothing is fetched until {@link startLazyFills}.
 *
 * @throws ServiceError from memstore (LAZY_SOURCE_UNAVAILABLE, REGION_ALREADY_EXISTS, ...)
 */
export async function openLazyBlock(
  spec: RamBlockSpec,
  remote: RemoteSource,
  ctx: RamContext,
): Promise<{ backing: RamBacking; region: pb.Region }> {
  const client = ctx.memstore();
  const opts = { deadlineMs: ctx.deadlineMs };
  const what = `RAM block ${spec.id}`;
  const created = await memstoreCall(ctx, `${what}: lazy region ${spec.region}`, () =>
    unaryCall(
      client,
      'createLazyRegion',
      {
        name: spec.region,
        source: {
          memstore: remote.memstore,
          regionId: remote.regionId,
          identity: remote.identity,
          size: BigInt(remote.size),
          epoch: BigInt(remote.epoch),
        },
        kind: pb.RegionKind.REGION_KIND_VOLATILE,
        maxBytesPerSecond: BigInt(remote.maxBytesPerSecond),
      },
      opts,
    ),
  );
  const region = created.region!;
  const remove = ownedRegionDeleter(ctx, region, spec.id);
  try {
    // A region the VM owned on the source is its own here too; another stays when it is destroyed.
    const backing = await openLazy(spec, region, ctx, {
      ...(spec.regionOwned === true ? { afterRelease: remove } : {}),
    });
    return { backing, region };
  } catch (err) {
    await remove();
    throw err;
  }
}

/**
 * The source VM stopped: memstore claims each source region's lease (at the epoch the source
 * ran under) and starts filling. Runs at the final marker, beside the last frames.
 */
export async function startLazyFills(
  ctx: RamContext,
  regions: readonly pb.Region[],
): Promise<void> {
  for (const r of regions) await startLazyFill(ctx, r.id);
}

/** Gives up lazy regions of an arrival that failed before its guest ran (the source keeps its). */
export async function dropLazyRegions(
  ctx: RamContext,
  regions: readonly pb.Region[],
): Promise<void> {
  for (const r of regions) {
    await unaryCall(
      ctx.memstore(),
      'deleteRegion',
      { region: byId(r.id) },
      { deadlineMs: ctx.deadlineMs },
    ).catch(() => undefined); // gone already (an owned region deleted on close)
  }
}

/** The fill of an arrival's lazy regions, summed, as the stream reports it to the source. */
export interface FillProgress {
  readonly status: MigrationStatus;
  readonly presentPages: number;
  readonly totalPages: number;
  readonly demandPages: number;
  readonly backgroundPages: number;
  readonly faultP50Us: number;
  readonly faultP99Us: number;
  readonly bytesPerSecond: number;
  readonly error: string;
}

/** How often the fill is read, and the longest silence between two reports. */
const POLL_MS = 100;
const REPORT_EVERY_MS = 1000;

/**
 * Follows the fill of `regions` until it completed or failed, calling `report` at every change
 * of status and at least every second. Resolves with the last progress. A memstore that does not
 * answer is retried (the fill is memstore's; this only watches it).
 */
export async function followLazyFills(
  ctx: RamContext,
  regions: readonly pb.Region[],
  report: (p: FillProgress) => void,
): Promise<FillProgress> {
  let last: FillProgress | undefined;
  let lastAt = 0;
  for (;;) {
    const fills: pb.LazyFill[] = [];
    let error = '';
    for (const r of regions) {
      try {
        const res = await ctx
          .leases()
          .getRegion({ region: byId(r.id) }, { deadlineMs: ctx.deadlineMs });
        if (res.region?.lazy !== undefined) fills.push(res.region.lazy);
        else error = `region ${r.name} is no lazy region any more`;
      } catch (err) {
        error = `memstore did not answer about region ${r.name}: ${(err as Error).message}`;
      }
    }
    const p = sum(fills, regions.length, error);
    const now = performance.now();
    if (last === undefined || p.status !== last.status || now - lastAt >= REPORT_EVERY_MS) {
      report(p);
      last = p;
      lastAt = now;
    }
    if (p.status === 'completed' || p.status === 'failed') return p;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function sum(fills: readonly pb.LazyFill[], expected: number, error: string): FillProgress {
  const S = pb.LazyFillState;
  let present = 0;
  let total = 0;
  let demand = 0;
  let background = 0;
  let p50 = 0;
  let p99 = 0;
  let rate = 0;
  let complete = fills.length === expected;
  let paused = false;
  let failed = '';
  for (const f of fills) {
    present += Number(f.presentPages);
    total += Number(f.totalPages);
    demand += Number(f.demandPages);
    background += Number(f.backgroundPages);
    p50 = Math.max(p50, Number(f.faultP50Us));
    p99 = Math.max(p99, Number(f.faultP99Us));
    rate += Number(f.bytesPerSecond);
    if (f.state !== S.LAZY_FILL_STATE_COMPLETE) complete = false;
    if (f.state === S.LAZY_FILL_STATE_SOURCE_PAUSED) paused = true;
    if (f.state === S.LAZY_FILL_STATE_FAILED) failed = f.error || 'the fill failed';
    if (f.error !== '' && error === '') error = f.error;
  }
  const status: MigrationStatus =
    failed !== ''
      ? 'failed'
      : complete
        ? 'completed'
        : paused || (error !== '' && fills.length < expected)
          ? 'postcopy-paused'
          : 'postcopy-active';
  return {
    status,
    presentPages: present,
    totalPages: total,
    demandPages: demand,
    backgroundPages: background,
    faultP50Us: p50,
    faultP99Us: p99,
    bytesPerSecond: rate,
    error: failed !== '' ? failed : error,
  };
}
