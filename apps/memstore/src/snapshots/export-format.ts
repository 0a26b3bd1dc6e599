import { MemstoreError } from '../errors.js';
import { crc32c } from './crc32c.js';
import type { SnapshotKind } from './snapshot.js';

/**
 * The snapshot export file, version 1.0 (FORMAT.md beside this file has the byte layout and the
 * rules): a preamble, then length-prefixed, CRC-32C-checked sections — the header, the device
 * state, each block's page runs in block order and ascending page order, and a trailer.
 * Little-endian throughout. This module holds the constants and the encoding and decoding of
 * single sections; `export-parser.ts` checks a whole stream, `export-writer.ts` produces one.
 */

/** `\x89HSNAP\r\n`: not text, and mangled by any text-mode transfer. */
export const EXPORT_MAGIC = new Uint8Array([0x89, 0x48, 0x53, 0x4e, 0x41, 0x50, 0x0d, 0x0a]);
export const EXPORT_FORMAT_MAJOR = 1;
export const EXPORT_FORMAT_MINOR = 0;
export const PREAMBLE_BYTES = 16;
export const SECTION_HEADER_BYTES = 12;
export const PAGE_BYTES = 4096;
/** Most pages one run section carries (1 MiB of data). */
export const MAX_RUN_PAGES = 256;
/** Bytes of a run section's payload before its pages. */
export const RUN_PREFIX_BYTES = 16;
export const TRAILER_PAYLOAD_BYTES = 16;
/** Largest header payload accepted (a 1 MiB spec plus the block table). */
export const MAX_HEADER_PAYLOAD_BYTES = 2 * 1024 * 1024;

/** Section types. */
export const SECTION = { header: 1, deviceState: 2, run: 3, trailer: 4 } as const;
export type SectionType = (typeof SECTION)[keyof typeof SECTION];

const KIND_CODES: Record<SnapshotKind, number> = { bypass: 1, full: 2, imported: 3 };
const KINDS_BY_CODE = new Map(Object.entries(KIND_CODES).map(([k, v]) => [v, k as SnapshotKind]));

/** One block of the header's block table. */
export interface ExportBlock {
  readonly id: string;
  readonly guestBase: number;
  readonly size: number;
  /** Run sections that follow for this block. */
  readonly runCount: number;
  /** Pages those runs carry in all. */
  readonly storedPages: number;
}

/** The header section's content. */
export interface ExportHeader {
  readonly name: string;
  readonly kind: SnapshotKind;
  readonly template: boolean;
  readonly vmName: string;
  /** ms since the Unix epoch. */
  readonly createdAt: number;
  readonly vmSpec: Uint8Array;
  readonly deviceStateBytes: number;
  readonly deviceStateCrc32c: number;
  readonly blocks: readonly ExportBlock[];
}

/** SNAPSHOT_FORMAT with `detail` and what to do. */
export function formatError(detail: string): MemstoreError {
  return new MemstoreError(
    'SNAPSHOT_FORMAT',
    `not a valid snapshot file: ${detail}; export the snapshot again from its memstore`,
  );
}

/**
 * The versioning rule: a reader of major M loads every file of major M, whatever its minor
 * (a later minor only appends fields at the end of section payloads, which an older reader
 * skips; anything else needs a new major). Another major is refused.
 */
export function formatVersionLoads(
  major: number,
  _minor: number,
  readerMajor: number = EXPORT_FORMAT_MAJOR,
): boolean {
  return major === readerMajor;
}

/** The 16-byte preamble. */
export function encodePreamble(
  major = EXPORT_FORMAT_MAJOR,
  minor = EXPORT_FORMAT_MINOR,
): Uint8Array {
  const out = new Uint8Array(PREAMBLE_BYTES);
  out.set(EXPORT_MAGIC);
  const view = new DataView(out.buffer);
  view.setUint16(8, major, true);
  view.setUint16(10, minor, true);
  view.setUint32(12, crc32c(out.subarray(0, 12)), true);
  return out;
}

