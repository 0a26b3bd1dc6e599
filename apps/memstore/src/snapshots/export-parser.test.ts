import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { crc32c } from './crc32c.js';
import {
  encodeHeader,
  encodePreamble,
  encodeRunPrefix,
  encodeSection,
  encodeTrailer,
  formatVersionLoads,
  PREAMBLE_BYTES,
  SECTION,
  SECTION_HEADER_BYTES,
  type ExportHeader,
} from './export-format.js';
import { SnapshotFileParser, type ParsedSection } from './export-parser.js';
import {
  FIXTURE_DEVICE_STATE,
  FIXTURE_RUNS,
  fixtureFileName,
  fixtureHeader,
  fixturePage,
  makeFixture,
} from './testing/make-fixture.js';

const FIXTURE = new Uint8Array(
  readFileSync(fileURLToPath(new URL(`./fixtures/${fixtureFileName(1, 0)}`, import.meta.url))),
);
const MAX_BLOCK = 1 << 30;

/** Offsets of the fixture's sections. */
const HEADER_AT = PREAMBLE_BYTES;
const headerPayloadBytes = encodeHeader(fixtureHeader()).length;
const STATE_AT = HEADER_AT + SECTION_HEADER_BYTES + headerPayloadBytes;
const FIRST_RUN_AT = STATE_AT + SECTION_HEADER_BYTES + FIXTURE_DEVICE_STATE.length;

/** Parses `file` pushed in pieces of `step` bytes; returns the sections, copied. */
function parse(file: Uint8Array, step = file.length, maxBlockSize = MAX_BLOCK): ParsedSection[] {
  const parser = new SnapshotFileParser({ maxBlockSize });
  const out: ParsedSection[] = [];
  for (let at = 0; at < file.length; at += step) {
    for (const s of parser.push(file.slice(at, at + step))) {
      out.push(s.type === 'run' ? { ...s, data: s.data.slice() } : s);
    }
  }
  parser.finish();
  return out;
}

/** The SNAPSHOT_FORMAT message parsing `file` fails with. */
function refusal(file: Uint8Array, step?: number, maxBlockSize?: number): string {
  try {
    parse(file, step, maxBlockSize);
  } catch (err) {
    expect(err).toMatchObject({ code: 'SNAPSHOT_FORMAT' });
    return (err as Error).message;
  }
  throw new Error('expected the file to be refused');
}

/** A file from its parts: preamble, header, state, runs (block, first page, pages) and trailer. */
function build(opts: {
  header?: ExportHeader;
  state?: Uint8Array;
  runs?: { block: number; firstPage: number; pages: Uint8Array[] }[];
  major?: number;
  minor?: number;
  headerPayload?: Uint8Array;
  /** Bytes a later minor appends to the trailer. */
  trailerExtra?: Uint8Array;
}): Uint8Array {
  const header = opts.header ?? fixtureHeader();
  const parts: Uint8Array[] = [
    encodePreamble(opts.major, opts.minor),
    encodeSection(SECTION.header, opts.headerPayload ?? encodeHeader(header)),
    encodeSection(SECTION.deviceState, opts.state ?? FIXTURE_DEVICE_STATE),
  ];
  const runs =
    opts.runs ??
    FIXTURE_RUNS.map((r) => ({
      block: 0,
      firstPage: r.firstPage,
      pages: Array.from({ length: r.pageCount }, (_, i) => fixturePage(r.firstPage + i)),
    }));
  for (const r of runs) {
    const payload = Buffer.concat([
      encodeRunPrefix(r.block, r.firstPage, r.pages.length),
      ...r.pages,
    ]);
    parts.push(encodeSection(SECTION.run, payload));
  }
  const soFar = parts.reduce((n, p) => n + p.length, 0);
  const extra = opts.trailerExtra ?? new Uint8Array(0);
  const total = soFar + SECTION_HEADER_BYTES + 16 + extra.length;
  parts.push(
    encodeSection(SECTION.trailer, Buffer.concat([encodeTrailer(total, runs.length), extra])),
  );
  return Buffer.concat(parts);
}

