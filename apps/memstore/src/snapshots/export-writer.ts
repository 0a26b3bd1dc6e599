import { ComposedReader, type ComposeLayer } from './compose.js';
import {
  encodeHeader,
  encodePreamble,
  encodeRunPrefix,
  encodeSection,
  encodeTrailer,
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

/**
 * One block to export: the files of its chain (one for a standalone snapshot; a layer's block
 * is composed, its parent's pages under its own) and the runs of it that hold data.
 */
export interface ExportSource {
  readonly layers: readonly ComposeLayer[];
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
 * device state, every run (read from the region files of each block's chain, which are sealed
 * and never change; a layer's pages over its parent's) and
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
    const reader = await ComposedReader.open(source.layers);
    try {
      for (const run of source.runs) {
        if (stopped()) return;
        yield await readRunSection(reader, block, run);
        runs++;
      }
    } finally {
      await reader.close();
    }
  }
  yield encodeSection(SECTION.trailer, encodeTrailer(plan.totalBytes, runs));
}

/** One run section, its composed pages read straight into the section's buffer. */
async function readRunSection(
  reader: ComposedReader,
  block: number,
  run: PageRun,
): Promise<Uint8Array> {
  const out = new Uint8Array(runSectionBytes(run.pageCount));
  const view = new DataView(out.buffer);
  view.setUint32(0, SECTION.run, true);
  view.setUint32(4, out.length - SECTION_HEADER_BYTES, true);
  out.set(encodeRunPrefix(block, run.firstPage, run.pageCount), SECTION_HEADER_BYTES);
  await reader.read(out.subarray(SECTION_HEADER_BYTES + RUN_PREFIX_BYTES), run);
  view.setUint32(8, sectionCrc(out.subarray(0, 8), out.subarray(SECTION_HEADER_BYTES)), true);
  return out;
}
