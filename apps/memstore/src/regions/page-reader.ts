import { open, type FileHandle } from 'node:fs/promises';
import type { RegionRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import { PAGE_SIZE } from './size.js';

/** A validated page range of a region, in pages. */
export interface PageRange {
  readonly firstPage: number;
  readonly pageCount: number;
}

/**
 * Checks that [firstPage, firstPage + pageCount) lies inside the region and
 * that the region can be read. REGION_OUT_OF_RANGE, REGION_INVALID_ARGUMENT, REGION_LOST.
 */
export function checkPageRange(row: RegionRow, firstPage: bigint, pageCount: bigint): PageRange {
  const pages = BigInt(row.size / PAGE_SIZE);
  if (row.lostAt !== null) {
    throw new MemstoreError(
      'REGION_LOST',
      `region "${row.name}" has lost its file ${row.path}; its pages cannot be read`,
    );
  }
  if (pageCount <= 0n) {
    throw new MemstoreError(
      'REGION_INVALID_ARGUMENT',
      `page_count must be at least 1 (region "${row.name}" has ${pages} pages)`,
    );
  }
  if (firstPage < 0n || firstPage + pageCount > pages) {
    throw new MemstoreError(
      'REGION_OUT_OF_RANGE',
      `pages [${firstPage}, ${firstPage + pageCount}) are outside region "${row.name}", which has ${pages} ` +
        `pages of ${PAGE_SIZE} bytes; ask for pages below ${pages}`,
    );
  }
  return { firstPage: Number(firstPage), pageCount: Number(pageCount) };
}

/**
 * Reads pages of a region file into caller-owned buffers. The file is
 * opened once; reads are positional, so one reader serves one stream.
 * A region deleted while being read keeps its data until close().
 */
export class PageReader {
  private constructor(private readonly handle: FileHandle) {}

  /** Opens a region file for reading. */
  static async open(path: string): Promise<PageReader> {
    return new PageReader(await open(path, 'r'));
  }

  /**
   * Reads `pageCount` pages starting at `firstPage` into `into` (which must
   * hold them); returns the bytes read. Throws REGION_IO_FAILED on a short read.
   */
  async read(into: Uint8Array, firstPage: number, pageCount: number): Promise<Uint8Array> {
    const length = pageCount * PAGE_SIZE;
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(
        into,
        done,
        length - done,
        firstPage * PAGE_SIZE + done,
      );
      if (bytesRead === 0) {
        throw new MemstoreError(
          'REGION_IO_FAILED',
          `region file ended early at byte ${firstPage * PAGE_SIZE + done}; it was truncated outside the memstore`,
        );
      }
      done += bytesRead;
    }
    return into.subarray(0, length);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
