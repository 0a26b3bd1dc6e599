/** RAM backends of a VM's blocks: private memfd, shared memstore region, copy-on-write clone. */
import type { RamBlockSpec } from '../model/types.js';
import type { RamBacking, RamContext } from './backing.js';
import { openClone } from './clone.js';
import { openPrivate } from './private.js';
import { openShared } from './shared.js';

export type { LazyRam, RamBacking, RamContext, RetiredRam, SealedRegion } from './backing.js';
export { mapLazy, openLazy, startLazyFill, type LazyOptions } from './lazy.js';
export { openClone, type CloneExpectation } from './clone.js';
export {
  createSaveRegion,
  createSaveRegions,
  saveRegionName,
  type SaveRegion,
} from './save-region.js';
export {
  createSnapshot,
  findSnapshotOfRegions,
  getSnapshot,
  type FetchedSnapshot,
} from './snapshots.js';
export { bitmapToLayerPages } from './layer-pages.js';

/** Maps one block with its backend. */
export function openRamBlock(spec: RamBlockSpec, ctx: RamContext): Promise<RamBacking> {
  switch (spec.backend) {
    case 'private':
      return Promise.resolve().then(() => openPrivate(spec, ctx));
    case 'shared':
      return openShared(spec, ctx);
    case 'clone':
      return openClone(spec, ctx);
  }
}

/** Maps every block of a table, in order; if one fails, the ones already mapped are closed. */
export async function openRamBlocks(
  specs: readonly RamBlockSpec[],
  ctx: RamContext,
): Promise<RamBacking[]> {
  const opened: RamBacking[] = [];
  try {
    for (const spec of specs) opened.push(await openRamBlock(spec, ctx));
    return opened;
  } catch (err) {
    await closeRamBlocks(opened);
    throw err;
  }
}

/** Closes blocks in reverse order (never throws). */
export async function closeRamBlocks(blocks: readonly RamBacking[]): Promise<void> {
  for (let k = blocks.length - 1; k >= 0; k--) await blocks[k]!.close();
}
