/**
 * The device-state container: a small, self-checking envelope of named, versioned sections.
 * This module is the framing only (header, section table, checksum); it knows nothing about
 * machines. What the sections hold is decided by `sections.ts`. FORMAT.md beside this file has
 * the byte layout, the versioning rules and the validation order.
 *
 * The container is a plain byte string so the same bytes can ride in the migration stream
 * (`DeviceState.container`) and in snapshot files.
 *
 * @packageDocumentation
 */

import { crc32 } from 'node:zlib';

import { SnapshotError, hex32 } from './errors.js';

/** The eight magic bytes, ASCII `HNDFDEV` and a NUL. */
export const CONTAINER_MAGIC: readonly number[] = Object.freeze([
  0x48, 0x4e, 0x44, 0x46, 0x44, 0x45, 0x56, 0x00,
]);
/** Major format version written and the only one read. Bump it for layout changes. */
export const CONTAINER_VERSION_MAJOR = 1;
/**
 * Minor format version written (1.1 added the `plic` section). Containers of any minor load if
 * they need nothing unknown.
 */
export const CONTAINER_VERSION_MINOR = 1;
/** Header size of format 1.0 (newer minors may declare a longer header; readers skip the rest). */
export const CONTAINER_HEADER_BYTES = 32;
/** Fixed part of a section entry, before its name and body. */
export const SECTION_ENTRY_BYTES = 12;
/** Largest container accepted or written: 16 MiB. */
export const MAX_CONTAINER_BYTES = 16 * 1024 * 1024;
/** Largest header a newer minor may declare. */
export const MAX_HEADER_BYTES = 4096;
/** Most sections in one container. */
export const MAX_SECTIONS = 256;
/** Longest section name in bytes. */
export const MAX_SECTION_NAME_BYTES = 64;
/** Section flag: a reader that does not know the section skips it (QEMU's optional subsection). */
export const SECTION_FLAG_OPTIONAL = 0x0001;
/**
 * Header flag bits a reader must understand to load the container (`0x0000ffff`); the upper
 * 16 bits are hints a reader may ignore. Format 1.0 defines no flag: writers set 0.
 */
export const HEADER_FLAGS_REQUIRED_MASK = 0x0000ffff;

