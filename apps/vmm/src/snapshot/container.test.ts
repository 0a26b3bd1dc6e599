import { describe, expect, it } from 'vitest';

import {
  CONTAINER_HEADER_BYTES,
  CONTAINER_MAGIC,
  CONTAINER_VERSION_MAJOR,
  CONTAINER_VERSION_MINOR,
  MAX_CONTAINER_BYTES,
  MAX_SECTIONS,
  MAX_SECTION_NAME_BYTES,
  decodeContainer,
  encodeContainer,
  isValidSectionName,
  type ContainerSection,
} from './container.js';
import { SnapshotError, isSnapshotError, type SnapshotErrorCode } from './errors.js';
import { reseal } from './test-support.js';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

const SECTIONS: ContainerSection[] = [
  { name: 'cpu', version: 1, optional: false, body: text('{"a":1}') },
  { name: 'uart.modem', version: 3, optional: true, body: text('[]') },
  { name: 'empty', version: 7, optional: false, body: new Uint8Array(0) },
];

/** The code of the SnapshotError `fn` throws (fails the test on any other outcome). */
function codeOf(fn: () => unknown): SnapshotErrorCode {
  try {
    fn();
  } catch (err) {
    if (!isSnapshotError(err)) throw new Error(`expected a SnapshotError, got ${String(err)}`);
    return err.code;
  }
  throw new Error('expected a SnapshotError, but nothing was thrown');
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
}

describe('container framing', () => {
  it('round-trips sections, names, versions, flags and bodies', () => {
    const bytes = encodeContainer(SECTIONS);
    expect(Array.from(bytes.subarray(0, 8))).toEqual(CONTAINER_MAGIC);
    const { header, sections } = decodeContainer(bytes);
    expect(header).toMatchObject({
      major: 1,
      minor: CONTAINER_VERSION_MINOR,
      headerLength: CONTAINER_HEADER_BYTES,
      flags: 0,
      sectionCount: 3,
      totalLength: bytes.length,
    });
    expect(sections.map(({ name, version, optional }) => ({ name, version, optional }))).toEqual(
      SECTIONS.map(({ name, version, optional }) => ({ name, version, optional })),
    );
    sections.forEach((s, k) => expect(s.body).toEqual(SECTIONS[k]!.body));
    expect(sections[0]!.bodyOffset).toBe(CONTAINER_HEADER_BYTES + 12 + 3);
  });

  it('reads a container that sits at an offset inside a larger buffer', () => {
    const bytes = encodeContainer(SECTIONS);
    const big = new Uint8Array(bytes.length + 13);
    big.set(bytes, 5);
    const { sections } = decodeContainer(big.subarray(5, 5 + bytes.length));
    expect(new TextDecoder().decode(sections[0]!.body)).toBe('{"a":1}');
  });

  it('accepts an empty section table', () => {
    expect(decodeContainer(encodeContainer([])).sections).toEqual([]);
  });
});

