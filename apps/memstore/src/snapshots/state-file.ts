import { closeSync, constants, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { MemstoreError } from '../errors.js';
import { removeRegionFile, syncDirectory } from '../regions/files.js';
import { crc32c, hex32 } from './crc32c.js';

/**
 * The device-state file of a snapshot: the vmm's device-state container, opaque here, in a small
 * versioned envelope so that a damaged or foreign file is recognised before its bytes are used.
 * Little-endian:
 *
 * | offset | size | field                                                       |
 * | ------ | ---- | ----------------------------------------------------------- |
 * | 0      | 4    | magic u32 `0x53445348` (bytes `"HSDS"`)                      |
 * | 4      | 2    | format major u16 = 1                                        |
 * | 6      | 2    | format minor u16 = 0                                        |
 * | 8      | 2    | header length u16 = 32 (a later minor may grow it)          |
 * | 10     | 2    | flags u16 = 0                                               |
 * | 12     | 4    | payload length u32 (at most 4 MiB)                          |
 * | 16     | 4    | CRC-32C of the payload                                      |
 * | 20     | 8    | reserved, zero                                              |
 * | 28     | 4    | CRC-32C of bytes [0, 28)                                    |
 * | 32     | n    | payload: the device state                                   |
 *
 * Versioning: a reader refuses another major; it reads every minor of its major, skipping a
 * longer header (fields a later minor added) by the header length.
 */

export const STATE_MAGIC = 0x53445348;
export const STATE_FORMAT_MAJOR = 1;
export const STATE_FORMAT_MINOR = 0;
export const STATE_HEADER_BYTES = 32;
/** Largest device state a snapshot holds. */
export const MAX_DEVICE_STATE_BYTES = 4 * 1024 * 1024;
/** Mode of a device-state file. */
export const STATE_FILE_MODE = 0o600;

const OFF_HEADER_CRC = 28;

/** The file's bytes for `state`. */
export function encodeStateFile(state: Uint8Array): Uint8Array {
  const out = new Uint8Array(STATE_HEADER_BYTES + state.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, STATE_MAGIC, true);
  view.setUint16(4, STATE_FORMAT_MAJOR, true);
  view.setUint16(6, STATE_FORMAT_MINOR, true);
  view.setUint16(8, STATE_HEADER_BYTES, true);
  view.setUint32(12, state.length, true);
  view.setUint32(16, crc32c(state), true);
  view.setUint32(OFF_HEADER_CRC, crc32c(out.subarray(0, OFF_HEADER_CRC)), true);
  out.set(state, STATE_HEADER_BYTES);
  return out;
}

/** What a state file is expected to hold (from the catalog row). */
export interface ExpectedState {
  readonly bytes: number;
  readonly crc32c: number;
}

/**
 * The device state in `file`, checked: magic, major version, header CRC, lengths, payload CRC,
 * and (when given) the length and CRC the catalog recorded. `what` names the file in messages.
 *
 * @throws MemstoreError SNAPSHOT_CORRUPT saying what is wrong
 */
export function decodeStateFile(
  file: Uint8Array,
  what: string,
  expected?: ExpectedState,
): Uint8Array {
  const corrupt = (detail: string): MemstoreError =>
    new MemstoreError(
      'SNAPSHOT_CORRUPT',
      `${what}: ${detail}; the snapshot cannot be restored — delete it and save the VM again`,
    );
  if (file.length < STATE_HEADER_BYTES) {
    throw corrupt(
      `the file holds ${file.length} bytes, less than its ${STATE_HEADER_BYTES}-byte header`,
    );
  }
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const magic = view.getUint32(0, true);
  if (magic !== STATE_MAGIC) throw corrupt(`bad magic ${hex32(magic)} (not a device-state file)`);
  const major = view.getUint16(4, true);
  if (major !== STATE_FORMAT_MAJOR) {
    throw corrupt(
      `format version ${major}.${view.getUint16(6, true)} is not ${STATE_FORMAT_MAJOR}.x, which this memstore reads`,
    );
  }
  const headerCrc = crc32c(file.subarray(0, OFF_HEADER_CRC));
  if (headerCrc !== view.getUint32(OFF_HEADER_CRC, true)) {
    throw corrupt(
      `header fails its CRC-32C check (stored ${hex32(view.getUint32(OFF_HEADER_CRC, true))}, computed ${hex32(headerCrc)})`,
    );
  }
  const headerBytes = view.getUint16(8, true);
  const length = view.getUint32(12, true);
  if (headerBytes < STATE_HEADER_BYTES || length > MAX_DEVICE_STATE_BYTES) {
    throw corrupt(`impossible header (header ${headerBytes} bytes, payload ${length} bytes)`);
  }
  if (file.length !== headerBytes + length) {
    throw corrupt(
      `the file holds ${file.length} bytes, but its header says ${headerBytes + length} (truncated or extended)`,
    );
  }
  const payload = file.subarray(headerBytes);
  const crc = crc32c(payload);
  const stored = view.getUint32(16, true);
  if (crc !== stored) {
    throw corrupt(
      `device state fails its CRC-32C check (stored ${hex32(stored)}, computed ${hex32(crc)})`,
    );
  }
  if (expected !== undefined && (expected.bytes !== length || expected.crc32c !== crc)) {
    throw corrupt(
      `device state is ${length} bytes with CRC-32C ${hex32(crc)}, but the catalog recorded ` +
        `${expected.bytes} bytes with ${hex32(expected.crc32c)} (the file was replaced)`,
    );
  }
  return payload;
}

/**
 * Writes a new state file (O_EXCL, mode 0600) and makes it durable: the file and its directory
 * entry are fsynced before this returns, so a catalog row committed afterwards never names a
 * file a power cut could lose. On failure nothing is left behind.
 */
export function writeStateFile(path: string, state: Uint8Array): void {
  const bytes = encodeStateFile(state);
  const fd = openSync(
    path,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    STATE_FILE_MODE,
  );
  try {
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    removeRegionFile(path);
    throw err;
  }
  closeSync(fd);
  syncDirectory(dirname(path));
}

/**
 * Reads and checks a state file (see {@link decodeStateFile}); a missing or unreadable file is
 * SNAPSHOT_CORRUPT too.
 */
export function readStateFile(path: string, what: string, expected?: ExpectedState): Uint8Array {
  let file: Buffer;
  try {
    file = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new MemstoreError(
      'SNAPSHOT_CORRUPT',
      code === 'ENOENT'
        ? `${what}: the device-state file ${path} is missing; the snapshot cannot be restored — ` +
            'restore the file from a backup, or delete the snapshot'
        : `${what}: the device-state file ${path} cannot be read (${(err as Error).message}); ` +
            'check the persistent directory',
      { cause: err },
    );
  }
  return decodeStateFile(new Uint8Array(file.buffer, file.byteOffset, file.length), what, expected);
}

/** Removes a state file; false if it did not exist. */
export function removeStateFile(path: string): boolean {
  return removeRegionFile(path);
}
