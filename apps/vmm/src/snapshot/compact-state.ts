/**
 * The compact hand-off state: one fixed little-endian binary layout of a {@link MachineState},
 * for the direct hand-off between two vmm processes on one host, where the source's vCPU thread
 * encodes and the target's decodes inside the guest's downtime. It carries exactly what the
 * device-state container (device-state.ts) carries, without JSON or text codecs, and accepts
 * exactly the states the container does: the decoder applies the section schemas' rules
 * (schemas/*.ts) while it reads, in one pass that builds the result without intermediate
 * objects, and compact-state.test.ts proves it equivalent to running the schemas themselves.
 *
 * Never stored and never sent on the migration stream: a layout is only as stable as one build's
 * state models. The sender uses it only when the receiver advertised this exact
 * {@link COMPACT_STATE_VERSION}; otherwise it sends a container. FORMAT.md ("Compact hand-off
 * state") has the byte layout and the validation order.
 *
 * @packageDocumentation
 */

import { crc32 } from 'node:zlib';

import {
  MIE_MASK,
  MSTATUS_MASK,
  MSTATUS_MPP,
  MSTATUS_MPP_SHIFT,
  PRIV_M,
  PRIV_U,
} from '../cpu/arch.js';
import type { ClockState } from '../devices/clock.js';
import type { ExitStatus } from '../devices/test-finisher.js';
import type { MachineState } from '../machine/state.js';
import { SnapshotError, describe, hex32 } from './errors.js';
import { SchemaViolation, TWO_POW_64, U32_MAX } from './schemas/check.js';
import { MACHINE_SECTIONS } from './sections.js';

/** Version of the compact layout this build writes and the only one it reads. */
export const COMPACT_STATE_VERSION = 1;

/** The eight magic bytes of a compact hand-off state, ASCII `HNDFCST` and a NUL. */
export const COMPACT_STATE_MAGIC: readonly number[] = Object.freeze([
  0x48, 0x4e, 0x44, 0x46, 0x43, 0x53, 0x54, 0x00,
]);

/**
 * The sections and section versions layout {@link COMPACT_STATE_VERSION} encodes, in layout
 * order. Literals on purpose, not the schemas' `*_SECTION_VERSION` constants: they record what
 * the layout was written for, so bumping a section version (or adding a section) makes
 * {@link compactStateCurrent} false until a new layout is written.
 */
export const COMPACT_STATE_SECTIONS: Readonly<Record<string, number>> = Object.freeze({
  machine: 1,
  cpu: 1,
  clock: 1,
  clint: 1,
  uart: 1,
  finisher: 1,
  control: 1,
});

/**
 * The section versions of {@link COMPACT_STATE_SECTIONS}, one constant each for the decoder's
 * `version` rules (`sectionVersion`: a body's version equals its section's, which is the
 * build's own whenever {@link compactStateCurrent} holds, the only case the decoder runs in).
 */
const MACHINE_V = COMPACT_STATE_SECTIONS['machine']!;
const CPU_V = COMPACT_STATE_SECTIONS['cpu']!;
const CLOCK_V = COMPACT_STATE_SECTIONS['clock']!;
const CLINT_V = COMPACT_STATE_SECTIONS['clint']!;
const UART_V = COMPACT_STATE_SECTIONS['uart']!;
const FINISHER_V = COMPACT_STATE_SECTIONS['finisher']!;
const CONTROL_V = COMPACT_STATE_SECTIONS['control']!;

/** Header bytes: magic, layout version, flags, body length, CRC. */
export const COMPACT_STATE_HEADER_BYTES = 20;

/** Most bytes of `uart.rx` layout 1 carries (the `uart` schema's `UART_RX_LIMIT` today). */
export const COMPACT_RX_LIMIT = 65536;
/** Most bytes of `control.hostArgs` layout 1 carries (`HOST_ARGS_SIZE` today). */
export const COMPACT_HOST_ARGS_LIMIT = 256;
/** Longest `control.generationId` layout 1 carries, in ASCII characters. */
export const COMPACT_GENERATION_ID_LIMIT = 64;
/** Number of `control.entropy` words layout 1 carries (`ENTROPY_WORDS` today). */
export const COMPACT_ENTROPY_WORDS = 8;

/**
 * Bytes of the body before its variable part: every number, flag, enum and fixed-length array
 * (see FORMAT.md for the field order).
 */
const FIXED_BODY_BYTES =
  8 + // machine
  (8 + 8 + 32 * 4 + 1 + 1 + 8 * 8 + 4 * 4 + 16 * 4 + 3 * 8 + 1 + 8) + // cpu
  (8 + 1 + 3 * 8) + // clock
  4 * 8 + // clint
  (7 * 8 + 1) + // uart
  (8 + 1 + 8) + // finisher
  (8 + COMPACT_ENTROPY_WORDS * 4 + 8); // control

/** Smallest body: the fixed part, an empty generation id, no host arguments, no rx bytes. */
const MIN_BODY_BYTES = FIXED_BODY_BYTES + 1 + 4 + 4;
/** Largest body: every variable field at its limit. */
const MAX_BODY_BYTES =
  MIN_BODY_BYTES + COMPACT_GENERATION_ID_LIMIT + COMPACT_HOST_ARGS_LIMIT + COMPACT_RX_LIMIT;

/** Largest compact hand-off state in bytes (header and the largest body). */
export const COMPACT_STATE_MAX_BYTES = COMPACT_STATE_HEADER_BYTES + MAX_BODY_BYTES;

/** Header offsets. */
const OFF_VERSION = 8;
const OFF_FLAGS = 10;
const OFF_BODY_LENGTH = 12;
const OFF_CRC = 16;