describe('container attacks', () => {
  const valid = encodeContainer(SECTIONS);

  it('rejects bad magic', () => {
    const bytes = valid.slice();
    bytes[3] = 0x00;
    expect(codeOf(() => decodeContainer(bytes))).toBe('SNAPSHOT_BAD_MAGIC');
    expect(codeOf(() => decodeContainer(text('{"not":"a container"}')))).toBe('SNAPSHOT_BAD_MAGIC');
    expect(() => decodeContainer(bytes)).toThrow(/HNDFDEV/);
  });

  it('rejects a bad CRC', () => {
    const bytes = valid.slice();
    bytes[bytes.length - 1]! ^= 0x01;
    expect(codeOf(() => decodeContainer(bytes))).toBe('SNAPSHOT_BAD_CRC');
    const crcField = valid.slice();
    crcField[29]! ^= 0x40;
    expect(codeOf(() => decodeContainer(crcField))).toBe('SNAPSHOT_BAD_CRC');
  });

  it('rejects every single-byte corruption with a SnapshotError', () => {
    for (let k = 0; k < valid.length; k++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const bytes = valid.slice();
        bytes[k]! ^= mask;
        expect(() => decodeContainer(bytes), `byte ${k} ^ ${mask}`).toThrow(SnapshotError);
      }
    }
  });

  it('rejects every truncation as SNAPSHOT_TRUNCATED', () => {
    for (let n = 0; n < valid.length; n++) {
      expect(
        codeOf(() => decodeContainer(valid.subarray(0, n))),
        `length ${n}`,
      ).toBe('SNAPSHOT_TRUNCATED');
    }
  });

  it('rejects trailing bytes after the declared end', () => {
    const bytes = new Uint8Array(valid.length + 1);
    bytes.set(valid);
    expect(codeOf(() => decodeContainer(bytes))).toBe('SNAPSHOT_MALFORMED');
  });

  it('rejects another major version, before reading the rest of the header', () => {
    for (const major of [0, CONTAINER_VERSION_MAJOR + 1, 0xffff]) {
      const bytes = valid.slice();
      view(bytes).setUint16(8, major, true);
      // Only magic and version: a major-2 header may look entirely different.
      expect(codeOf(() => decodeContainer(bytes.subarray(0, 12)))).toBe(
        'SNAPSHOT_UNSUPPORTED_VERSION',
      );
      expect(() => decodeContainer(bytes)).toThrow(
        new RegExp(`format ${major}\\.${CONTAINER_VERSION_MINOR} is not supported`),
      );
    }
  });

  it('loads a newer minor with a longer header and ignorable flags', () => {
    const bytes = encodeContainer(SECTIONS, {
      minor: 4,
      flags: 0x00010000,
      headerExtension: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]),
    });
    const { header, sections } = decodeContainer(bytes);
    expect(header).toMatchObject({ minor: 4, headerLength: 40, flags: 0x10000 });
    expect(sections.map((s) => s.name)).toEqual(['cpu', 'uart.modem', 'empty']);
  });

  it('rejects a newer minor that sets a must-understand flag', () => {
    const bytes = encodeContainer(SECTIONS, { minor: CONTAINER_VERSION_MINOR + 1, flags: 0x0001 });
    expect(codeOf(() => decodeContainer(bytes))).toBe('SNAPSHOT_UNSUPPORTED_VERSION');
  });

  it('rejects header flags and header lengths that format 1.0 does not define', () => {
    const flagged = valid.slice();
    view(flagged).setUint32(16, 0x00010000, true);
    expect(codeOf(() => decodeContainer(reseal(flagged)))).toBe('SNAPSHOT_MALFORMED');
    const longer = valid.slice();
    view(longer).setUint32(12, 36, true);
    view(longer).setUint32(24, view(valid).getUint32(24, true) - 4, true);
    expect(codeOf(() => decodeContainer(reseal(longer)))).toBe('SNAPSHOT_MALFORMED');
  });

  it('rejects oversized lengths and counts before reading further', () => {
    const body = valid.slice();
    view(body).setUint32(24, 0xffffffff, true);
    expect(codeOf(() => decodeContainer(body))).toBe('SNAPSHOT_TOO_LARGE');
    const count = valid.slice();
    view(count).setUint32(20, MAX_SECTIONS + 1, true);
    expect(codeOf(() => decodeContainer(count))).toBe('SNAPSHOT_TOO_LARGE');
    const header = encodeContainer(SECTIONS, { minor: CONTAINER_VERSION_MINOR + 1 });
    view(header).setUint32(12, 0x10000, true);
    expect(codeOf(() => decodeContainer(reseal(header)))).toBe('SNAPSHOT_MALFORMED');
    expect(codeOf(() => decodeContainer(new Uint8Array(MAX_CONTAINER_BYTES + 1)))).toBe(
      'SNAPSHOT_TOO_LARGE',
    );
  });

  it('rejects a section count that cannot fit the body', () => {
    const bytes = valid.slice();
    view(bytes).setUint32(20, 100, true);
    expect(codeOf(() => decodeContainer(reseal(bytes)))).toBe('SNAPSHOT_MALFORMED');
  });

  // Entry offsets of the first section (name 'cpu').
  const ENTRY = CONTAINER_HEADER_BYTES;

  it.each([
    ['a zero-length name', (v: DataView) => v.setUint16(ENTRY, 0, true)],
    ['a name longer than the limit', (v: DataView) => v.setUint16(ENTRY, 65, true)],
    ['reserved section flags', (v: DataView) => v.setUint16(ENTRY + 2, 0x8000, true)],
    ['section version 0', (v: DataView) => v.setUint32(ENTRY + 4, 0, true)],
    ['a body running past the end', (v: DataView) => v.setUint32(ENTRY + 8, 0xfffffff0, true)],
    ['a body shorter than the table needs', (v: DataView) => v.setUint32(ENTRY + 8, 3, true)],
    ['an upper-case name', (v: DataView) => v.setUint8(ENTRY + 12, 0x43)],
    ['a non-ASCII name', (v: DataView) => v.setUint8(ENTRY + 13, 0xc3)],
    ['a name with a trailing dot', (v: DataView) => v.setUint8(ENTRY + 14, 0x2e)],
  ])('rejects a section entry with %s (after the CRC passes)', (_what, edit) => {
    const bytes = valid.slice();
    edit(view(bytes));
    expect(codeOf(() => decodeContainer(reseal(bytes)))).toBe('SNAPSHOT_MALFORMED');
  });

  it('rejects duplicate sections', () => {
    const bytes = encodeContainer([SECTIONS[0]!, { ...SECTIONS[1]!, name: 'cpx' }]);
    bytes[CONTAINER_HEADER_BYTES + 12 + 3 + 7 + 12 + 2] = 0x75; // 'cpx' -> 'cpu'
    expect(codeOf(() => decodeContainer(reseal(bytes)))).toBe('SNAPSHOT_MALFORMED');
    expect(() => decodeContainer(reseal(bytes))).toThrow(/'cpu' appears twice/);
  });

  it('rejects input that is not bytes', () => {
    expect(codeOf(() => decodeContainer('HNDFDEV' as unknown as Uint8Array))).toBe(
      'SNAPSHOT_MALFORMED',
    );
    expect(codeOf(() => decodeContainer(null as unknown as Uint8Array))).toBe('SNAPSHOT_MALFORMED');
  });
});