/** Checks a preamble; returns its version. SNAPSHOT_FORMAT. */
export function decodePreamble(bytes: Uint8Array): { major: number; minor: number } {
  for (let i = 0; i < EXPORT_MAGIC.length; i++) {
    if (bytes[i] !== EXPORT_MAGIC[i]) {
      throw formatError('bad magic (the file does not start with the snapshot file signature)');
    }
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, PREAMBLE_BYTES);
  const major = view.getUint16(8, true);
  const minor = view.getUint16(10, true);
  const crc = crc32c(bytes.subarray(0, 12));
  if (crc !== view.getUint32(12, true)) throw formatError('the preamble fails its CRC-32C check');
  if (!formatVersionLoads(major, minor)) {
    throw formatError(
      `format version ${major}.${minor} has another major version than this memstore reads ` +
        `(${EXPORT_FORMAT_MAJOR}.x)${major > EXPORT_FORMAT_MAJOR ? '; import it with a newer memstore' : ''}`,
    );
  }
  return { major, minor };
}

/** A whole section: its 12-byte header (type, length, CRC-32C) followed by `payload`. */
export function encodeSection(type: SectionType, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(SECTION_HEADER_BYTES + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, type, true);
  view.setUint32(4, payload.length, true);
  out.set(payload, SECTION_HEADER_BYTES);
  view.setUint32(8, sectionCrc(out.subarray(0, 8), payload), true);
  return out;
}

/** CRC-32C of a section: its type and length bytes, then its payload. */
export function sectionCrc(typeAndLength: Uint8Array, payload: Uint8Array): number {
  return crc32c(payload, crc32c(typeAndLength));
}

/** A run section's payload prefix: block index, page count, first page. */
export function encodeRunPrefix(block: number, firstPage: number, pageCount: number): Uint8Array {
  const out = new Uint8Array(RUN_PREFIX_BYTES);
  const view = new DataView(out.buffer);
  view.setUint16(0, block, true);
  view.setUint32(4, pageCount, true);
  view.setBigUint64(8, BigInt(firstPage), true);
  return out;
}

/** The trailer's payload: the file's total length and its run count. */
export function encodeTrailer(totalBytes: number, runCount: number): Uint8Array {
  const out = new Uint8Array(TRAILER_PAYLOAD_BYTES);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(totalBytes), true);
  view.setUint32(8, runCount, true);
  return out;
}

/** Bytes of a run section carrying `pages` pages. */
export function runSectionBytes(pages: number): number {
  return SECTION_HEADER_BYTES + RUN_PREFIX_BYTES + pages * PAGE_BYTES;
}

// --- the header section ----------------------------------------------------------------------

/** Appends little-endian fields to a growing byte array. */
class FieldWriter {
  private readonly parts: Uint8Array[] = [];
  private length = 0;

  private add(bytes: Uint8Array): void {
    this.parts.push(bytes);
    this.length += bytes.length;
  }

  private fixed(size: number, set: (v: DataView) => void): void {
    const b = new Uint8Array(size);
    set(new DataView(b.buffer));
    this.add(b);
  }

