/**
 * The compact hand-off state: one fixed little-endian binary layout of a {@link MachineState},
 * for the direct hand-off between two vmm processes on one host, where the source's vCPU thread
 * encodes and the target's decodes inside the guest's downtime. It carries exactly what the
 * device-state container (device-state.ts) carries, without JSON or text codecs, and accepts
 * exactly the states the container does.
 *
 * This module is the header (magic, version, length, CRC) and the API. The body's layout, its
 * encoder and its one-pass validating decoder are generated at load from the same section
 * tables as the container's schema checks (table/compact-*.ts); compact-state.test.ts proves
 * the decoder equivalent to an independent copy of the schemas.
 *
 * Never stored and never sent on the migration stream: a layout is only as stable as one build's
 * tables. The sender uses it only when the receiver advertised this exact
 * {@link COMPACT_STATE_VERSION}; otherwise it sends a container. FORMAT.md ("Compact hand-off
 * state") has the byte layout and the validation order.
 *
 * @packageDocumentation
 */

import { crc32 } from 'node:zlib';

import type { MachineState } from '../machine/state.js';
import { invalidSectionError } from './device-state.js';
import { SnapshotError, describe, hex32 } from './errors.js';
import { SchemaViolation } from './schemas/check.js';
import { CONTROL_SECTION } from './schemas/control.js';
import { UART_RX_LIMIT } from './schemas/uart.js';
import { MACHINE_SECTIONS } from './sections.js';
import { compactLayoutFingerprint, planCompactLayout } from './table/compact-layout.js';
import { compileLayoutCheck, type LayoutFaults } from './table/compact-check-codegen.js';
import { compileValueReader, type ValueFaults } from './table/compact-reader-codegen.js';
import { compileBodyWriter } from './table/compact-writer-codegen.js';
import { fieldLimit } from './table/fields.js';

/** Version of the compact layout this build writes and the only one it reads. */
export const COMPACT_STATE_VERSION = 2;

/** The eight magic bytes of a compact hand-off state, ASCII `HNDFCST` and a NUL. */
export const COMPACT_STATE_MAGIC: readonly number[] = Object.freeze([
  0x48, 0x4e, 0x44, 0x46, 0x43, 0x53, 0x54, 0x00,
]);

/**
 * The sections and section versions layout {@link COMPACT_STATE_VERSION} encodes, in layout
 * order. Literals on purpose, not the tables' versions: they record what the layout was written
 * for, so bumping a section version (or adding a section) makes {@link compactStateCurrent}
 * false until a new layout version is declared.
 */
export const COMPACT_STATE_SECTIONS: Readonly<Record<string, number>> = Object.freeze({
  machine: 1,
  cpu: 1,
  clock: 1,
  clint: 1,
  uart: 1,
  finisher: 1,
  control: 1,
  plic: 1,
});

/**
 * The fingerprint (CRC-32 of the placement description) of layout {@link COMPACT_STATE_VERSION}
 * as the tables place it. A table edit that moves, adds or re-encodes a byte of the layout
 * changes the placement, and with it {@link compactStateCurrent}, until a new layout version is
 * declared with its new fingerprint (FORMAT.md, "Versioning").
 */
export const COMPACT_LAYOUT_FINGERPRINT = 0xf1fe8d48;

/** Header bytes: magic, layout version, flags, body length, CRC. */
export const COMPACT_STATE_HEADER_BYTES = 20;

/** Most bytes of `uart.rx` the layout carries: the `uart` table's limit. */
export const COMPACT_RX_LIMIT = UART_RX_LIMIT;
/** Most bytes of `control.hostArgs` the layout carries: the `control` table's limit. */
export const COMPACT_HOST_ARGS_LIMIT = fieldLimit(CONTROL_SECTION, 'hostArgs');
/** Longest `control.generationId` the layout carries, in ASCII characters (its table says so). */
export const COMPACT_GENERATION_ID_LIMIT = fieldLimit(CONTROL_SECTION, 'generationId');
/** Number of `control.entropy` words the layout carries: the `control` table's length. */
export const COMPACT_ENTROPY_WORDS = fieldLimit(CONTROL_SECTION, 'entropy');

/** Where this build's section tables place every field. */
const LAYOUT = planCompactLayout(MACHINE_SECTIONS);

/** Largest compact hand-off state in bytes (header and the largest body). */
export const COMPACT_STATE_MAX_BYTES = COMPACT_STATE_HEADER_BYTES + LAYOUT.maxBodyBytes;

/** Header offsets. */
const OFF_VERSION = 8;
const OFF_FLAGS = 10;
const OFF_BODY_LENGTH = 12;
const OFF_CRC = 16;

