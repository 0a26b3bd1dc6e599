/**
 * Writes the golden export file of the format version this build writes:
 * `src/snapshots/fixtures/snapshot-v<major>.<minor>.hsnap`, a tiny snapshot (one 64 KiB block
 * with four stored pages in three runs) that `import-fixture.test.ts` imports and checks byte by
 * byte from then on. Golden files never change: it refuses to overwrite one (bump the format's
 * minor or major first, FORMAT.md "Versioning"). Run against the build:
 *
 *   npx tsc -b apps/memstore/tsconfig.json && node apps/memstore/dist/snapshots/testing/make-fixture.js [folder]
 *
 * The file is made by the real writer (exportSections) from a region file holding the pages.
 */
import {
  existsSync,
  mkdtempSync,
  openSync,
  closeSync,
  rmSync,
  writeFileSync,
  writeSync,
  ftruncateSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32c } from '../crc32c.js';
import {
  EXPORT_FORMAT_MAJOR,
  EXPORT_FORMAT_MINOR,
  PAGE_BYTES,
  type ExportHeader,
} from '../export-format.js';
import { exportLength, exportSections, type ExportSource, type PageRun } from '../export-writer.js';

/** The block's size: 16 pages. */
export const FIXTURE_BLOCK_BYTES = 64 * 1024;
/** The runs of stored pages (pages 0-1, 5 and 15). */
export const FIXTURE_RUNS: readonly PageRun[] = [
  { firstPage: 0, pageCount: 2 },
  { firstPage: 5, pageCount: 1 },
  { firstPage: 15, pageCount: 1 },
];

/** The content of stored page `page` (every other page of the block is zero). */
export function fixturePage(page: number): Uint8Array {
  const out = new Uint8Array(PAGE_BYTES);
  if (page === 15) {
    out.set(new TextEncoder().encode('handoff snapshot fixture, last page'));
    return out;
  }
  for (let i = 0; i < PAGE_BYTES; i++) out[i] = (page * 31 + i * 7 + 1) & 0xff;
  return out;
}

/** The block's whole memory as the fixture describes it. */
export function fixtureMemory(): Uint8Array {
  const out = new Uint8Array(FIXTURE_BLOCK_BYTES);
  for (const run of FIXTURE_RUNS) {
    for (let p = run.firstPage; p < run.firstPage + run.pageCount; p++)
      out.set(fixturePage(p), p * PAGE_BYTES);
  }
  return out;
}

/** The fixture's device state (opaque to memstore: 200 patterned bytes). */
export const FIXTURE_DEVICE_STATE = new Uint8Array(200).map((_, i) => (i * 13 + 3) & 0xff);
/** The fixture's VM spec bytes (opaque to memstore). */
export const FIXTURE_VM_SPEC = new Uint8Array([0x0a, 0x07, ...new TextEncoder().encode('fixture')]);

/** The fixture's header. */
export function fixtureHeader(): ExportHeader {
  return {
    name: 'fixture',
    kind: 'full',
    template: true,
    vmName: 'fixture-vm',
    createdAt: Date.UTC(2025, 0, 2, 3, 4, 5),
    vmSpec: FIXTURE_VM_SPEC,
    deviceStateBytes: FIXTURE_DEVICE_STATE.length,
    deviceStateCrc32c: crc32c(FIXTURE_DEVICE_STATE),
    blocks: [
      {
        id: 'ram0',
        guestBase: 0x8000_0000,
        size: FIXTURE_BLOCK_BYTES,
        runCount: FIXTURE_RUNS.length,
        storedPages: FIXTURE_RUNS.reduce((n, r) => n + r.pageCount, 0),
      },
    ],
  };
}

/** The fixture file's bytes, made by the export writer from a region file with the pages. */
export async function makeFixture(): Promise<Uint8Array> {
  const dir = mkdtempSync(join(tmpdir(), 'memstore-fixture-'));
  try {
    const path = join(dir, 'ram0');
    const fd = openSync(path, 'w');
    try {
      ftruncateSync(fd, FIXTURE_BLOCK_BYTES);
      const memory = fixtureMemory();
      for (const run of FIXTURE_RUNS) {
        const at = run.firstPage * PAGE_BYTES;
        writeSync(fd, memory, at, run.pageCount * PAGE_BYTES, at);
      }
    } finally {
      closeSync(fd);
    }
    const header = fixtureHeader();
    const sources: ExportSource[] = [{ layers: [{ path, pages: undefined }], runs: FIXTURE_RUNS }];
    const plan = {
      header,
      deviceState: FIXTURE_DEVICE_STATE,
      sources,
      totalBytes: exportLength(header, FIXTURE_DEVICE_STATE.length, sources),
    };
    const parts: Uint8Array[] = [];
    for await (const section of exportSections(plan)) parts.push(section);
    return Buffer.concat(parts);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Name of the golden file of a format version. */
export function fixtureFileName(major = EXPORT_FORMAT_MAJOR, minor = EXPORT_FORMAT_MINOR): string {
  return `snapshot-v${major}.${minor}.hsnap`;
}

async function main(): Promise<void> {
  const here = fileURLToPath(new URL('.', import.meta.url));
  // From dist/snapshots/testing/ to src/snapshots/fixtures/.
  const folder = resolve(
    process.argv[2] ?? join(here, '..', '..', '..', 'src', 'snapshots', 'fixtures'),
  );
  const path = join(folder, fixtureFileName());
  if (existsSync(path)) {
    console.error(
      `${path} exists, and golden files never change. If the writer's output changed, bump ` +
        'EXPORT_FORMAT_MINOR (or MAJOR) in src/snapshots/export-format.ts first (FORMAT.md, "Versioning").',
    );
    process.exit(1);
  }
  writeFileSync(path, await makeFixture());
  console.log(`wrote ${path}`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