describe('the golden 1.0 fixture', () => {
  it('is what the generator makes, and parses into its header, state and runs', async () => {
    expect(Buffer.from(await makeFixture()).equals(Buffer.from(FIXTURE))).toBe(true);
    const sections = parse(FIXTURE);
    expect(sections.map((s) => s.type)).toEqual([
      'header',
      'deviceState',
      'run',
      'run',
      'run',
      'end',
    ]);
    expect(sections[0]).toEqual({ type: 'header', header: fixtureHeader() });
    expect(sections[1]).toEqual({ type: 'deviceState', bytes: FIXTURE_DEVICE_STATE });
    const runs = sections.filter((s) => s.type === 'run');
    expect(runs.map((r) => [r.block, r.firstPage, r.pageCount])).toEqual([
      [0, 0, 2],
      [0, 5, 1],
      [0, 15, 1],
    ]);
    expect(runs[0]!.data).toEqual(new Uint8Array(Buffer.concat([fixturePage(0), fixturePage(1)])));
    expect(runs[2]!.data).toEqual(fixturePage(15));
  });

  it('parses the same whatever the pieces it arrives in', () => {
    const whole = parse(FIXTURE);
    for (const step of [1, 7, 12, 4096, 5000]) expect(parse(FIXTURE, step)).toEqual(whole);
  });

  it('is rebuilt identically from its parts (the test helper writes the format)', () => {
    expect(Buffer.from(build({})).equals(Buffer.from(FIXTURE))).toBe(true);
  });
});