/** Whether this build's sections and tables are those of the layout; computed once, at load. */
const SECTIONS_MATCH = sectionsMatchLayout();
const CURRENT = SECTIONS_MATCH && compactLayoutFingerprint(LAYOUT) === COMPACT_LAYOUT_FINGERPRINT;

/**
 * True when this build's device-state sections (`MACHINE_SECTIONS`) are exactly those layout
 * {@link COMPACT_STATE_VERSION} encodes — the same names in the same order, the same versions,
 * none optional and none extra — and their tables place every field where the layout does
 * ({@link COMPACT_LAYOUT_FINGERPRINT}). When false (a section changed without a new layout),
 * the build must neither advertise nor use the compact layout, and {@link encodeCompactState}
 * and {@link decodeCompactState} throw `SNAPSHOT_UNSUPPORTED_VERSION`.
 */
export function compactStateCurrent(): boolean {
  return CURRENT;
}

/** Whether `bytes` starts with {@link COMPACT_STATE_MAGIC} (and so is no container). */
export function isCompactState(bytes: Uint8Array): boolean {
  if (!(bytes instanceof Uint8Array) || bytes.length < COMPACT_STATE_MAGIC.length) return false;
  for (let k = 0; k < COMPACT_STATE_MAGIC.length; k++) {
    if (bytes[k] !== COMPACT_STATE_MAGIC[k]) return false;
  }
  return true;
}

/**
 * Encodes a machine's device state in layout {@link COMPACT_STATE_VERSION}.
 *
 * It checks only that every value fits the layout, never silently truncating or wrapping one:
 * scalars are numbers (carried as float64, exactly), fixed arrays have their length and u32
 * items, byte arrays u8 items within their limit, enums known values, the generation id ASCII.
 * It does not run the section rules: a state that fits but breaks one (e.g. x0 ≠ 0) encodes,
 * and {@link decodeCompactState} rejects it. States from `Machine.save()` always fit.
 *
 * @param state - from `Machine.save()`
 * @returns a fresh array of the header and body
 * @throws SnapshotError `SNAPSHOT_INVALID_STATE` when a value does not fit the layout (the
 *   caller then sends a container, whose writer explains what is wrong);
 *   `SNAPSHOT_UNSUPPORTED_VERSION` when {@link compactStateCurrent} is false
 */
export function encodeCompactState(state: MachineState): Uint8Array {
  if (CODEC === undefined) throw notCurrent('encode');
  const out = CODEC.writeBody(state);
  const v = new DataView(out.buffer);
  v.setUint32(OFF_BODY_LENGTH, out.length - COMPACT_STATE_HEADER_BYTES, true);
  v.setUint32(OFF_CRC, crc32(out.subarray(COMPACT_STATE_HEADER_BYTES)) >>> 0, true);
  out.set(COMPACT_STATE_MAGIC, 0);
  v.setUint16(OFF_VERSION, COMPACT_STATE_VERSION, true);
  return out;
}

/**
 * Decodes and validates a compact hand-off state from untrusted bytes (another process wrote
 * them), accepting exactly the states the device-state container accepts. Checks, in order:
 * the header ({@link openCompactState}); the layout of the body ({@link checkCompactLayout});
 * then, in one straight-line pass that builds the result, every rule of the section tables in
 * the order the container's schema checks apply them, so that a violation is reported with the
 * same code, section, path and message as the container path gives. Never reads outside
 * `bytes`; allocates in proportion to the bytes at most.
 *
 * @param bytes - the whole compact state, nothing before or after it
 * @returns a fresh state that every section schema accepts, ready for `Machine.restore`
 * @throws SnapshotError, and nothing else, for any input that is not loadable state:
 *   `SNAPSHOT_BAD_MAGIC`, `SNAPSHOT_UNSUPPORTED_VERSION` (another layout, or
 *   {@link compactStateCurrent} false), `SNAPSHOT_TRUNCATED`, `SNAPSHOT_MALFORMED` (the layout),
 *   `SNAPSHOT_BAD_CRC`, `SNAPSHOT_INVALID_STATE` (a value a section rule forbids)
 */
export function decodeCompactState(bytes: Uint8Array): MachineState {
  if (CODEC === undefined) throw notCurrent('decode');
  const v = openCompactState(bytes);
  CODEC.checkLayout(bytes, v);
  return CODEC.readValues(bytes, v) as MachineState;
}

/**
 * The first step of decoding, the header: checks that `bytes` are one whole compact state of
 * layout {@link COMPACT_STATE_VERSION} (magic, layout version, flags, the declared body length
 * against the bytes and the layout's largest, the CRC) with a body at least the layout's
 * smallest. Judges no field of the body. Exported, with {@link checkCompactLayout}, for the
 * reference decoder of compact-state.test.ts.
 *
 * @param bytes - the whole compact state, nothing before or after it
 * @returns a view of exactly `bytes`; the body is `[COMPACT_STATE_HEADER_BYTES, byteLength)`
 * @throws SnapshotError `SNAPSHOT_MALFORMED` (not bytes, flags, body length),
 *   `SNAPSHOT_BAD_MAGIC`, `SNAPSHOT_UNSUPPORTED_VERSION`, `SNAPSHOT_TRUNCATED`,
 *   `SNAPSHOT_BAD_CRC`
 */
