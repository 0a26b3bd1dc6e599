import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import type { Memstore } from '../memstore.js';
import { layerBitmapOf } from '../snapshots/layer-pages.js';
import type { NewSnapshot, Snapshot } from '../snapshots/snapshot.js';

/**
 * Unit-test fixtures for chained snapshots: a standalone base and layers on it, made from
 * region files written by hand (no vmm), and the block image a chain composes to.
 */

export const PAGE = 4096;
/** 12 pages: a bitmap of 2 bytes whose last 4 bits lie past the block. */
export const LAYER_BLOCK = { id: 'ram0', guestBase: 0x8000_0000, size: 12 * PAGE } as const;
export const LAYER_HOLDER = 'vmm-a/vm1';
export const LAYER_STATE = new Uint8Array([7, 7, 7, 1, 2, 3]);

/** Page number -> fill byte; a fill of 0 is a page the guest zeroed (left a hole in the file). */
export type PageFills = ReadonlyArray<readonly [page: number, fill: number]>;

/** Writes each page of `fills` (fill 0 is left as a hole) into the file at `path`. */
export function writePages(path: string, fills: PageFills): void {
  const fd = openSync(path, 'r+');
  try {
    for (const [page, fill] of fills) {
      if (fill !== 0) writeSync(fd, Buffer.alloc(PAGE, fill), 0, PAGE, page * PAGE);
    }
  } finally {
    closeSync(fd);
  }
}

/** A CreateSnapshot request for one block of LAYER_BLOCK's layout in `region`. */
export function layerRequest(
  name: string,
  region: string,
  over: Partial<NewSnapshot> & { layerPages?: Uint8Array } = {},
): NewSnapshot {
  const { layerPages, ...rest } = over;
  return {
    name,
    template: true,
    kind: 'bypass',
    vmName: 'vm1',
    vmSpec: new Uint8Array([1, 2, 3]),
    deviceState: LAYER_STATE,
    blocks: [
      {
        ...LAYER_BLOCK,
        region: { name: region },
        epoch: 0,
        owned: true,
        layerPages: layerPages ?? new Uint8Array(0),
      },
    ],
    holder: LAYER_HOLDER,
    parent: '',
    ...rest,
  };
}

/** A standalone snapshot whose one block holds `fills` (a persistent region `<name>-ram`). */
export async function makeBase(m: Memstore, name: string, fills: PageFills): Promise<Snapshot> {
  const r = m.regions.create({ name: `${name}-ram`, size: LAYER_BLOCK.size, kind: 'persistent' });
  writePages(r.path, fills);
  return m.snapshots.create(layerRequest(name, `${name}-ram`));
}

/** A layer on `parent` holding exactly the pages of `fills` (its bitmap says so). */
export async function makeLayer(
  m: Memstore,
  name: string,
  parent: string,
  fills: PageFills,
  over: Partial<NewSnapshot> = {},
): Promise<Snapshot> {
  const r = m.regions.create({ name: `${name}-ram`, size: LAYER_BLOCK.size, kind: 'persistent' });
  writePages(r.path, fills);
  return m.snapshots.create(
    layerRequest(name, `${name}-ram`, { parent, layerPages: bitmapOf(fills), ...over }),
  );
}

/** The bitmap of the pages in `fills`. */
export function bitmapOf(fills: PageFills): Uint8Array {
  return layerBitmapOf(
    LAYER_BLOCK.size / PAGE,
    fills.map(([page]) => ({ firstPage: page, pageCount: 1 })),
  );
}

/** The block image a chain composes to: each level's pages over those below, bottom first. */
export function composedImage(levels: readonly PageFills[]): Uint8Array {
  const image = new Uint8Array(LAYER_BLOCK.size);
  for (const fills of levels) {
    for (const [page, fill] of fills) image.fill(fill, page * PAGE, (page + 1) * PAGE);
  }
  return image;
}

/** The whole content of a file. */
export function fileBytes(path: string): Uint8Array {
  return new Uint8Array(readFileSync(path));
}