/**
 * The enum codes of layout 1: a value's code is its index in its list, plus 1 for `exitKind`
 * (0 meaning no exit). Exported for the reference decoder of compact-state.test.ts.
 */
export const COMPACT_STATE_CODES = Object.freeze({
  priv: Object.freeze(['M', 'U'] as const),
  clockMode: Object.freeze(['deterministic', 'realtime'] as const),
  exitKind: Object.freeze(['pass', 'fail', 'reset'] as const),
});
const PRIVS = COMPACT_STATE_CODES.priv;
const CLOCK_MODES = COMPACT_STATE_CODES.clockMode;
const EXIT_KINDS = COMPACT_STATE_CODES.exitKind;

/** Body offsets of the fields the layout checks read before the values (see FORMAT.md). */
const AT_RESERVATION = 322; // presence byte, then the f64
const AT_CLOCK_MODE = 339; // mode byte; the tick fields start 9 bytes later
const AT_EXIT = 461; // exit kind byte, then the code's f64

/**
 * The implemented register bits the `uart` schema allows (literals in schemas/uart.ts; the
 * equivalence test of compact-state.test.ts fails if they part).
 */
const UART_IER_MASK = 0x0f;
const UART_MCR_MASK = 0x1f;
const UART_FCR_MASK = 0xc9;

/** `expected` of the schemas' `u64` rule. */
const U64_RANGE = 'an integer in [0, 2^64)';

/** Whether this build's sections are those the layout encodes; computed once, at load. */
const CURRENT = sectionsMatchLayout();

/**
 * True when this build's device-state sections (`MACHINE_SECTIONS`) are exactly those layout
 * {@link COMPACT_STATE_VERSION} encodes: the same names in the same order, the same versions,
 * none optional and none extra. When false (a section's model changed without a new layout),
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
 * It does not run the section schemas: a state that fits but breaks a schema (e.g. x0 ≠ 0)
 * encodes, and {@link decodeCompactState} rejects it. States from `Machine.save()` always fit.
 *
 * @param state - from `Machine.save()`
 * @returns a fresh array of the header and body
 * @throws SnapshotError `SNAPSHOT_INVALID_STATE` when a value does not fit the layout (the
 *   caller then sends a container, whose writer explains what is wrong);
 *   `SNAPSHOT_UNSUPPORTED_VERSION` when {@link compactStateCurrent} is false
 */