export function openCompactState(bytes: Uint8Array): DataView {
  if (!(bytes instanceof Uint8Array)) {
    malformed(`the input is ${typeof bytes}, not bytes; pass the Uint8Array received`);
  }
  const length = bytes.length;
  const magicBytes = Math.min(length, COMPACT_STATE_MAGIC.length);
  for (let k = 0; k < magicBytes; k++) {
    if (bytes[k] !== COMPACT_STATE_MAGIC[k]) {
      throw new SnapshotError(
        'SNAPSHOT_BAD_MAGIC',
        `not a compact hand-off state: the first bytes are not "HNDFCST\\0". A device-state ` +
          `container ("HNDFDEV\\0") goes to decodeDeviceState; tell them apart with isCompactState.`,
      );
    }
  }
  if (length < OFF_FLAGS) truncated(length, OFF_FLAGS, 'the layout version');
  const v = new DataView(bytes.buffer, bytes.byteOffset, length);
  const version = v.getUint16(OFF_VERSION, true);
  if (version !== COMPACT_STATE_VERSION) {
    throw new SnapshotError(
      'SNAPSHOT_UNSUPPORTED_VERSION',
      `compact hand-off state has layout version ${version}, but this build reads only layout ` +
        `${COMPACT_STATE_VERSION}. The sender must use the compact layout only when the receiver ` +
        `advertises its version, and send a device-state container otherwise.`,
    );
  }
  if (length < COMPACT_STATE_HEADER_BYTES) {
    truncated(length, COMPACT_STATE_HEADER_BYTES, 'the header');
  }
  const flags = v.getUint16(OFF_FLAGS, true);
  if (flags !== 0)
    malformed(
      `the header sets flags ${hex32(flags)}, which layout ${COMPACT_STATE_VERSION} reserves`,
    );
  const bodyLength = v.getUint32(OFF_BODY_LENGTH, true);
  const { minBodyBytes, maxBodyBytes } = LAYOUT;
  if (bodyLength > maxBodyBytes) {
    malformed(
      `the header declares a ${bodyLength}-byte body; layout ${COMPACT_STATE_VERSION} has at most ` +
        `${maxBodyBytes}`,
    );
  }
  const end = COMPACT_STATE_HEADER_BYTES + bodyLength;
  if (length < end) truncated(length, end, `the ${bodyLength}-byte body`);
  if (length > end) malformed(`${length - end} bytes follow the ${bodyLength}-byte body`);
  const stored = v.getUint32(OFF_CRC, true);
  const computed = crc32(bytes.subarray(COMPACT_STATE_HEADER_BYTES, end)) >>> 0;
  if (computed !== stored) {
    throw new SnapshotError(
      'SNAPSHOT_BAD_CRC',
      `compact hand-off state checksum mismatch (stored ${hex32(stored)}, computed ` +
        `${hex32(computed)}): the bytes were corrupted on the way. Fail the hand-off.`,
    );
  }
  if (bodyLength < minBodyBytes) {
    malformed(
      `the ${bodyLength}-byte body is shorter than layout ${COMPACT_STATE_VERSION}'s smallest, ` +
        `${minBodyBytes}`,
    );
  }
  return v;
}

/**
 * The second step of decoding, the layout of the body (`SNAPSHOT_MALFORMED`), in layout order
 * and before any value is judged, so that bytes both malformed and invalid are malformed: every
 * presence byte is 0 or 1, unused slots are zero (an absent reservation, a real-time clock's
 * tick fields, the code of no exit: one state has one encoding), every tail piece is within its
 * limit and the bytes left (the generation id also ASCII), and no byte follows the tail. Judges
 * no value a section rule rules on (an unknown enum code, say, is the rule's to reject).
 *
 * @param bytes - bytes {@link openCompactState} accepted
 * @param v - the view it returned
 * @throws SnapshotError `SNAPSHOT_MALFORMED`, with the section of the field at fault;
 *   `SNAPSHOT_UNSUPPORTED_VERSION` when {@link compactStateCurrent} is false
 */
export function checkCompactLayout(bytes: Uint8Array, v: DataView): void {
  if (CODEC === undefined) throw notCurrent('decode');
  CODEC.checkLayout(bytes, v);
}

// ---- internals ---------------------------------------------------------------------------------