describe('container writer', () => {
  it('validates section names', () => {
    for (const good of ['cpu', 'uart.modem', 'cpu0', 'virtio-net.rx_queue', 'a'.repeat(64)]) {
      expect(isValidSectionName(good), good).toBe(true);
    }
    for (const bad of ['', 'Cpu', '0cpu', 'cpu.', 'a..b', 'é', 'a b', 'a'.repeat(65)]) {
      expect(isValidSectionName(bad), bad).toBe(false);
    }
    expect(MAX_SECTION_NAME_BYTES).toBe(64);
  });

  it.each([
    ['a bad name', [{ ...SECTIONS[0]!, name: 'CPU' }]],
    ['a duplicate', [SECTIONS[0]!, SECTIONS[0]!]],
    ['version 0', [{ ...SECTIONS[0]!, version: 0 }]],
    ['a fractional version', [{ ...SECTIONS[0]!, version: 1.5 }]],
    ['a missing body', [{ ...SECTIONS[0]!, body: undefined as unknown as Uint8Array }]],
  ])('refuses %s', (_what, sections) => {
    expect(codeOf(() => encodeContainer(sections))).toBe('SNAPSHOT_MALFORMED');
  });

  it('refuses too many sections and too many bytes', () => {
    const many = Array.from({ length: MAX_SECTIONS + 1 }, (_, k) => ({
      ...SECTIONS[2]!,
      name: `s${k}`,
    }));
    expect(codeOf(() => encodeContainer(many))).toBe('SNAPSHOT_TOO_LARGE');
    const huge = [{ ...SECTIONS[0]!, body: new Uint8Array(MAX_CONTAINER_BYTES) }];
    expect(codeOf(() => encodeContainer(huge))).toBe('SNAPSHOT_TOO_LARGE');
  });

  it('refuses header flags or extensions under the current minor', () => {
    expect(codeOf(() => encodeContainer(SECTIONS, { flags: 1 }))).toBe('SNAPSHOT_MALFORMED');
    expect(codeOf(() => encodeContainer(SECTIONS, { minor: 0x10000 }))).toBe('SNAPSHOT_MALFORMED');
  });
});
