/**
 * The chain a clone block maps: AttachClone answers it bottom to top — the root region (the
 * whole block), then each layer's region with the pages it holds, the last being the attached
 * region itself. The clone maps the root MAP_PRIVATE over the whole block, then each layer's
 * runs of pages over it at the same offsets (`Mapping.overlay`), so every page shows the
 * topmost level that holds it. memstore is trusted to be memstore, not to be right: a chain that
 * does not fit the block is refused before anything stays mapped.
 *
 * @packageDocumentation
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import type { PageBitmap } from '@handoff/bitmap';
import type { memstore as pb } from '@handoff/proto';
import { fileDataRanges, mapFile, type Mapping } from '@handoff/shm';
import { VmmError, type VmmErrorCode } from '../model/vmm-error.js';
import { layerPagesToBitmap } from './layer-pages.js';

/** Bytes of a page the bitmaps count: the guest's page (the host's is the same size). */
const PAGE_SIZE = 4096;

/** One region of a clone's chain. */
export interface ChainLevel {
  readonly regionId: string;
  /** The sealed file, mapped copy-on-write. */
  readonly path: string;
  readonly identity: string;
  /** The pages this level holds over those below; null for the root (the whole block). */
  readonly pages: PageBitmap | null;
}

/** Byte ranges `[start, end)`, ascending. */
export type ByteRanges = readonly (readonly [start: number, end: number])[];

/**
 * The chain of a clone block of `size` bytes from AttachClone's answer, checked: it ends with
 * the attached region (same id and identity), the root holds the whole block (no bitmap), every
 * layer above it has a bitmap of the block's length with no bit past its last page, and no
 * region appears twice. An empty `layers` (a memstore that predates chains) is the attached
 * region alone. With `identities` (a restore: the identity each snapshot of the chain recorded
 * for this block, bottom to top), every level must be the recorded region.
 *
 * @throws VmmError `code` naming the block and what is wrong
 */
export function cloneChainOf(
  template: pb.Region,
  layers: readonly pb.CloneLayer[],
  size: number,
  what: string,
  code: VmmErrorCode,
  identities?: readonly string[],
): ChainLevel[] {
  const refuse = (why: string): never => {
    throw new VmmError(
      code,
      `${what}: memstore's chain for region ${template.name} ${why}; the clone cannot map it ` +
        '(check the snapshot with `vmctl snapshot show`)',
    );
  };
  if (layers.length === 0) {
    const root = { regionId: template.id, path: template.path, identity: template.identity };
    return checkIdentities([{ ...root, pages: null }], identities, refuse);
  }
  const top = layers[layers.length - 1]!;
  if (top.regionId !== template.id || top.identity !== template.identity) {
    refuse(`ends with region ${top.regionId}, not the attached region ${template.id}`);
  }
  const pages = size / PAGE_SIZE;
  const seen = new Set<string>();
  const chain = layers.map((l, k): ChainLevel => {
    if (seen.has(l.regionId)) refuse(`names region ${l.regionId} twice`);
    seen.add(l.regionId);
    if (l.path === '') refuse(`gives level ${k} (region ${l.regionId}) no file`);
    if (k === 0) {
      if (l.pages.length !== 0) refuse(`gives its root (region ${l.regionId}) a page bitmap`);
      return { regionId: l.regionId, path: l.path, identity: l.identity, pages: null };
    }
    const parsed = layerPagesToBitmap(l.pages, pages);
    if (parsed.bitmap === null) refuse(`level ${k} (region ${l.regionId}): ${parsed.why}`);
    return { regionId: l.regionId, path: l.path, identity: l.identity, pages: parsed.bitmap };
  });
  return checkIdentities(chain, identities, refuse);
}

function checkIdentities(
  chain: ChainLevel[],
  identities: readonly string[] | undefined,
  refuse: (why: string) => never,
): ChainLevel[] {
  if (identities === undefined) return chain;
  if (identities.length !== chain.length) {
    refuse(`has ${chain.length} levels, the snapshot's chain ${identities.length}`);
  }
  chain.forEach((level, k) => {
    if (level.identity !== identities[k]) {
      refuse(
        `level ${k} (region ${level.regionId}) has identity ${level.identity}, its snapshot ` +
          `recorded ${identities[k]} (the region was replaced)`,
      );
    }
  });
  return chain;
}

/**
 * Maps `chain` over a block of `size` bytes: the root privately over the whole block, then each
 * layer's runs of pages over it, one `mmap(MAP_FIXED | MAP_PRIVATE)` per run. Every file must
 * hold the whole block. Nothing stays mapped when it fails.
 *
 * @throws VmmError `code` (a file shorter than the block, missing, or not mappable)
 */
export function mapCloneChain(
  chain: readonly ChainLevel[],
  size: number,
  what: string,
  code: VmmErrorCode,
): Mapping<SharedArrayBuffer> {
  const fail = (level: ChainLevel, err: unknown): never => {
    throw new VmmError(
      code,
      `${what}: cannot map region ${level.regionId} (${level.path}) of its chain: ` +
        `${(err as Error).message}`,
      { cause: err },
    );
  };
  const root = chain[0]!;
  let mapping: Mapping<SharedArrayBuffer> | undefined;
  try {
    mapping = mapFile(root.path, { sharing: 'private', length: size });
  } catch (err) {
    fail(root, err);
  }
  const m = mapping!;
  try {
    for (const level of chain.slice(1)) overlayLevel(m, level, size, fail);
  } catch (err) {
    m.close();
    throw err;
  }
  return m;
}

/** Overlays one layer's runs of pages (one open of its file, one call into the addon). */
function overlayLevel(
  m: Mapping<SharedArrayBuffer>,
  level: ChainLevel,
  size: number,
  fail: (level: ChainLevel, err: unknown) => never,
): void {
  const runs: [number, number][] = [];
  level.pages!.forEachRun((start, length) => {
    runs.push([start * PAGE_SIZE, Math.min(length * PAGE_SIZE, size - start * PAGE_SIZE)]);
  });
  let fd: number;
  try {
    fd = openSync(level.path, 'r');
  } catch (err) {
    fail(level, err);
  }
  try {
    const fileSize = fstatSync(fd!).size;
    if (fileSize < size) {
      fail(level, new Error(`the file holds ${fileSize} bytes, the block is ${size}`));
    }
    try {
      m.overlayRanges(fd!, runs);
    } catch (err) {
      fail(level, err);
    }
  } finally {
    closeSync(fd!);
  }
}

/**
 * The byte ranges of the block that may hold data anywhere in the chain, ascending: the root
 * file's data ranges plus every layer's pages. Null when the root's are unknown.
 */
export function chainDataRanges(chain: readonly ChainLevel[], size: number): ByteRanges | null {
  let root: ByteRanges;
  try {
    root = fileDataRanges(chain[0]!.path, 0, size);
  } catch {
    return null;
  }
  if (chain.length === 1) return root;
  const ranges: [number, number][] = root.map(([s, e]) => [s, e]);
  for (const level of chain.slice(1)) {
    level.pages!.forEachRun((start, length) => {
      ranges.push([start * PAGE_SIZE, Math.min(size, (start + length) * PAGE_SIZE)]);
    });
  }
  ranges.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const [s, e] of ranges) {
    const last = merged[merged.length - 1];
    if (last !== undefined && s <= last[1]) last[1] = Math.max(last[1], e);
    else merged.push([s, e]);
  }
  return merged;
}