function sectionsMatchLayout(): boolean {
  const names = Object.keys(COMPACT_STATE_SECTIONS);
  if (MACHINE_SECTIONS.length !== names.length) return false;
  for (let k = 0; k < names.length; k++) {
    const spec = MACHINE_SECTIONS[k]!;
    if (spec.name !== names[k] || spec.optional) return false;
    if (spec.version !== COMPACT_STATE_SECTIONS[spec.name]) return false;
  }
  return true;
}

function notCurrent(op: 'encode' | 'decode'): SnapshotError {
  if (SECTIONS_MATCH) {
    const ours = hex32(compactLayoutFingerprint(LAYOUT));
    return new SnapshotError(
      'SNAPSHOT_UNSUPPORTED_VERSION',
      `cannot ${op} a compact hand-off state: this build's section tables place the fields ` +
        `(layout fingerprint ${ours}) unlike compact layout ${COMPACT_STATE_VERSION} ` +
        `(${hex32(COMPACT_LAYOUT_FINGERPRINT)}). A table changed without a new compact layout; ` +
        `use the device-state container (and declare layout ${COMPACT_STATE_VERSION + 1}).`,
    );
  }
  const ours = MACHINE_SECTIONS.map((s) => `${s.name}@${s.version}${s.optional ? '?' : ''}`);
  const layout = Object.entries(COMPACT_STATE_SECTIONS).map(([n, v]) => `${n}@${v}`);
  return new SnapshotError(
    'SNAPSHOT_UNSUPPORTED_VERSION',
    `cannot ${op} a compact hand-off state: this build's device-state sections ` +
      `(${ours.join(', ')}) are not those compact layout ${COMPACT_STATE_VERSION} encodes ` +
      `(${layout.join(', ')}). A section changed without a new compact layout; use the ` +
      `device-state container (and write layout ${COMPACT_STATE_VERSION + 1}).`,
  );
}

/** `SNAPSHOT_INVALID_STATE` for a value the layout cannot carry. */
function unfit(section: string, path: string, expected: string, got: unknown): SnapshotError {
  return new SnapshotError(
    'SNAPSHOT_INVALID_STATE',
    `refusing to encode a compact hand-off state: ${path} must be ${expected}, got ` +
      `${describe(got)} (layout ${COMPACT_STATE_VERSION} cannot carry it). Send the state as a ` +
      `device-state container.`,
    { section },
  );
}

function malformed(message: string, section?: string): never {
  throw new SnapshotError(
    'SNAPSHOT_MALFORMED',
    `compact hand-off state is malformed: ${message}. The sender is broken or the bytes are ` +
      `hostile; fail the hand-off.`,
    section === undefined ? {} : { section },
  );
}

function truncated(length: number, needed: number, what: string): never {
  throw new SnapshotError(
    'SNAPSHOT_TRUNCATED',
    `compact hand-off state is truncated: ${length} bytes, but ${what} needs ${needed}. Pass ` +
      `all the bytes the sender published.`,
  );
}

/** The cold paths of the generated decoder: messages are built only here, when throwing. */
const LAYOUT_FAULTS: LayoutFaults = {
  malformed,
  zeroSlots(bytes, at, n, section, what) {
    for (let k = 0; k < n; k++) {
      if (bytes[at + k] !== 0) malformed(`${what} must be zero bytes`, section);
    }
  },
  byteCount(v, at, end, limit, section, what) {
    if (end - at < 4) malformed(`the count of ${what} runs past the end of the body`, section);
    const n = v.getUint32(at, true);
    if (n > limit) {
      malformed(
        `${what} has ${n} bytes; layout ${COMPACT_STATE_VERSION} carries at most ${limit}`,
        section,
      );
    }
    if (n > end - at - 4) {
      malformed(`${what} has ${n} bytes, but only ${end - at - 4} are left in the body`, section);
    }
    return n;
  },
};
const VALUE_FAULTS: ValueFaults = {
  invalid(section, version, path, expected, got): never {
    throw invalidSectionError(section, version, new SchemaViolation(path, expected, got), 'decode');
  },
  ascii(bytes, at, n) {
    let s = '';
    for (let k = 0; k < n; k++) s += String.fromCharCode(bytes[at + k]!);
    return s;
  },
};

/** The generated codec, when this build is current for the layout. */
const CODEC = CURRENT
  ? {
      writeBody: compileBodyWriter(LAYOUT, COMPACT_STATE_HEADER_BYTES, unfit),
      checkLayout: compileLayoutCheck(
        LAYOUT,
        COMPACT_STATE_HEADER_BYTES,
        COMPACT_STATE_VERSION,
        LAYOUT_FAULTS,
      ),
      readValues: compileValueReader(LAYOUT, COMPACT_STATE_HEADER_BYTES, VALUE_FAULTS),
    }
  : undefined;
