/**
 * The regions a full save fills: one per RAM block, created in memstore's persistent directory
 * for the snapshot, leased by the saving VM while the pages go in, then handed to CreateSnapshot
 * (which seals it and gives it to the snapshot).
 *
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto';
import { memstore as pb } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import { byId, holderOf, memstoreCall } from '../leases/calls.js';
import type { RamContext } from './backing.js';
import { openRegionFile, type RegionFile } from './region-file.js';

/** A region being filled for a full save, leased by the saving VM. */
export interface SaveRegion {
  readonly regionId: string;
  readonly regionName: string;
  /** The lease epoch the saving VM holds (CreateSnapshot presents it). */
  readonly epoch: number;
  /**
   * Writes `data` at byte `offset` through the region's file (`pwrite` on a libuv thread,
   * `O_DIRECT` where it can: see region-file.ts): the pages go into the file without being
   * mapped into this process. Writes may run concurrently but must not overlap.
   */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes what was written durable (`fdatasync`) and closes the file. */
  finish(): Promise<void>;
  /**
   * After a failed save, before CreateSnapshot took the region: closes the file, releases the
   * lease and deletes the region. Never throws (a failure is logged with what to do).
   */
  discard(): Promise<void>;
}

/** Longest region name memstore accepts. */
const REGION_NAME_MAX = 63;

/**
 * The name of a full save's region for block `blockId` of snapshot `snapshot`: the snapshot's
 * name (lower-cased, other characters as `-`, cut to fit), the block, a random suffix so that
 * no existing region can clash: `s1-ram0-4f2a9c`.
 */
export function saveRegionName(snapshot: string, blockId: string): string {
  const tail = `-${blockId.toLowerCase()}-${randomBytes(3).toString('hex')}`;
  const head = snapshot
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, Math.max(1, REGION_NAME_MAX - tail.length));
  return `${head === '' ? 'snapshot' : head}${tail}`.slice(0, REGION_NAME_MAX);
}

/**
 * Creates a persistent region of `size` bytes named `name`, takes its lease as this VM and
 * opens its file for writing. Nothing is left behind when it fails.
 *
 * @throws VmmError `VMM_MEMSTORE_UNAVAILABLE`; memstore's codes (REGION_NO_SPACE, ...)
 */
export async function createSaveRegion(
  ctx: RamContext,
  name: string,
  size: number,
): Promise<SaveRegion> {
  const client = ctx.memstore();
  const opts = { deadlineMs: ctx.deadlineMs };
  const holder = holderOf(ctx);
  const region = (
    await memstoreCall(ctx, `creating region ${name} for the save`, () =>
      unaryCall(
        client,
        'createRegion',
        { name, size: BigInt(size), kind: pb.RegionKind.REGION_KIND_PERSISTENT },
        opts,
      ),
    )
  ).region!;
  let epoch = 0n;
  let file: RegionFile | undefined;
  const release = async (): Promise<void> => {
    await file?.close();
    file = undefined;
    try {
      if (epoch > 0n) {
        await unaryCall(client, 'releaseLease', { region: byId(region.id), holder, epoch }, opts);
      }
      await unaryCall(client, 'deleteRegion', { region: byId(region.id) }, opts);
    } catch (err) {
      ctx.logger.warn(
        { region: name, error: (err as Error).message },
        'could not delete the region of a failed save; delete it with `vmctl region delete`',
      );
    }
  };
  try {
    epoch = (
      await memstoreCall(ctx, `lease on region ${name}`, () =>
        unaryCall(client, 'acquireLease', { region: byId(region.id), holder }, opts),
      )
    ).lease!.epoch;
    file = await openRegionFile(region.path);
  } catch (err) {
    await release();
    throw err;
  }
  const opened = file;
  return {
    regionId: region.id,
    regionName: region.name,
    epoch: Number(epoch),
    write: (offset, data) => opened.write(offset, data),
    finish: async () => {
      await opened.sync();
      await opened.close();
      file = undefined;
    },
    discard: release,
  };
}

/**
 * One new save region per block of `blocks`, named after `snapshot` and of the block's size —
 * all of them or none: a failure discards the ones made, then throws.
 */
export async function createSaveRegions(
  ctx: RamContext,
  snapshot: string,
  blocks: readonly { readonly spec: { readonly id: string; readonly size: number } }[],
): Promise<SaveRegion[]> {
  const regions: SaveRegion[] = [];
  try {
    for (const b of blocks) {
      regions.push(await createSaveRegion(ctx, saveRegionName(snapshot, b.spec.id), b.spec.size));
    }
  } catch (err) {
    await Promise.all(regions.map((r) => r.discard()));
    throw err;
  }
  return regions;
}