export function encodeCompactState(state: MachineState): Uint8Array {
  if (!CURRENT) throw notCurrent('encode');
  const s = object(state, 'machine', '');
  const cpu = object(s.cpu, 'cpu', 'cpu');
  const csr = object(cpu.csr, 'cpu', 'cpu.csr');
  const clock = object(s.clock, 'clock', 'clock');
  const clint = object(s.clint, 'clint', 'clint');
  const uart = object(s.uart, 'uart', 'uart');
  const finisher = object(s.finisher, 'finisher', 'finisher');
  const control = object(s.control, 'control', 'control');
  const x = fixedArray(cpu.x, 32, 'cpu', 'cpu.x');
  const pmpcfg = fixedArray(csr.pmpcfg, 4, 'cpu', 'cpu.csr.pmpcfg');
  const pmpaddr = fixedArray(csr.pmpaddr, 16, 'cpu', 'cpu.csr.pmpaddr');
  const entropy = fixedArray(control.entropy, COMPACT_ENTROPY_WORDS, 'control', 'control.entropy');
  const rx = byteArray(uart.rx, COMPACT_RX_LIMIT, 'uart', 'uart.rx');
  const hostArgs = byteArray(
    control.hostArgs,
    COMPACT_HOST_ARGS_LIMIT,
    'control',
    'control.hostArgs',
  );
  const generationId = control.generationId;
  if (typeof generationId !== 'string' || generationId.length > COMPACT_GENERATION_ID_LIMIT) {
    throw unfit(
      'control',
      'control.generationId',
      `a string of at most ${COMPACT_GENERATION_ID_LIMIT} ASCII characters`,
      generationId,
    );
  }

  const bodyLength = MIN_BODY_BYTES + generationId.length + hostArgs.length + rx.length;
  const out = new Uint8Array(COMPACT_STATE_HEADER_BYTES + bodyLength);
  const v = new DataView(out.buffer);
  let p = COMPACT_STATE_HEADER_BYTES;

  // machine
  v.setFloat64(p, num(s.version, 'machine', 'version'), true);
  p += 8;

  // cpu
  v.setFloat64(p, num(cpu.version, 'cpu', 'cpu.version'), true);
  v.setFloat64(p + 8, num(cpu.pc, 'cpu', 'cpu.pc'), true);
  p += 16;
  p = writeU32s(v, p, x, 32, 'cpu', 'cpu.x');
  out[p] = enumCode(cpu.priv, PRIVS, 0, 'cpu', 'cpu.priv');
  out[p + 1] = flag(cpu.waiting, 'cpu', 'cpu.waiting');
  p += 2;
  v.setFloat64(p, num(csr.mstatus, 'cpu', 'cpu.csr.mstatus'), true);
  v.setFloat64(p + 8, num(csr.mie, 'cpu', 'cpu.csr.mie'), true);
  v.setFloat64(p + 16, num(csr.mtvec, 'cpu', 'cpu.csr.mtvec'), true);
  v.setFloat64(p + 24, num(csr.mepc, 'cpu', 'cpu.csr.mepc'), true);
  v.setFloat64(p + 32, num(csr.mcause, 'cpu', 'cpu.csr.mcause'), true);
  v.setFloat64(p + 40, num(csr.mtval, 'cpu', 'cpu.csr.mtval'), true);
  v.setFloat64(p + 48, num(csr.mscratch, 'cpu', 'cpu.csr.mscratch'), true);
  v.setFloat64(p + 56, num(csr.mcounteren, 'cpu', 'cpu.csr.mcounteren'), true);
  p += 64;
  p = writeU32s(v, p, pmpcfg, 4, 'cpu', 'cpu.csr.pmpcfg');
  p = writeU32s(v, p, pmpaddr, 16, 'cpu', 'cpu.csr.pmpaddr');
  v.setFloat64(p, num(cpu.retired, 'cpu', 'cpu.retired'), true);
  v.setFloat64(p + 8, num(cpu.minstret, 'cpu', 'cpu.minstret'), true);
  v.setFloat64(p + 16, num(cpu.mcycle, 'cpu', 'cpu.mcycle'), true);
  p += 24;
  const reservation = cpu.reservation;
  if (reservation !== null) {
    if (typeof reservation !== 'number') {
      throw unfit('cpu', 'cpu.reservation', 'null or a number', reservation);
    }
    out[p] = 1;
    v.setFloat64(p + 1, reservation, true);
  }
  p += 9;

  // clock
  v.setFloat64(p, num(clock.version, 'clock', 'clock.version'), true);
  const mode = enumCode(clock.mode, CLOCK_MODES, 0, 'clock', 'clock.mode');
  out[p + 8] = mode;
  v.setFloat64(p + 9, num(clock.mtime, 'clock', 'clock.mtime'), true);
  if (mode === 0) {
    v.setFloat64(
      p + 17,
      num(clock.instructionsPerTick, 'clock', 'clock.instructionsPerTick'),
      true,
    );
    v.setFloat64(p + 25, num(clock.subTick, 'clock', 'clock.subTick'), true);
  } else if (clock.instructionsPerTick !== undefined || clock.subTick !== undefined) {
    throw unfit(
      'clock',
      clock.instructionsPerTick !== undefined ? 'clock.instructionsPerTick' : 'clock.subTick',
      'absent for a real-time clock',
      clock.instructionsPerTick ?? clock.subTick,
    );
  }
  p += 33;

  // clint
  v.setFloat64(p, num(clint.version, 'clint', 'clint.version'), true);
  v.setFloat64(p + 8, num(clint.msip, 'clint', 'clint.msip'), true);
  v.setFloat64(p + 16, num(clint.mtimecmpLo, 'clint', 'clint.mtimecmpLo'), true);
  v.setFloat64(p + 24, num(clint.mtimecmpHi, 'clint', 'clint.mtimecmpHi'), true);
  p += 32;

  // uart (rx in the variable part)
  v.setFloat64(p, num(uart.version, 'uart', 'uart.version'), true);
  v.setFloat64(p + 8, num(uart.ier, 'uart', 'uart.ier'), true);
  v.setFloat64(p + 16, num(uart.lcr, 'uart', 'uart.lcr'), true);
  v.setFloat64(p + 24, num(uart.mcr, 'uart', 'uart.mcr'), true);
  v.setFloat64(p + 32, num(uart.fcr, 'uart', 'uart.fcr'), true);
  v.setFloat64(p + 40, num(uart.scr, 'uart', 'uart.scr'), true);
  v.setFloat64(p + 48, num(uart.divisor, 'uart', 'uart.divisor'), true);
  out[p + 56] = flag(uart.thrInterrupt, 'uart', 'uart.thrInterrupt');
  p += 57;

  // finisher
  v.setFloat64(p, num(finisher.version, 'finisher', 'finisher.version'), true);
  const exit = finisher.exit;
  if (exit !== null) {
    if (typeof exit !== 'object')
      throw unfit('finisher', 'finisher.exit', 'null or an object', exit);
    const e = exit as Fields;
    out[p + 8] = enumCode(e.kind, EXIT_KINDS, 1, 'finisher', 'finisher.exit.kind');
    v.setFloat64(p + 9, num(e.code, 'finisher', 'finisher.exit.code'), true);
  }
  p += 17;

  // control (generationId and hostArgs in the variable part)
  v.setFloat64(p, num(control.version, 'control', 'control.version'), true);
  p += 8;
  p = writeU32s(v, p, entropy, COMPACT_ENTROPY_WORDS, 'control', 'control.entropy');
  v.setFloat64(p, num(control.readyCount, 'control', 'control.readyCount'), true);
  p += 8;

  // variable part
  const idLength = generationId.length;
  out[p++] = idLength;
  for (let k = 0; k < idLength; k++) {
    const c = generationId.charCodeAt(k);
    if (c > 0x7f) {
      throw unfit(
        'control',
        'control.generationId',
        `a string of at most ${COMPACT_GENERATION_ID_LIMIT} ASCII characters`,
        generationId,
      );
    }
    out[p++] = c;
  }
  p = writeBytes(out, v, p, hostArgs, 'control', 'control.hostArgs');
  p = writeBytes(out, v, p, rx, 'uart', 'uart.rx');

  v.setUint32(OFF_BODY_LENGTH, bodyLength, true);
  v.setUint32(OFF_CRC, crc32(out.subarray(COMPACT_STATE_HEADER_BYTES)) >>> 0, true);
  out.set(COMPACT_STATE_MAGIC, 0);
  v.setUint16(OFF_VERSION, COMPACT_STATE_VERSION, true);
  return out;
}

