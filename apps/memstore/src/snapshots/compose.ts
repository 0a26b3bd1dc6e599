import { fileDataRanges } from '@handoff/shm';
import { open, type FileHandle } from 'node:fs/promises';
import { MemstoreError } from '../errors.js';
import { PAGE_SIZE } from '../regions/size.js';
import { hasLayerPage, layerBitmapOf, layerPageSpans, type PageSpan } from './layer-pages.js';

/**
 * Reading a block through its chain: the root region (whole block) with each layer's pages
 * over it, bottom to top — what a clone of the top layer sees. FlattenSnapshot writes it into
 * new regions, ExportSnapshot into its file. A standalone block is a chain of one.
 */

/** One file of a block's chain, bottom first. */
export interface ComposeLayer {
  readonly path: string;
  /** The pages this file contributes; undefined for the root (whole block). */
  readonly pages: Uint8Array | undefined;
}

/**
 * The pages of the composed block that may hold data, ascending and merged: the root file's
 * data ranges (SEEK_DATA/SEEK_HOLE, whole pages) and every page a layer holds (its bitmap is
 * the truth, even for a page it holds as zeros). Every other page is a hole in every file.
 */
export function composedDataSpans(chain: readonly ComposeLayer[], size: number): PageSpan[] {
  const pages = size / PAGE_SIZE;
  const root = rootDataSpans(chain[0]!.path, size);
  if (chain.length === 1) return root;
  const union = layerBitmapOf(pages, root);
  for (const layer of chain.slice(1)) {
    const bits = layer.pages!;
    for (let i = 0; i < union.length; i++) union[i]! |= bits[i]!;
  }
  return layerPageSpans(union, pages);
}

/**
 * The pages of a file that may hold data (SEEK_DATA / SEEK_HOLE), widened to whole pages,
 * clipped to `size`, ascending and merged. A file system that does not report holes gives one
 * span of the whole file.
 */
export function rootDataSpans(path: string, size: number): PageSpan[] {
  const out: PageSpan[] = [];
  let end = 0; // first page after the last span
  for (const [start, stop] of fileDataRanges(path, 0, size)) {
    const first = Math.max(Math.floor(start / PAGE_SIZE), end);
    const last = Math.min(Math.ceil(stop / PAGE_SIZE), size / PAGE_SIZE);
    if (first >= last) continue;
    const prev = out[out.length - 1];
    if (prev !== undefined && prev.firstPage + prev.pageCount === first) {
      out[out.length - 1] = { firstPage: prev.firstPage, pageCount: last - prev.firstPage };
    } else {
      out.push({ firstPage: first, pageCount: last - first });
    }
    end = last;
  }
  return out;
}

/** Cuts spans into pieces of at most `max` pages. */
export function cutSpans(spans: readonly PageSpan[], max: number): PageSpan[] {
  const out: PageSpan[] = [];
  for (const s of spans) {
    for (let first = s.firstPage; first < s.firstPage + s.pageCount; first += max) {
      out.push({ firstPage: first, pageCount: Math.min(max, s.firstPage + s.pageCount - first) });
    }
  }
  return out;
}

/**
 * The open files of one block's chain. Reads are positional, so one reader serves one stream;
 * the files are sealed (never written again), so what is read is what was planned.
 */
export class ComposedReader {
  private constructor(
    private readonly chain: readonly ComposeLayer[],
    private readonly files: readonly FileHandle[],
  ) {}

  /** Opens every file of the chain read-only. REGION_IO_FAILED naming the file. */
  static async open(chain: readonly ComposeLayer[]): Promise<ComposedReader> {
    const files: FileHandle[] = [];
    try {
      for (const layer of chain) files.push(await open(layer.path, 'r'));
    } catch (err) {
      for (const f of files) await f.close().catch(() => undefined);
      throw MemstoreError.from(err, `opening region file ${chain[files.length]!.path}`);
    }
    return new ComposedReader(chain, files);
  }

  /**
   * Reads pages [span.firstPage, + span.pageCount) of the composed block into `into` (at least
   * that long): the root's bytes, then each layer's pages over them, bottom to top.
   */
  async read(into: Uint8Array, span: PageSpan): Promise<void> {
    await readFully(this.files[0]!, this.chain[0]!.path, into, 0, span.firstPage, span.pageCount);
    for (let level = 1; level < this.chain.length; level++) {
      const bits = this.chain[level]!.pages!;
      const end = span.firstPage + span.pageCount;
      let page = span.firstPage;
      while (page < end) {
        if (!hasLayerPage(bits, page)) {
          page++;
          continue;
        }
        let last = page + 1;
        while (last < end && hasLayerPage(bits, last)) last++;
        await readFully(
          this.files[level]!,
          this.chain[level]!.path,
          into,
          (page - span.firstPage) * PAGE_SIZE,
          page,
          last - page,
        );
        page = last;
      }
    }
  }

  async close(): Promise<void> {
    for (const f of this.files) await f.close().catch(() => undefined);
  }
}

/** Reads `pageCount` pages at `firstPage` of a file into `into` at `at`; REGION_IO_FAILED if short. */
async function readFully(
  file: FileHandle,
  path: string,
  into: Uint8Array,
  at: number,
  firstPage: number,
  pageCount: number,
): Promise<void> {
  const length = pageCount * PAGE_SIZE;
  let done = 0;
  while (done < length) {
    const { bytesRead } = await file.read(
      into,
      at + done,
      length - done,
      firstPage * PAGE_SIZE + done,
    );
    if (bytesRead === 0) {
      throw new MemstoreError(
        'REGION_IO_FAILED',
        `region file ${path} ended early at byte ${firstPage * PAGE_SIZE + done}; it was truncated outside the memstore`,
      );
    }
    done += bytesRead;
  }
}
