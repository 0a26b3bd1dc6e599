import { fileDataRanges } from '@handoff/shm';
import { open, type FileHandle } from 'node:fs/promises';
import { MemstoreError } from '../errors.js';
import {
  encodeHeader,
  encodePreamble,
  encodeRunPrefix,
  encodeSection,
  encodeTrailer,
  MAX_RUN_PAGES,
  PAGE_BYTES,
  PREAMBLE_BYTES,
  RUN_PREFIX_BYTES,
  runSectionBytes,
  SECTION,
  SECTION_HEADER_BYTES,
  sectionCrc,
  TRAILER_PAYLOAD_BYTES,
  type ExportHeader,
} from './export-format.js';

/** Pages [firstPage, firstPage + pageCount) of a block that may hold data. */
export interface PageRun {
  readonly firstPage: number;
  readonly pageCount: number;
}

/** One block to export: its region file and the runs of it that hold data. */
export interface ExportSource {
  readonly path: string;
  readonly runs: readonly PageRun[];
}

/** Everything an export writes, decided before the first byte goes out. */
export interface ExportPlan {
  readonly header: ExportHeader;
  readonly deviceState: Uint8Array;
  readonly sources: readonly ExportSource[];
  /** The file's exact length. */
  readonly totalBytes: number;
}

/**
 * The runs of a region file that may hold data (SEEK_DATA / SEEK_HOLE), widened to whole
 * pages, clipped to `size`, and cut into runs of at most 256 pages. Pages in holes read as zero
 * and are not exported; a file system that does not report holes gives one run per 256 pages.
 */
export function pageRunsOf(path: string, size: number): PageRun[] {
  const runs: PageRun[] = [];
  let end = 0; // first page after the last run
  for (const [start, stop] of fileDataRanges(path, 0, size)) {
    let first = Math.max(Math.floor(start / PAGE_BYTES), end);
    const last = Math.min(Math.ceil(stop / PAGE_BYTES), size / PAGE_BYTES);
    while (first < last) {
      const count = Math.min(MAX_RUN_PAGES, last - first);
      const prev = runs[runs.length - 1];
      if (
        prev !== undefined &&
        prev.firstPage + prev.pageCount === first &&
        prev.pageCount + count <= MAX_RUN_PAGES
      ) {
        runs[runs.length - 1] = { firstPage: prev.firstPage, pageCount: prev.pageCount + count };
      } else {
        runs.push({ firstPage: first, pageCount: count });
      }
      first += count;
    }
    end = Math.max(end, last);
  }
  return runs;
}

/** The exact length of the file a plan writes. */
export function exportLength(
  header: ExportHeader,
  deviceStateBytes: number,
  sources: readonly ExportSource[],
): number {
  let total =
    PREAMBLE_BYTES +
    SECTION_HEADER_BYTES +
    encodeHeader(header).length +
    SECTION_HEADER_BYTES +
    deviceStateBytes +
    SECTION_HEADER_BYTES +
    TRAILER_PAYLOAD_BYTES;
  for (const s of sources) for (const r of s.runs) total += runSectionBytes(r.pageCount);
  return total;
}

/**
 * The file's bytes, section by section (each at most 1 MiB + 28 bytes): the preamble, header,
 * device state, every run (read from the region files, which are sealed and never change) and
 * the trailer. Stops early when `stopped()` turns true. Closes the files it opened.
 */
export async function* exportSections(
  plan: ExportPlan,
  stopped: () => boolean = () => false,
): AsyncGenerator<Uint8Array> {
  yield encodePreamble();
  yield encodeSection(SECTION.header, encodeHeader(plan.header));
  yield encodeSection(SECTION.deviceState, plan.deviceState);
  let runs = 0;
  for (let block = 0; block < plan.sources.length; block++) {
    const source = plan.sources[block]!;
    if (source.runs.length === 0) continue;
    const file = await openRegion(source.path);
    try {
      for (const run of source.runs) {
        if (stopped()) return;
        yield await readRunSection(file, source.path, block, run);
        runs++;
      }
    } finally {
      await file.close();
    }
  }
  yield encodeSection(SECTION.trailer, encodeTrailer(plan.totalBytes, runs));
}

async function openRegion(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (err) {
    throw MemstoreError.from(err, `opening region file ${path} for the export`);
  }
}

/** One run section, its pages read straight into the section's buffer. */
async function readRunSection(
  file: FileHandle,
  path: string,
  block: number,
  run: PageRun,
): Promise<Uint8Array> {
  const out = new Uint8Array(runSectionBytes(run.pageCount));
  const view = new DataView(out.buffer);
  view.setUint32(0, SECTION.run, true);
  view.setUint32(4, out.length - SECTION_HEADER_BYTES, true);
  out.set(encodeRunPrefix(block, run.firstPage, run.pageCount), SECTION_HEADER_BYTES);
  const dataAt = SECTION_HEADER_BYTES + RUN_PREFIX_BYTES;
  const length = run.pageCount * PAGE_BYTES;
  let done = 0;
  while (done < length) {
    const { bytesRead } = await file.read(
      out,
      dataAt + done,
      length - done,
      run.firstPage * PAGE_BYTES + done,
    );
    if (bytesRead === 0) {
      throw new MemstoreError(
        'REGION_IO_FAILED',
        `region file ${path} ended early at byte ${run.firstPage * PAGE_BYTES + done}; it was truncated outside the memstore`,
      );
    }
    done += bytesRead;
  }
  view.setUint32(8, sectionCrc(out.subarray(0, 8), out.subarray(SECTION_HEADER_BYTES)), true);
  return out;
}