/**
 * Decodes and validates a compact hand-off state from untrusted bytes (another process wrote
 * them), accepting exactly the states the device-state container accepts. Checks, in order:
 * magic, layout version, declared body length against the bytes, CRC ({@link openCompactState});
 * then the layout of the body (presence bytes, unused slots, the variable part's lengths, every
 * count bounded before use: {@link checkCompactLayout}); then, in one straight-line pass that
 * builds the result, every rule of the section schemas (schemas/*.ts) in the order
 * `stateFromBodies` would apply them to the same values, so that a violation is reported with
 * the same code, section, path and message as the container path gives (the message of
 * device-state.ts `checked`). compact-state.test.ts proves the equivalence against the schemas
 * themselves, field by field and rule by rule. Never reads outside `bytes`; allocates in
 * proportion to the bytes at most.
 *
 * @param bytes - the whole compact state, nothing before or after it
 * @returns a fresh state that every section schema accepts, ready for `Machine.restore`
 * @throws SnapshotError, and nothing else, for any input that is not loadable state:
 *   `SNAPSHOT_BAD_MAGIC`, `SNAPSHOT_UNSUPPORTED_VERSION` (another layout, or
 *   {@link compactStateCurrent} false), `SNAPSHOT_TRUNCATED`, `SNAPSHOT_MALFORMED` (the layout),
 *   `SNAPSHOT_BAD_CRC`, `SNAPSHOT_INVALID_STATE` (a value a section schema forbids)
 */