/** Section names: lower-case ASCII words joined by `.`, `_` or `-`, e.g. `cpu`, `uart.modem`. */
const NAME_PATTERN = /^[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*$/;
/** Header flags this build understands (none in 1.0). */
const KNOWN_HEADER_FLAGS = 0;

// Byte offsets of the 1.0 header fields.
const OFF_MAJOR = 8;
const OFF_MINOR = 10;
const OFF_HEADER_LENGTH = 12;
const OFF_FLAGS = 16;
const OFF_SECTION_COUNT = 20;
const OFF_BODY_LENGTH = 24;
const OFF_CRC = 28;

/** The container header as read (all numbers unsigned). */
export interface ContainerHeader {
  readonly major: number;
  readonly minor: number;
  /** Bytes from the start of the container to the first section entry. */
  readonly headerLength: number;
  readonly flags: number;
  readonly sectionCount: number;
  /** Bytes of the section entries (everything after the header). */
  readonly bodyLength: number;
  /** Stored CRC-32 (ISO-HDLC, as zlib) of every byte but the CRC field. */
  readonly crc: number;
  /** headerLength + bodyLength: the size of the whole container. */
  readonly totalLength: number;
}

/** One section to write, or one section read. */
export interface ContainerSection {
  /** Unique name, see FORMAT.md for the charset (at most {@link MAX_SECTION_NAME_BYTES} bytes). */
  readonly name: string;
  /** The section's own version, ≥ 1, independent of the container version. */
  readonly version: number;
  /** True when a reader that does not know the section may skip it. */
  readonly optional: boolean;
  /** The section body (opaque to the container). */
  readonly body: Uint8Array;
}

/** A section read from a container: its body is a view into the input bytes, not a copy. */
export interface ContainerEntry extends ContainerSection {
  /** Offset of the body within the container. */
  readonly bodyOffset: number;
}

/** A validated container: header plus section table, in container order. */
export interface DecodedContainer {
  readonly header: ContainerHeader;
  readonly sections: readonly ContainerEntry[];
}

/**
 * Options of {@link encodeContainer}. Production writers use the defaults; the options exist to
 * write what a future minor version would (tests of forward compatibility).
 */
export interface EncodeContainerOptions {
  /** Minor version to stamp (default {@link CONTAINER_VERSION_MINOR}). */
  readonly minor?: number;
  /** Header flags (default 0). */
  readonly flags?: number;
  /** Extra header bytes after the 1.0 fields, as a newer minor may add (default none). */
  readonly headerExtension?: Uint8Array;
}

/**
 * Frames sections into a container.
 *
 * @throws SnapshotError `SNAPSHOT_MALFORMED` for a bad name, version, duplicate or option;
 *   `SNAPSHOT_TOO_LARGE` when the sections exceed {@link MAX_SECTIONS} or the result exceeds
 *   {@link MAX_CONTAINER_BYTES}
 */
export function encodeContainer(
  sections: readonly ContainerSection[],
  options: EncodeContainerOptions = {},
): Uint8Array {
  const minor = options.minor ?? CONTAINER_VERSION_MINOR;
  const flags = options.flags ?? 0;
  const extension = options.headerExtension ?? new Uint8Array(0);
  if (!isUint(minor, 0xffff) || !isUint(flags, 0xffffffff)) {
    refuse(`minor version ${minor} and flags ${flags} must be a u16 and a u32`);
  }
  if (minor <= CONTAINER_VERSION_MINOR && (flags !== 0 || extension.length !== 0)) {
    refuse(`format 1.${minor} defines no header flags or header extension`);
  }
  const headerLength = CONTAINER_HEADER_BYTES + extension.length;
  if (headerLength > MAX_HEADER_BYTES) refuse(`a header of ${headerLength} bytes is too long`);
  if (sections.length > MAX_SECTIONS) {
    throw new SnapshotError(
      'SNAPSHOT_TOO_LARGE',
      `cannot write ${sections.length} device-state sections: at most ${MAX_SECTIONS} fit in a ` +
        `container. Merge sections.`,
    );
  }
  const names = new Set<string>();
  const encodedNames: Uint8Array[] = [];
  let bodyLength = 0;
  for (const s of sections) {
    if (typeof s.name !== 'string' || !isValidSectionName(s.name)) {
      refuse(`section name ${JSON.stringify(String(s.name).slice(0, 80))} is not valid`);
    }
    if (names.has(s.name)) refuse(`section '${s.name}' appears twice`);
    names.add(s.name);
    if (!isUint(s.version, 0xffffffff) || s.version === 0) {
      refuse(`section '${s.name}' has version ${String(s.version)}; use an integer ≥ 1`);
    }
    if (!(s.body instanceof Uint8Array)) refuse(`section '${s.name}' has no byte body`);
    encodedNames.push(asciiBytes(s.name));
    bodyLength += SECTION_ENTRY_BYTES + s.name.length + s.body.length;
  }
  const total = headerLength + bodyLength;
  if (total > MAX_CONTAINER_BYTES) {
    throw new SnapshotError(
      'SNAPSHOT_TOO_LARGE',
      `device state needs ${total} bytes, more than the container limit of ` +
        `${MAX_CONTAINER_BYTES}. A device saves too much state; shrink its model.`,
    );
  }

  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(CONTAINER_MAGIC, 0);
  view.setUint16(OFF_MAJOR, CONTAINER_VERSION_MAJOR, true);
  view.setUint16(OFF_MINOR, minor, true);
  view.setUint32(OFF_HEADER_LENGTH, headerLength, true);
  view.setUint32(OFF_FLAGS, flags, true);
  view.setUint32(OFF_SECTION_COUNT, sections.length, true);
  view.setUint32(OFF_BODY_LENGTH, bodyLength, true);
  out.set(extension, CONTAINER_HEADER_BYTES);
  let pos = headerLength;
  sections.forEach((s, k) => {
    const name = encodedNames[k]!;
    view.setUint16(pos, name.length, true);
    view.setUint16(pos + 2, s.optional ? SECTION_FLAG_OPTIONAL : 0, true);
    view.setUint32(pos + 4, s.version, true);
    view.setUint32(pos + 8, s.body.length, true);
    out.set(name, pos + SECTION_ENTRY_BYTES);
    out.set(s.body, pos + SECTION_ENTRY_BYTES + name.length);
    pos += SECTION_ENTRY_BYTES + name.length + s.body.length;
  });
  view.setUint32(OFF_CRC, checksum(out, total), true);
  return out;
}

/**
 * Validates a container and returns its header and section table. Checks run in the order of
 * FORMAT.md ("Validation order"): size, magic, major version, header fields, lengths, CRC, then
 * every section entry. Bodies are not interpreted.
 *
 * @param bytes - untrusted input; never read outside its bounds
 * @throws SnapshotError and nothing else: `SNAPSHOT_TOO_LARGE`, `SNAPSHOT_BAD_MAGIC`,
 *   `SNAPSHOT_TRUNCATED`, `SNAPSHOT_UNSUPPORTED_VERSION`, `SNAPSHOT_MALFORMED`, `SNAPSHOT_BAD_CRC`
 */
export function decodeContainer(bytes: Uint8Array): DecodedContainer {
  const header = readHeader(bytes);
  const total = header.totalLength;
  const computed = checksum(bytes, total);
  if (computed !== header.crc) {
    throw new SnapshotError(
      'SNAPSHOT_BAD_CRC',
      `device-state checksum mismatch (stored ${hex32(header.crc)}, computed ${hex32(computed)}): ` +
        `the bytes were corrupted in transit or on disk. Send the device state again, or restore ` +
        `from another snapshot.`,
    );
  }

  const view = new DataView(bytes.buffer, bytes.byteOffset, total);
  const sections: ContainerEntry[] = [];
  const seen = new Set<string>();
  let pos = header.headerLength;
  for (let k = 0; k < header.sectionCount; k++) {
    if (total - pos < SECTION_ENTRY_BYTES) {
      malformed(`section entry ${k} of ${header.sectionCount} starts past the end of the body`);
    }
    const nameLength = view.getUint16(pos, true);
    const flags = view.getUint16(pos + 2, true);
    const version = view.getUint32(pos + 4, true);
    const bodyLength = view.getUint32(pos + 8, true);
    if (nameLength === 0 || nameLength > MAX_SECTION_NAME_BYTES) {
      malformed(
        `section entry ${k} has a name of ${nameLength} bytes (1–${MAX_SECTION_NAME_BYTES})`,
      );
    }
    if ((flags & ~SECTION_FLAG_OPTIONAL) !== 0) {
      malformed(`section entry ${k} sets reserved flag bits ${hex32(flags)}`);
    }
    if (version === 0) malformed(`section entry ${k} has version 0 (versions start at 1)`);
    const nameOffset = pos + SECTION_ENTRY_BYTES;
    const bodyOffset = nameOffset + nameLength;
    if (bodyOffset > total || bodyLength > total - bodyOffset) {
      malformed(
        `section entry ${k} declares a ${nameLength}-byte name and a ${bodyLength}-byte body ` +
          `that run past the end of the container`,
      );
    }
    const name = readName(bytes, nameOffset, nameLength);
    if (name === undefined) {
      malformed(
        `section entry ${k} has a name that is not lower-case ASCII words joined by '.', '_' or '-'`,
      );
    }
    if (seen.has(name)) malformed(`section '${name}' appears twice`);
    seen.add(name);
    sections.push({
      name,
      version,
      optional: (flags & SECTION_FLAG_OPTIONAL) !== 0,
      body: bytes.subarray(bodyOffset, bodyOffset + bodyLength),
      bodyOffset,
    });
    pos = bodyOffset + bodyLength;
  }
  if (pos !== total) {
    malformed(`${total - pos} bytes follow the last of ${header.sectionCount} section entries`);
  }
  return { header, sections };
}

/** True for a name that may label a section (see FORMAT.md). */
export function isValidSectionName(name: string): boolean {
  return name.length <= MAX_SECTION_NAME_BYTES && NAME_PATTERN.test(name);
}

// ---- internals ---------------------------------------------------------------------------------

/** Checks everything up to (not including) the CRC and returns the header. */
function readHeader(bytes: Uint8Array): ContainerHeader {
  if (!(bytes instanceof Uint8Array)) {
    malformed(`the input is ${typeof bytes}, not bytes; pass the received Uint8Array or Buffer`);
  }
  const length = bytes.length;
  if (length > MAX_CONTAINER_BYTES) {
    throw new SnapshotError(
      'SNAPSHOT_TOO_LARGE',
      `device state of ${length} bytes exceeds the limit of ${MAX_CONTAINER_BYTES}; it is not ` +
        `a device-state container from a Handoff vmm. Check what was passed in.`,
    );
  }
  const magicBytes = Math.min(length, CONTAINER_MAGIC.length);
  for (let k = 0; k < magicBytes; k++) {
    if (bytes[k] !== CONTAINER_MAGIC[k]) {
      throw new SnapshotError(
        'SNAPSHOT_BAD_MAGIC',
        `not a Handoff device-state container: the first bytes are not "HNDFDEV\\0". Pass the ` +
          `device-state bytes themselves (not a RAM image, a whole snapshot file or other data).`,
      );
    }
  }
  if (length < OFF_HEADER_LENGTH) truncated(length, OFF_HEADER_LENGTH, 'the format version');
  const view = new DataView(bytes.buffer, bytes.byteOffset, length);
  const major = view.getUint16(OFF_MAJOR, true);
  const minor = view.getUint16(OFF_MINOR, true);
  if (major !== CONTAINER_VERSION_MAJOR) {
    throw new SnapshotError(
      'SNAPSHOT_UNSUPPORTED_VERSION',
      `device-state format ${major}.${minor} is not supported: this build reads format ` +
        `${CONTAINER_VERSION_MAJOR}.x (written ${CONTAINER_VERSION_MAJOR}.${CONTAINER_VERSION_MINOR}). ` +
        `Load it with a vmm of format ${major}.x, or save the VM again with this one.`,
    );
  }
  if (length < CONTAINER_HEADER_BYTES) truncated(length, CONTAINER_HEADER_BYTES, 'the header');
  const headerLength = view.getUint32(OFF_HEADER_LENGTH, true);
  const flags = view.getUint32(OFF_FLAGS, true);
  const sectionCount = view.getUint32(OFF_SECTION_COUNT, true);
  const bodyLength = view.getUint32(OFF_BODY_LENGTH, true);
  const crc = view.getUint32(OFF_CRC, true);
  const newer = minor > CONTAINER_VERSION_MINOR;

  if (newer) {
    if (headerLength < CONTAINER_HEADER_BYTES || headerLength > MAX_HEADER_BYTES) {
      malformed(
        `header length ${headerLength} is outside [${CONTAINER_HEADER_BYTES}, ${MAX_HEADER_BYTES}]`,
      );
    }
  } else if (headerLength !== CONTAINER_HEADER_BYTES) {
    malformed(`format 1.${minor} has a ${CONTAINER_HEADER_BYTES}-byte header, not ${headerLength}`);
  }
  const unknownFlags = flags & ~KNOWN_HEADER_FLAGS;
  if (!newer && unknownFlags !== 0) {
    malformed(`header sets flag bits ${hex32(unknownFlags)} that format 1.${minor} reserves`);
  }
  if ((unknownFlags & HEADER_FLAGS_REQUIRED_MASK) !== 0) {
    throw new SnapshotError(
      'SNAPSHOT_UNSUPPORTED_VERSION',
      `device-state format ${major}.${minor} needs features (flags ${hex32(unknownFlags)}) that ` +
        `this build (format ${CONTAINER_VERSION_MAJOR}.${CONTAINER_VERSION_MINOR}) lacks. ` +
        `Restore with a newer vmm.`,
    );
  }
  if (sectionCount > MAX_SECTIONS) {
    throw new SnapshotError(
      'SNAPSHOT_TOO_LARGE',
      `device state declares ${sectionCount} sections, more than the limit of ${MAX_SECTIONS}; ` +
        `the header is corrupt or hostile. Discard it.`,
    );
  }
  const totalLength = headerLength + bodyLength;
  if (totalLength > MAX_CONTAINER_BYTES) {
    throw new SnapshotError(
      'SNAPSHOT_TOO_LARGE',
      `device state declares ${totalLength} bytes, more than the limit of ` +
        `${MAX_CONTAINER_BYTES}; the header is corrupt or hostile. Discard it.`,
    );
  }
  if (totalLength > length) truncated(length, totalLength, 'the declared container');
  if (totalLength < length) {
    malformed(
      `${length - totalLength} bytes follow the declared end of the container (${totalLength} ` +
        `bytes); pass exactly the container`,
    );
  }
  if (sectionCount * SECTION_ENTRY_BYTES > bodyLength) {
    malformed(`${sectionCount} sections cannot fit in a body of ${bodyLength} bytes`);
  }
  return { major, minor, headerLength, flags, sectionCount, bodyLength, crc, totalLength };
}

/** CRC-32 of `bytes[0, total)` without the CRC field itself. */
function checksum(bytes: Uint8Array, total: number): number {
  const head = crc32(bytes.subarray(0, OFF_CRC));
  return crc32(bytes.subarray(OFF_CRC + 4, total), head) >>> 0;
}

/** The section name at `offset`, or undefined when a byte is outside the charset or the pattern fails. */
function readName(bytes: Uint8Array, offset: number, length: number): string | undefined {
  let name = '';
  for (let k = 0; k < length; k++) {
    const b = bytes[offset + k]!;
    const ok =
      (b >= 0x61 && b <= 0x7a) ||
      (b >= 0x30 && b <= 0x39) ||
      b === 0x2e ||
      b === 0x5f ||
      b === 0x2d;
    if (!ok) return undefined;
    name += String.fromCharCode(b);
  }
  return NAME_PATTERN.test(name) ? name : undefined;
}

function asciiBytes(name: string): Uint8Array {
  const out = new Uint8Array(name.length);
  for (let k = 0; k < name.length; k++) out[k] = name.charCodeAt(k);
  return out;
}

function isUint(value: unknown, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= max;
}

function truncated(have: number, need: number, what: string): never {
  throw new SnapshotError(
    'SNAPSHOT_TRUNCATED',
    `device state is truncated: it has ${have} bytes, but ${what} ends at byte ${need}. The ` +
      `transfer or file write was cut short; send or save the device state again.`,
  );
}

function malformed(what: string): never {
  throw new SnapshotError(
    'SNAPSHOT_MALFORMED',
    `device-state container is malformed: ${what}. The writer is broken or the data is hostile; ` +
      `discard it and save the VM again.`,
  );
}

function refuse(what: string): never {
  throw new SnapshotError(
    'SNAPSHOT_MALFORMED',
    `refusing to write a device-state container: ${what}.`,
  );
}