describe('hostile files are refused with SNAPSHOT_FORMAT saying what is wrong', () => {
  const flip = (at: number): Uint8Array => {
    const f = FIXTURE.slice();
    f[at]! ^= 0x04;
    return f;
  };

  it('a flipped byte in the preamble, header, device state or a page run', () => {
    expect(refusal(flip(2))).toMatch(/bad magic/);
    expect(refusal(flip(9))).toMatch(/preamble fails its CRC-32C/);
    expect(refusal(flip(HEADER_AT + SECTION_HEADER_BYTES + 3))).toMatch(
      new RegExp(`header section at offset ${HEADER_AT} fails its CRC-32C`),
    );
    expect(refusal(flip(STATE_AT + SECTION_HEADER_BYTES + 100))).toMatch(
      /device state section .* fails its CRC-32C/,
    );
    expect(refusal(flip(FIRST_RUN_AT + SECTION_HEADER_BYTES + 16 + 5000))).toMatch(
      new RegExp(`page run section at offset ${FIRST_RUN_AT} fails its CRC-32C`),
    );
    // A flipped length is caught before the section is buffered, or by the CRC.
    expect(refusal(flip(STATE_AT + 4))).toMatch(
      /device state section .* claims 204 bytes; it must hold exactly 200/,
    );
  });

  it('a file cut short anywhere', () => {
    const cuts = [
      0,
      5,
      PREAMBLE_BYTES,
      HEADER_AT + 20,
      STATE_AT + 3,
      FIRST_RUN_AT + 100,
      FIXTURE.length - 1,
    ];
    for (const cut of cuts) {
      expect(refusal(FIXTURE.subarray(0, cut)), `cut at ${cut}`).toMatch(/truncated/);
    }
    expect(refusal(FIXTURE.subarray(0, FIXTURE.length - 28))).toMatch(
      /before its trailer \(truncated\)/,
    );
  });

  it('bytes after the trailer', () => {
    expect(refusal(Buffer.concat([FIXTURE, new Uint8Array([0])]))).toMatch(
      /1 bytes follow the trailer/,
    );
  });

  it('a newer (or older) major version, whatever its minor', () => {
    expect(refusal(build({ major: 2 }))).toMatch(
      /format version 2\.0 .* import it with a newer memstore/,
    );
    expect(refusal(build({ major: 0, minor: 9 }))).toMatch(/format version 0\.9 has another major/);
  });

  it('a run outside its block, overlapping, out of order, or not announced', () => {
    const page = fixturePage(1);
    expect(refusal(build({ runs: [{ block: 0, firstPage: 16, pages: [page] }] }))).toMatch(
      /covers pages \[16, 17\) outside block "ram0", which has 16 pages/,
    );
    expect(refusal(build({ runs: [{ block: 0, firstPage: 15, pages: [page, page] }] }))).toMatch(
      /outside block "ram0"/,
    );
    expect(refusal(build({ runs: [{ block: 0, firstPage: 2 ** 60, pages: [page] }] }))).toMatch(
      /outside block/,
    );
    expect(refusal(build({ runs: [{ block: 1, firstPage: 0, pages: [page] }] }))).toMatch(
      /names block 1; .* has 1 block/,
    );
    const overlap = [
      { block: 0, firstPage: 0, pages: [page, page] },
      { block: 0, firstPage: 1, pages: [page] },
      { block: 0, firstPage: 15, pages: [page] },
    ];
    expect(refusal(build({ runs: overlap }))).toMatch(
      /starts at page 1 .* runs ascend and do not overlap/,
    );
    expect(
      refusal(
        build({
          runs: FIXTURE_RUNS.slice(0, 2).map((r) => ({
            block: 0,
            firstPage: r.firstPage,
            pages: [page],
          })),
        }),
      ),
    ).toMatch(/has 2 run\(s\) of 2 page\(s\), but its header says 3 run\(s\) of 4 page\(s\)/);
  });

  it('a block larger than the largest region, or a table that cannot be', () => {
    const big = { ...fixtureHeader(), blocks: [{ ...fixtureHeader().blocks[0]!, size: 2 ** 40 }] };
    expect(refusal(build({ header: big, runs: [] }))).toMatch(
      /larger than the largest region .*--max-region-size/,
    );
    expect(refusal(FIXTURE, undefined, 32 * 1024)).toMatch(/block "ram0" is 65536 bytes, larger/);
    const lying = {
      ...fixtureHeader(),
      blocks: [{ ...fixtureHeader().blocks[0]!, storedPages: 17 }],
    };
    expect(refusal(build({ header: lying }))).toMatch(
      /claims 3 run\(s\) of 17 page\(s\) in all, which cannot be/,
    );
    const twice = {
      ...fixtureHeader(),
      blocks: [fixtureHeader().blocks[0]!, fixtureHeader().blocks[0]!],
    };
    expect(refusal(build({ header: twice }))).toMatch(/given twice/);
    const badName = { ...fixtureHeader(), name: '../etc' };
    expect(refusal(build({ header: badName }))).toMatch(
      /snapshot name in the file "..\/etc" is not valid/,
    );
  });

  it('a header that ends inside a field, a section where another must come, a huge claimed length', () => {
    const header = encodeHeader(fixtureHeader());
    expect(refusal(build({ headerPayload: header.subarray(0, header.length - 3) }))).toMatch(
      /header ends inside its field block 0 stored pages/,
    );
    expect(refusal(build({ headerPayload: Buffer.concat([header, new Uint8Array(1)]) }))).toMatch(
      /1 bytes after its last field/,
    );
    const swapped = Buffer.concat([
      encodePreamble(),
      encodeSection(SECTION.deviceState, FIXTURE_DEVICE_STATE),
    ]);
    expect(refusal(swapped)).toMatch(
      /type 2 \(device state\) at offset 16 where a header section must come/,
    );
    const huge = Buffer.concat([
      encodePreamble(),
      new Uint8Array([1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
    ]);
    expect(refusal(huge)).toMatch(/claims 4294967295 bytes; it must hold 0 to 2097152/);
  });
});

describe('the versioning rule', () => {
  it('loads every minor of its major and no other major', () => {
    for (const minor of [0, 1, 5, 65535]) expect(formatVersionLoads(1, minor)).toBe(true);
    expect(formatVersionLoads(2, 0)).toBe(false);
    expect(formatVersionLoads(0, 0)).toBe(false);
    // A reader of a later major (2.x) would refuse 1.x files in turn.
    expect(formatVersionLoads(1, 0, 2)).toBe(false);
  });

  it('reads a later minor that appended fields to the header and trailer', () => {
    const header = encodeHeader(fixtureHeader());
    const file = build({
      minor: 3,
      headerPayload: Buffer.concat([header, new Uint8Array([9, 9, 9])]),
      trailerExtra: new Uint8Array(8),
    });
    const sections = parse(file);
    expect(sections[0]).toEqual({ type: 'header', header: fixtureHeader() });
    expect(sections.at(-1)).toEqual({ type: 'end' });
    expect(crc32c(FIXTURE)).not.toBe(crc32c(file));
    // The same additions in a 1.0 file are refused.
    expect(refusal(build({ trailerExtra: new Uint8Array(8) }))).toMatch(
      /trailer section .* claims 24 bytes/,
    );
  });
});