export function decodeCompactState(bytes: Uint8Array): MachineState {
  if (!CURRENT) throw notCurrent('decode');
  // ---- The header and the layout (once each): after these, every offset below is in bounds
  // and every byte the layout constrains holds a value it allows.
  const v = openCompactState(bytes);
  const hostArgsCountAt = checkCompactLayout(bytes, v);
  const b = COMPACT_STATE_HEADER_BYTES;
  const idAt = b + FIXED_BODY_BYTES + 1;
  const idLength = hostArgsCountAt - idAt;
  const hostArgsLength = v.getUint32(hostArgsCountAt, true);
  const hostArgsAt = hostArgsCountAt + 4;
  const rxAt = hostArgsAt + hostArgsLength + 4;
  const rxLength = v.byteLength - rxAt;
  const modeCode = bytes[b + AT_CLOCK_MODE]!;
  const exitKind = bytes[b + AT_EXIT]!;

  // ---- The values (SNAPSHOT_INVALID_STATE), section by section in MACHINE_SECTIONS order, each
  // section's rules in the order its schema applies them, so the first violation is the one the
  // container path reports. Every check below restates a schema rule on the number read (the
  // f64 exactly as sent: NaN, ±Infinity, -0 and fractions included); a u32 or u8 the layout
  // itself bounds needs no check. Comments name the schema helper each check stands for.

  // machine (schemas/machine.ts)
  const machineVersion = v.getFloat64(b, true);
  if (machineVersion !== MACHINE_V) invalidVersion('machine', MACHINE_V, machineVersion);

  // cpu (schemas/cpu.ts): read in layout order, checked in checkCpu's order.
  const cpuVersion = v.getFloat64(b + 8, true);
  const pc = v.getFloat64(b + 16, true);
  const x = readU32s(v, b + 24, 32);
  const privCode = bytes[b + 152]!;
  const waitingCode = bytes[b + 153]!;
  const mstatus = v.getFloat64(b + 154, true);
  const mie = v.getFloat64(b + 162, true);
  const mtvec = v.getFloat64(b + 170, true);
  const mepc = v.getFloat64(b + 178, true);
  const mcause = v.getFloat64(b + 186, true);
  const mtval = v.getFloat64(b + 194, true);
  const mscratch = v.getFloat64(b + 202, true);
  const mcounteren = v.getFloat64(b + 210, true);
  const pmpcfg = readU32s(v, b + 218, 4);
  const pmpaddr = readU32s(v, b + 234, 16);
  const retired = v.getFloat64(b + 298, true);
  const minstret = v.getFloat64(b + 306, true);
  const mcycle = v.getFloat64(b + 314, true);
  const reservation =
    bytes[b + AT_RESERVATION] === 1 ? v.getFloat64(b + AT_RESERVATION + 1, true) : null;
  if (x[0] !== 0) invalid('cpu', CPU_V, 'x[0]', '0 (x0 is hardwired to zero)', x[0]);
  // bits(mstatus, MSTATUS_MASK), then MPP ∈ {M, U}
  if (mstatus >>> 0 !== mstatus) invalid('cpu', CPU_V, 'csr.mstatus', range(0, U32_MAX), mstatus);
  if ((mstatus & ~MSTATUS_MASK) !== 0) {
    invalid('cpu', CPU_V, 'csr.mstatus', noBitsOutside(MSTATUS_MASK), mstatus);
  }
  const mpp = (mstatus & MSTATUS_MPP) >>> MSTATUS_MPP_SHIFT;
  if (mpp !== PRIV_M && mpp !== PRIV_U) {
    invalid('cpu', CPU_V, 'csr.mstatus', 'a value whose MPP field holds M (3) or U (0)', mstatus);
  }
  // u32(mtvec), then mode direct or vectored
  if (mtvec >>> 0 !== mtvec) invalid('cpu', CPU_V, 'csr.mtvec', range(0, U32_MAX), mtvec);
  if ((mtvec & 3) >= 2) {
    invalid('cpu', CPU_V, 'csr.mtvec', 'a value with mode 0 (direct) or 1 (vectored)', mtvec);
  }
  if (cpuVersion !== CPU_V) invalidVersion('cpu', CPU_V, cpuVersion);
  // aligned4(pc)
  if (pc >>> 0 !== pc) invalid('cpu', CPU_V, 'pc', range(0, U32_MAX), pc);
  if ((pc & 3) !== 0) invalid('cpu', CPU_V, 'pc', 'a multiple of 4', pc);
  // oneOf(priv, PRIVS), boolean(waiting)
  if (privCode > 1) invalid('cpu', CPU_V, 'priv', oneOf(PRIVS), privCode);
  if (waitingCode > 1) invalid('cpu', CPU_V, 'waiting', 'true or false', waitingCode);
  // bits(mie, MIE_MASK), aligned4(mepc), u32 × 4
  if (mie >>> 0 !== mie) invalid('cpu', CPU_V, 'csr.mie', range(0, U32_MAX), mie);
  if ((mie & ~MIE_MASK) !== 0) invalid('cpu', CPU_V, 'csr.mie', noBitsOutside(MIE_MASK), mie);
  if (mepc >>> 0 !== mepc) invalid('cpu', CPU_V, 'csr.mepc', range(0, U32_MAX), mepc);
  if ((mepc & 3) !== 0) invalid('cpu', CPU_V, 'csr.mepc', 'a multiple of 4', mepc);
  if (mcause >>> 0 !== mcause) invalid('cpu', CPU_V, 'csr.mcause', range(0, U32_MAX), mcause);
  if (mtval >>> 0 !== mtval) invalid('cpu', CPU_V, 'csr.mtval', range(0, U32_MAX), mtval);
  if (mscratch >>> 0 !== mscratch) {
    invalid('cpu', CPU_V, 'csr.mscratch', range(0, U32_MAX), mscratch);
  }
  if (mcounteren >>> 0 !== mcounteren) {
    invalid('cpu', CPU_V, 'csr.mcounteren', range(0, U32_MAX), mcounteren);
  }
  // count(retired), u64(minstret), u64(mcycle)
  if (!isCount(retired)) {
    invalid('cpu', CPU_V, 'retired', range(0, Number.MAX_SAFE_INTEGER), retired);
  }
  if (!isU64(minstret)) {
    invalid('cpu', CPU_V, 'minstret', U64_RANGE, minstret);
  }
  if (!isU64(mcycle)) {
    invalid('cpu', CPU_V, 'mcycle', U64_RANGE, mcycle);
  }
  // null or aligned4(reservation)
  if (reservation !== null) {
    if (reservation >>> 0 !== reservation) {
      invalid('cpu', CPU_V, 'reservation', range(0, U32_MAX), reservation);
    }
    if ((reservation & 3) !== 0) {
      invalid('cpu', CPU_V, 'reservation', 'a multiple of 4', reservation);
    }
  }

  // clock (schemas/clock.ts): oneOf(mode), version, u64(mtime); deterministic: integer(
  // instructionsPerTick, 1, 2^32 - 1), u32(subTick), subTick < instructionsPerTick.
  if (modeCode > 1) invalid('clock', CLOCK_V, 'mode', oneOf(CLOCK_MODES), modeCode);
  const clockVersion = v.getFloat64(b + 331, true);
  if (clockVersion !== CLOCK_V) invalidVersion('clock', CLOCK_V, clockVersion);
  const mtime = v.getFloat64(b + 340, true);
  if (!isU64(mtime)) {
    invalid('clock', CLOCK_V, 'mtime', U64_RANGE, mtime);
  }
  let clock: ClockState;
  if (modeCode === 1) clock = { version: CLOCK_V, mode: 'realtime', mtime };
  else {
    const instructionsPerTick = v.getFloat64(b + 348, true);
    const subTick = v.getFloat64(b + 356, true);
    if (!(instructionsPerTick >= 1 && instructionsPerTick >>> 0 === instructionsPerTick)) {
      invalid('clock', CLOCK_V, 'instructionsPerTick', range(1, U32_MAX), instructionsPerTick);
    }
    if (subTick >>> 0 !== subTick) invalid('clock', CLOCK_V, 'subTick', range(0, U32_MAX), subTick);
    if (subTick >= instructionsPerTick) {
      invalid(
        'clock',
        CLOCK_V,
        'subTick',
        `less than instructionsPerTick (${instructionsPerTick})`,
        subTick,
      );
    }
    clock = { version: CLOCK_V, mode: 'deterministic', mtime, instructionsPerTick, subTick };
  }

  // clint (schemas/clint.ts): version, integer(msip, 0, 1), u32 × 2
  const clintVersion = v.getFloat64(b + 364, true);
  const msip = v.getFloat64(b + 372, true);
  const mtimecmpLo = v.getFloat64(b + 380, true);
  const mtimecmpHi = v.getFloat64(b + 388, true);
  if (clintVersion !== CLINT_V) invalidVersion('clint', CLINT_V, clintVersion);
  if (msip !== 0 && msip !== 1) invalid('clint', CLINT_V, 'msip', range(0, 1), msip);
  if (mtimecmpLo >>> 0 !== mtimecmpLo) {
    invalid('clint', CLINT_V, 'mtimecmpLo', range(0, U32_MAX), mtimecmpLo);
  }
  if (mtimecmpHi >>> 0 !== mtimecmpHi) {
    invalid('clint', CLINT_V, 'mtimecmpHi', range(0, U32_MAX), mtimecmpHi);
  }

  // uart (schemas/uart.ts): version, bits(ier, 0x0f), u8(lcr), bits(mcr, 0x1f),
  // bits(fcr, 0xc9), u8(scr), integer(divisor, 0, 0xffff), boolean(thrInterrupt)
  const uartVersion = v.getFloat64(b + 396, true);
  const ier = v.getFloat64(b + 404, true);
  const lcr = v.getFloat64(b + 412, true);
  const mcr = v.getFloat64(b + 420, true);
  const fcr = v.getFloat64(b + 428, true);
  const scr = v.getFloat64(b + 436, true);
  const divisor = v.getFloat64(b + 444, true);
  const thrCode = bytes[b + 452]!;
  if (uartVersion !== UART_V) invalidVersion('uart', UART_V, uartVersion);
  if (ier >>> 0 !== ier) invalid('uart', UART_V, 'ier', range(0, U32_MAX), ier);
  if ((ier & ~UART_IER_MASK) !== 0) {
    invalid('uart', UART_V, 'ier', noBitsOutside(UART_IER_MASK), ier);
  }
  if ((lcr & 0xff) !== lcr) invalid('uart', UART_V, 'lcr', range(0, 0xff), lcr);
  if (mcr >>> 0 !== mcr) invalid('uart', UART_V, 'mcr', range(0, U32_MAX), mcr);
  if ((mcr & ~UART_MCR_MASK) !== 0) {
    invalid('uart', UART_V, 'mcr', noBitsOutside(UART_MCR_MASK), mcr);
  }
  if (fcr >>> 0 !== fcr) invalid('uart', UART_V, 'fcr', range(0, U32_MAX), fcr);
  if ((fcr & ~UART_FCR_MASK) !== 0) {
    invalid('uart', UART_V, 'fcr', noBitsOutside(UART_FCR_MASK), fcr);
  }
  if ((scr & 0xff) !== scr) invalid('uart', UART_V, 'scr', range(0, 0xff), scr);
  if ((divisor & 0xffff) !== divisor) invalid('uart', UART_V, 'divisor', range(0, 0xffff), divisor);
  if (thrCode > 1) invalid('uart', UART_V, 'thrInterrupt', 'true or false', thrCode);

  // finisher (schemas/finisher.ts): version; exit null, or oneOf(kind) and a 'fail' code
  // integer(code, 0, 0xffff), any other kind's code 0 (-0 passes `!== 0` and loads as 0).
  const finisherVersion = v.getFloat64(b + 453, true);
  if (finisherVersion !== FINISHER_V) invalidVersion('finisher', FINISHER_V, finisherVersion);
  let exit: ExitStatus | null = null;
  if (exitKind !== 0) {
    const code = v.getFloat64(b + AT_EXIT + 1, true);
    if (exitKind > 3) invalid('finisher', FINISHER_V, 'exit.kind', oneOf(EXIT_KINDS), exitKind);
    if (exitKind === 2) {
      if ((code & 0xffff) !== code) {
        invalid('finisher', FINISHER_V, 'exit.code', range(0, 0xffff), code);
      }
      exit = { kind: 'fail', code };
    } else {
      if (code !== 0) {
        invalid(
          'finisher',
          FINISHER_V,
          'exit.code',
          `0 for a '${EXIT_KINDS[exitKind - 1]!}' exit`,
          code,
        );
      }
      exit = exitKind === 1 ? { kind: 'pass', code: 0 } : { kind: 'reset', code: 0 };
    }
  }

  // control (schemas/control.ts): version, generationId /^[0-9a-f]{16}$/, count(readyCount)
  const controlVersion = v.getFloat64(b + 470, true);
  if (controlVersion !== CONTROL_V) invalidVersion('control', CONTROL_V, controlVersion);
  let hex = idLength === 16;
  for (let k = 0; hex && k < 16; k++) {
    const c = bytes[idAt + k]!;
    hex = (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66);
  }
  if (!hex) {
    invalid(
      'control',
      CONTROL_V,
      'generationId',
      '16 lower-case hex digits',
      ascii(bytes, idAt, idLength),
    );
  }
  const readyCount = v.getFloat64(b + 510, true);
  if (!isCount(readyCount)) {
    invalid('control', CONTROL_V, 'readyCount', range(0, Number.MAX_SAFE_INTEGER), readyCount);
  }

  return {
    version: MACHINE_V,
    cpu: {
      version: CPU_V,
      pc,
      x,
      priv: privCode === 0 ? 'M' : 'U',
      waiting: waitingCode === 1,
      csr: { mstatus, mie, mtvec, mepc, mcause, mtval, mscratch, mcounteren, pmpcfg, pmpaddr },
      retired,
      minstret,
      mcycle,
      reservation,
    },
    clock,
    clint: { version: CLINT_V, msip, mtimecmpLo, mtimecmpHi },
    uart: {
      version: UART_V,
      ier,
      lcr,
      mcr,
      fcr,
      scr,
      divisor,
      thrInterrupt: thrCode === 1,
      rx: readByteArray(bytes, rxAt, rxLength),
    },
    finisher: { version: FINISHER_V, exit },
    control: {
      version: CONTROL_V,
      generationId: String.fromCharCode(
        bytes[idAt]!,
        bytes[idAt + 1]!,
        bytes[idAt + 2]!,
        bytes[idAt + 3]!,
        bytes[idAt + 4]!,
        bytes[idAt + 5]!,
        bytes[idAt + 6]!,
        bytes[idAt + 7]!,
        bytes[idAt + 8]!,
        bytes[idAt + 9]!,
        bytes[idAt + 10]!,
        bytes[idAt + 11]!,
        bytes[idAt + 12]!,
        bytes[idAt + 13]!,
        bytes[idAt + 14]!,
        bytes[idAt + 15]!,
      ),
      entropy: readU32s(v, b + 478, COMPACT_ENTROPY_WORDS),
      readyCount,
      hostArgs: readByteArray(bytes, hostArgsAt, hostArgsLength),
    },
  };
}