  u8(v: number): void {
    this.fixed(1, (d) => d.setUint8(0, v));
  }
  u16(v: number): void {
    this.fixed(2, (d) => d.setUint16(0, v, true));
  }
  u32(v: number): void {
    this.fixed(4, (d) => d.setUint32(0, v, true));
  }
  u64(v: number): void {
    this.fixed(8, (d) => d.setBigUint64(0, BigInt(v), true));
  }
  bytes(b: Uint8Array): void {
    this.add(b);
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

/** Reads little-endian fields, each bounds-checked against the payload. */
class FieldReader {
  private at = 0;
  private readonly view: DataView;

  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  private take(size: number, field: string): number {
    if (this.at + size > this.buf.length) {
      throw formatError(
        `the header ends inside its field ${field} (header of ${this.buf.length} bytes)`,
      );
    }
    const at = this.at;
    this.at += size;
    return at;
  }

  u8(field: string): number {
    return this.view.getUint8(this.take(1, field));
  }
  u16(field: string): number {
    return this.view.getUint16(this.take(2, field), true);
  }
  u32(field: string): number {
    return this.view.getUint32(this.take(4, field), true);
  }
  u64(field: string): number {
    const v = this.view.getBigUint64(this.take(8, field), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER))
      throw formatError(`header field ${field} is ${v}, out of range`);
    return Number(v);
  }
  bytes(length: number, field: string): Uint8Array {
    const at = this.take(length, field);
    return this.buf.subarray(at, at + length);
  }
  text(length: number, field: string): string {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(this.bytes(length, field));
    } catch (err) {
      if (err instanceof TypeError) throw formatError(`header field ${field} is not UTF-8`);
      throw err;
    }
  }
  get remaining(): number {
    return this.buf.length - this.at;
  }
}

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/** The header section's payload. */
export function encodeHeader(h: ExportHeader): Uint8Array {
  const w = new FieldWriter();
  const name = utf8(h.name);
  const vmName = utf8(h.vmName);
  w.u16(name.length);
  w.bytes(name);
  w.u8(KIND_CODES[h.kind]);
  w.u8(h.template ? 1 : 0);
  w.u16(vmName.length);
  w.bytes(vmName);
  w.u64(h.createdAt);
  w.u32(h.vmSpec.length);
  w.bytes(h.vmSpec);
  w.u32(h.deviceStateBytes);
  w.u32(h.deviceStateCrc32c);
  w.u16(h.blocks.length);
  for (const b of h.blocks) {
    const id = utf8(b.id);
    w.u8(id.length);
    w.bytes(id);
    w.u64(b.guestBase);
    w.u64(b.size);
    w.u32(b.runCount);
    w.u64(b.storedPages);
  }
  return w.finish();
}

/**
 * Decodes a header payload: every field is bounds-checked; the values are checked by the
 * parser. Trailing bytes are refused in a 1.0 file, skipped in a later minor (its additions).
 */
export function decodeHeader(payload: Uint8Array, minor: number): ExportHeader {
  const r = new FieldReader(payload);
  const name = r.text(r.u16('name length'), 'name');
  const kindCode = r.u8('kind');
  const kind = KINDS_BY_CODE.get(kindCode);
  if (kind === undefined) throw formatError(`unknown snapshot kind ${kindCode} in the header`);
  const flags = r.u8('flags');
  if ((flags & ~1) !== 0) throw formatError(`unknown header flags ${flags}`);
  const vmName = r.text(r.u16('vm name length'), 'vm name');
  const createdAt = r.u64('created');
  const vmSpec = new Uint8Array(r.bytes(r.u32('spec length'), 'spec'));
  const deviceStateBytes = r.u32('device state length');
  const deviceStateCrc32c = r.u32('device state CRC-32C');
  const count = r.u16('block count');
  const blocks: ExportBlock[] = [];
  for (let i = 0; i < count; i++) {
    const id = r.text(r.u8(`block ${i} id length`), `block ${i} id`);
    blocks.push({
      id,
      guestBase: r.u64(`block ${i} guest base`),
      size: r.u64(`block ${i} size`),
      runCount: r.u32(`block ${i} run count`),
      storedPages: r.u64(`block ${i} stored pages`),
    });
  }
  if (r.remaining > 0 && minor <= EXPORT_FORMAT_MINOR) {
    throw formatError(`the header has ${r.remaining} bytes after its last field`);
  }
  return {
    name,
    kind,
    template: (flags & 1) === 1,
    vmName,
    createdAt,
    vmSpec,
    deviceStateBytes,
    deviceStateCrc32c,
    blocks,
  };
}