/**
 * The first half of decoding, the header: checks that `bytes` are one whole compact state of
 * layout {@link COMPACT_STATE_VERSION} (magic, layout version, flags, the declared body length
 * against the bytes and layout 1's largest, the CRC) with a body at least layout 1's smallest.
 * Judges no field of the body. {@link decodeCompactState} calls it first; exported so that the
 * reference decoder of compact-state.test.ts shares these checks instead of copying them.
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
  if (flags !== 0) malformed(`the header sets flags ${hex32(flags)}, which layout 1 reserves`);
  const bodyLength = v.getUint32(OFF_BODY_LENGTH, true);
  if (bodyLength > MAX_BODY_BYTES) {
    malformed(
      `the header declares a ${bodyLength}-byte body; layout 1 has at most ${MAX_BODY_BYTES}`,
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
  if (bodyLength < MIN_BODY_BYTES) {
    malformed(`the ${bodyLength}-byte body is shorter than layout 1's smallest, ${MIN_BODY_BYTES}`);
  }
  return v;
}

/**
 * The second half of decoding, the layout of the body (`SNAPSHOT_MALFORMED`), in field order
 * and before any value is judged, so that bytes both malformed and invalid are malformed: the
 * reservation's presence byte is 0 or 1, the unused slots are zero (an absent reservation, a
 * real-time clock's tick fields, the code of no exit: one state has one encoding), the
 * generation id is at most {@link COMPACT_GENERATION_ID_LIMIT} ASCII bytes, the host argument
 * and rx counts are within their limits and the bytes left, and no byte follows the rx bytes.
 * Judges no value a section schema rules on (an unknown enum code, say, is the schema's to
 * reject). {@link decodeCompactState} calls it second; exported for the reference decoder of
 * compact-state.test.ts, as {@link openCompactState} is.
 *
 * @param bytes - bytes {@link openCompactState} accepted
 * @param v - the view it returned
 * @returns where the variable part's pieces are, as one offset in `bytes`: that of the host
 *   arguments' u32 count. The generation id runs from the byte after its length byte (the
 *   first byte after the fixed part) up to it, the host argument bytes follow the count, and
 *   the rx bytes follow their own count up to the end of `bytes`.
 * @throws SnapshotError `SNAPSHOT_MALFORMED`, with the section of the field at fault
 */
export function checkCompactLayout(bytes: Uint8Array, v: DataView): number {
  // In bounds: the body has at least MIN_BODY_BYTES.
  const b = COMPACT_STATE_HEADER_BYTES;
  const end = v.byteLength;
  const present = bytes[b + AT_RESERVATION]!;
  if (present > 1) {
    malformed(`the presence byte of cpu.reservation is ${present}, not 0 or 1`, 'cpu');
  }
  if (present === 0) zeroSlots(v, b + AT_RESERVATION + 1, 8, 'cpu', 'cpu.reservation when absent');
  // Real time carries no tick fields; an unknown mode is the schema rule's to reject.
  if (bytes[b + AT_CLOCK_MODE] === 1) {
    zeroSlots(v, b + AT_CLOCK_MODE + 9, 16, 'clock', 'the tick fields of a real-time clock');
  }
  if (bytes[b + AT_EXIT] === 0) {
    zeroSlots(v, b + AT_EXIT + 1, 8, 'finisher', 'the exit code of a finisher with no exit');
  }
  // The variable part: each count bounded by its limit and by the bytes left.
  let p = b + FIXED_BODY_BYTES;
  const idLength = bytes[p++]!;
  if (idLength > COMPACT_GENERATION_ID_LIMIT) {
    malformed(
      `control.generationId has ${idLength} characters; layout 1 carries at most ` +
        `${COMPACT_GENERATION_ID_LIMIT}`,
      'control',
    );
  }
  if (idLength > end - p) {
    malformed('control.generationId runs past the end of the body', 'control');
  }
  for (let k = 0; k < idLength; k++) {
    const c = bytes[p + k]!;
    if (c > 0x7f) malformed(`control.generationId has a non-ASCII byte ${c}`, 'control');
  }
  p += idLength;
  const hostArgsCountAt = p;
  const hostArgsLength = byteCount(
    v,
    p,
    end,
    COMPACT_HOST_ARGS_LIMIT,
    'control',
    'control.hostArgs',
  );
  p += 4 + hostArgsLength;
  const rxLength = byteCount(v, p, end, COMPACT_RX_LIMIT, 'uart', 'uart.rx');
  p += 4 + rxLength;
  if (p !== end) malformed(`${end - p} bytes follow the last field of the body`);
  return hostArgsCountAt;
}

// ---- internals ---------------------------------------------------------------------------------

type Fields = Readonly<Record<string, unknown>>;

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

function object(value: unknown, section: string, path: string): Fields {
  if (typeof value !== 'object' || value === null) {
    throw unfit(section, path || 'the state', 'an object', value);
  }
  return value as Fields;
}

function num(value: unknown, section: string, path: string): number {
  if (typeof value !== 'number') throw unfit(section, path, 'a number', value);
  return value;
}

function flag(value: unknown, section: string, path: string): number {
  if (value === true) return 1;
  if (value === false) return 0;
  throw unfit(section, path, 'true or false', value);
}

/** The code of `value`: its index in `options` plus `base`. */
function enumCode(
  value: unknown,
  options: readonly string[],
  base: number,
  section: string,
  path: string,
): number {
  const k = typeof value === 'string' ? options.indexOf(value) : -1;
  if (k < 0) throw unfit(section, path, `one of ${options.map((o) => `'${o}'`).join(', ')}`, value);
  return k + base;
}

function fixedArray(
  value: unknown,
  length: number,
  section: string,
  path: string,
): readonly unknown[] {
  if (!Array.isArray(value) || value.length !== length) {
    throw unfit(section, path, `an array of exactly ${length} items`, value);
  }
  return value;
}

function byteArray(
  value: unknown,
  limit: number,
  section: string,
  path: string,
): readonly unknown[] {
  if (!Array.isArray(value) || value.length > limit) {
    throw unfit(section, path, `an array of at most ${limit} bytes`, value);
  }
  return value;
}

/** Writes `count` u32 items at `p`; returns the offset after them. */
function writeU32s(
  v: DataView,
  p: number,
  items: readonly unknown[],
  count: number,
  section: string,
  path: string,
): number {
  for (let k = 0; k < count; k++) {
    const item = items[k];
    if (typeof item !== 'number' || item >>> 0 !== item) {
      throw unfit(section, `${path}[${k}]`, 'an integer in [0, 2^32)', item);
    }
    v.setUint32(p + 4 * k, item, true);
  }
  return p + 4 * count;
}

/** Writes a u32 count and the u8 items at `p`; returns the offset after them. */
function writeBytes(
  out: Uint8Array,
  v: DataView,
  p: number,
  items: readonly unknown[],
  section: string,
  path: string,
): number {
  const n = items.length;
  v.setUint32(p, n, true);
  p += 4;
  for (let k = 0; k < n; k++) {
    const item = items[k];
    if (typeof item !== 'number' || (item & 0xff) !== item) {
      throw unfit(section, `${path}[${k}]`, 'an integer in [0, 255]', item);
    }
    out[p + k] = item;
  }
  return p + n;
}

function readU32s(v: DataView, p: number, count: number): number[] {
  const out = new Array<number>(count);
  for (let k = 0; k < count; k++) out[k] = v.getUint32(p + 4 * k, true);
  return out;
}

/**
 * The u32 count at `p` of a byte array that follows it: at most `limit` and at most the bytes
 * left before `end` (both checked before the count is used).
 */
function byteCount(
  v: DataView,
  p: number,
  end: number,
  limit: number,
  section: string,
  path: string,
): number {
  if (end - p < 4) malformed(`the count of ${path} runs past the end of the body`, section);
  const n = v.getUint32(p, true);
  if (n > limit) malformed(`${path} has ${n} bytes; layout 1 carries at most ${limit}`, section);
  if (n > end - p - 4) {
    malformed(`${path} has ${n} bytes, but only ${end - p - 4} are left in the body`, section);
  }
  return n;
}

/** The `n` bytes at `p` as numbers (in bounds: {@link byteCount} checked them). */
function readByteArray(bytes: Uint8Array, p: number, n: number): number[] {
  const out = new Array<number>(n);
  for (let k = 0; k < n; k++) out[k] = bytes[p + k]!;
  return out;
}

/** Requires `n` (a multiple of 4) zero bytes at `p`: unused slots, so one state has one encoding. */
function zeroSlots(v: DataView, p: number, n: number, section: string, what: string): void {
  for (let k = 0; k < n; k += 4) {
    if (v.getUint32(p + k, true) !== 0) malformed(`${what} must be zero bytes`, section);
  }
}

// ---- the decoder's cold path: messages are built only here, when throwing ----------------------

/**
 * Throws the `SNAPSHOT_INVALID_STATE` that the container path (device-state.ts, `checked`)
 * throws when section `section`'s schema raises `SchemaViolation(path, expected, got)`: the same
 * message, section and cause, so a caller cannot tell which encoding carried the state.
 */
function invalid(
  section: string,
  version: number,
  path: string,
  expected: string,
  got: unknown,
): never {
  const cause = new SchemaViolation(path, expected, got);
  throw new SnapshotError(
    'SNAPSHOT_INVALID_STATE',
    `device-state section '${section}' (version ${version}) is invalid: ${path || 'the body'} ` +
      `must be ${expected}, got ${describe(got)}; the machine cannot be put in this state. The ` +
      `writer is broken or the data is hostile; save the VM again.`,
    { section, cause },
  );
}

/** {@link invalid} for a body `version` other than the section's (`sectionVersion`). */
function invalidVersion(section: string, version: number, got: number): never {
  invalid(section, version, 'version', `${version}, the version in the section entry`, got);
}

/** `expected` of the schemas' `integer(value, path, min, max)`. */
function range(min: number, max: number): string {
  return `an integer in [${min}, ${max}]`;
}

/** `expected` of the schemas' `bits(value, path, mask)` for a value with other bits. */
function noBitsOutside(mask: number): string {
  return `a value with no bits outside 0x${mask.toString(16)}`;
}

/** `expected` of the schemas' `oneOf(value, path, options)`. */
function oneOf(options: readonly string[]): string {
  return `one of ${options.map((o) => `'${o}'`).join(', ')}`;
}

/**
 * The schemas' `u64`: an integer in [0, 2^64) (NaN, ±Infinity and fractions are not; -0 is).
 * Takes the f64 as read, so it stays monomorphic.
 */
function isU64(x: number): boolean {
  return x >= 0 && x < TWO_POW_64 && Math.floor(x) === x;
}

/** The schemas' `count`: an integer in [0, 2^53) (as {@link isU64}). */
function isCount(x: number): boolean {
  return x >= 0 && x <= Number.MAX_SAFE_INTEGER && Math.floor(x) === x;
}

/** The ASCII string of `n` bytes at `p` (checked ASCII by the layout pass). */
function ascii(bytes: Uint8Array, p: number, n: number): string {
  let s = '';
  for (let k = 0; k < n; k++) s += String.fromCharCode(bytes[p + k]!);
  return s;
}
