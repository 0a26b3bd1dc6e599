/**
 * The reference the snapshot tests compare the generated validators with: the section schemas as
 * they were written by hand before the field tables replaced them, with their primitives, kept
 * verbatim and independent of the tables (not part of the build). A table, generator or
 * compact-decoder change that alters what is accepted, or how a violation is worded or ordered,
 * shows up as a difference from these.
 *
 * @packageDocumentation
 */

import {
  MIE_MASK,
  MSTATUS_MASK,
  MSTATUS_MPP,
  MSTATUS_MPP_SHIFT,
  PRIV_M,
  PRIV_U,
} from '../../cpu/arch.js';
import type { HartState } from '../../cpu/state.js';
import type { ClintState } from '../../devices/clint.js';
import type { ClockState, TimeMode } from '../../devices/clock.js';
import { ENTROPY_WORDS, HOST_ARGS_SIZE, type ControlState } from '../../devices/control.js';
import type { PlicState } from '../../devices/plic.js';
import type { ExitStatus, FinisherState } from '../../devices/test-finisher.js';
import type { UartState } from '../../devices/uart16550.js';
import { SchemaViolation, U32_MAX, TWO_POW_64 } from '../schemas/check.js';

/** A reference schema: validates an untrusted body of section version `version`. */
export type ReferenceSchema = (body: unknown, version: number) => unknown;

/** The reference schema of every section, by name. */
export const REFERENCE_SCHEMAS: Readonly<Record<string, ReferenceSchema>> = Object.freeze({
  machine: checkMachine,
  cpu: checkCpu,
  clock: checkClock,
  clint: checkClint,
  uart: checkUart,
  finisher: checkFinisher,
  control: checkControl,
  plic: checkPlic,
});

// ---- the schemas -------------------------------------------------------------------------------

/** The `machine` section's model: which set of device sections follows. */
interface MachineSectionState {
  readonly version: number;
}

/** Schema of the `machine` section: just its version. */
function checkMachine(body: unknown, version: number): MachineSectionState {
  const o = record(body, '', ['version']);
  return { version: sectionVersion(o.version, version) };
}

const u32Item = (v: unknown, path: string): number => u32(v, path);

/**
 * Schema of the `cpu` section (a {@link HartState}): 32 u32 registers with x0 = 0, an aligned
 * pc, privilege M or U, and CSR values the hart's WARL rules can produce (mstatus and mie only
 * with implemented bits, MPP holding M or U, mtvec mode direct or vectored, aligned mepc).
 */
function checkCpu(body: unknown, version: number): HartState {
  const o = record(body, '', [
    'version',
    'pc',
    'x',
    'priv',
    'waiting',
    'csr',
    'retired',
    'minstret',
    'mcycle',
    'reservation',
  ]);
  const x = array(o.x, 'x', 32, 32, u32Item);
  if (x[0] !== 0) throw new SchemaViolation('x[0]', '0 (x0 is hardwired to zero)', x[0]);
  const c = record(o.csr, 'csr', [
    'mstatus',
    'mie',
    'mtvec',
    'mepc',
    'mcause',
    'mtval',
    'mscratch',
    'mcounteren',
    'pmpcfg',
    'pmpaddr',
  ]);
  const mstatus = bits(c.mstatus, 'csr.mstatus', MSTATUS_MASK);
  const mpp = (mstatus & MSTATUS_MPP) >>> MSTATUS_MPP_SHIFT;
  if (mpp !== PRIV_M && mpp !== PRIV_U) {
    throw new SchemaViolation(
      'csr.mstatus',
      'a value whose MPP field holds M (3) or U (0)',
      mstatus,
    );
  }
  const mtvec = u32(c.mtvec, 'csr.mtvec');
  if ((mtvec & 3) >= 2) {
    throw new SchemaViolation('csr.mtvec', 'a value with mode 0 (direct) or 1 (vectored)', mtvec);
  }
  return {
    version: sectionVersion(o.version, version),
    pc: aligned4(o.pc, 'pc'),
    x,
    priv: oneOf(o.priv, 'priv', ['M', 'U'] as const),
    waiting: boolean(o.waiting, 'waiting'),
    csr: {
      mstatus,
      mie: bits(c.mie, 'csr.mie', MIE_MASK),
      mtvec,
      mepc: aligned4(c.mepc, 'csr.mepc'),
      mcause: u32(c.mcause, 'csr.mcause'),
      mtval: u32(c.mtval, 'csr.mtval'),
      mscratch: u32(c.mscratch, 'csr.mscratch'),
      mcounteren: u32(c.mcounteren, 'csr.mcounteren'),
      pmpcfg: array(c.pmpcfg, 'csr.pmpcfg', 4, 4, u32Item),
      pmpaddr: array(c.pmpaddr, 'csr.pmpaddr', 16, 16, u32Item),
    },
    retired: count(o.retired, 'retired'),
    minstret: u64(o.minstret, 'minstret'),
    mcycle: u64(o.mcycle, 'mcycle'),
    reservation: o.reservation === null ? null : aligned4(o.reservation, 'reservation'),
  };
}

/**
 * Schema of the `clock` section (a {@link ClockState}): mtime is a 64-bit tick count; a
 * deterministic clock also carries its instructions per tick (≥ 1) and the instructions already
 * retired into the current tick (fewer than a tick); a real-time clock carries neither.
 */
function checkClock(body: unknown, version: number): ClockState {
  const o = record(body, '', ['version', 'mode', 'mtime'], ['instructionsPerTick', 'subTick']);
  const mode: TimeMode = oneOf(o.mode, 'mode', ['deterministic', 'realtime'] as const);
  const common = {
    version: sectionVersion(o.version, version),
    mode,
    mtime: u64(o.mtime, 'mtime'),
  };
  if (mode === 'realtime') {
    for (const key of ['instructionsPerTick', 'subTick'] as const) {
      if (o[key] !== undefined) {
        throw new SchemaViolation(key, 'absent for a real-time clock', o[key]);
      }
    }
    return common;
  }
  const instructionsPerTick = integer(o.instructionsPerTick, 'instructionsPerTick', 1, 0xffffffff);
  const subTick = u32(o.subTick, 'subTick');
  if (subTick >= instructionsPerTick) {
    throw new SchemaViolation(
      'subTick',
      `less than instructionsPerTick (${instructionsPerTick})`,
      subTick,
    );
  }
  return { ...common, instructionsPerTick, subTick };
}

/** Schema of the `clint` section (a {@link ClintState}): msip is one bit, mtimecmp two u32 words. */
function checkClint(body: unknown, version: number): ClintState {
  const o = record(body, '', ['version', 'msip', 'mtimecmpLo', 'mtimecmpHi']);
  return {
    version: sectionVersion(o.version, version),
    msip: integer(o.msip, 'msip', 0, 1),
    mtimecmpLo: u32(o.mtimecmpLo, 'mtimecmpLo'),
    mtimecmpHi: u32(o.mtimecmpHi, 'mtimecmpHi'),
  };
}

/**
 * Most received bytes a saved UART may hold. Mirrors the receive limit of `Uart16550`
 * (`RX_LIMIT` in devices/uart16550.ts, 64 KiB), beyond which the device drops host input.
 */
const UART_RX_LIMIT = 1 << 16;

const byteItem = (v: unknown, path: string): number => u8(v, path);

/**
 * Schema of the `uart` section (a {@link UartState}): registers with only their implemented
 * bits (IER 0x0f, MCR 0x1f, FCR 0xc9), a 16-bit divisor and at most {@link UART_RX_LIMIT}
 * received bytes.
 */
function checkUart(body: unknown, version: number): UartState {
  const o = record(body, '', [
    'version',
    'ier',
    'lcr',
    'mcr',
    'fcr',
    'scr',
    'divisor',
    'thrInterrupt',
    'rx',
  ]);
  return {
    version: sectionVersion(o.version, version),
    ier: bits(o.ier, 'ier', 0x0f),
    lcr: u8(o.lcr, 'lcr'),
    mcr: bits(o.mcr, 'mcr', 0x1f),
    fcr: bits(o.fcr, 'fcr', 0xc9),
    scr: u8(o.scr, 'scr'),
    divisor: integer(o.divisor, 'divisor', 0, 0xffff),
    thrInterrupt: boolean(o.thrInterrupt, 'thrInterrupt'),
    rx: array(o.rx, 'rx', 0, UART_RX_LIMIT, byteItem),
  };
}

/**
 * Schema of the `finisher` section (a {@link FinisherState}): no exit yet (`null`), or pass /
 * reset with code 0, or fail with a 16-bit code.
 */
function checkFinisher(body: unknown, version: number): FinisherState {
  const o = record(body, '', ['version', 'exit']);
  return { version: sectionVersion(o.version, version), exit: checkExit(o.exit) };
}

function checkExit(value: unknown): ExitStatus | null {
  if (value === null) return null;
  const e = record(value, 'exit', ['kind', 'code']);
  const kind = oneOf(e.kind, 'exit.kind', ['pass', 'fail', 'reset'] as const);
  if (kind === 'fail') return { kind, code: integer(e.code, 'exit.code', 0, 0xffff) };
  if (e.code !== 0) throw new SchemaViolation('exit.code', `0 for a '${kind}' exit`, e.code);
  return { kind, code: 0 };
}

/**
 * Schema of the `control` section (a {@link ControlState}): a 64-bit generation id as 16
 * lower-case hex digits, exactly {@link ENTROPY_WORDS} u32 entropy words, a READY count and at
 * most {@link HOST_ARGS_SIZE} host-argument bytes.
 */
function checkControl(body: unknown, version: number): ControlState {
  const o = record(body, '', ['version', 'generationId', 'entropy', 'readyCount', 'hostArgs']);
  return {
    version: sectionVersion(o.version, version),
    generationId: matching(
      o.generationId,
      'generationId',
      /^[0-9a-f]{16}$/,
      '16 lower-case hex digits',
    ),
    entropy: array(o.entropy, 'entropy', ENTROPY_WORDS, ENTROPY_WORDS, u32Item),
    readyCount: count(o.readyCount, 'readyCount'),
    hostArgs: array(o.hostArgs, 'hostArgs', 0, HOST_ARGS_SIZE, byteItem),
  };
}

/**
 * Schema of the `plic` section (a {@link PlicState}): 96 priorities of 3 bits with source 0's
 * at 0, 3-word pending and claimed bit sets without source 0, 6 enable words (2 contexts), 2
 * thresholds of 3 bits, and the 2 context outputs as bits 0–1.
 */
function checkPlic(body: unknown, version: number): PlicState {
  const o = record(body, '', [
    'version',
    'priority',
    'pending',
    'claimed',
    'enable',
    'threshold',
    'outputs',
  ]);
  const v = sectionVersion(o.version, version);
  const priority = array(o.priority, 'priority', 96, 96, u32Item);
  if (priority[0] !== 0) {
    throw new SchemaViolation('priority[0]', '0 (source 0 does not exist)', priority[0]);
  }
  priorities(priority, 'priority');
  const sourceBits = (value: unknown, path: string): number[] => {
    const words = array(value, path, 3, 3, u32Item);
    if ((words[0]! & 1) !== 0) {
      throw new SchemaViolation(
        `${path}[0]`,
        'a word with bit 0 clear (source 0 does not exist)',
        words[0],
      );
    }
    return words;
  };
  const pending = sourceBits(o.pending, 'pending');
  const claimed = sourceBits(o.claimed, 'claimed');
  const enable = array(o.enable, 'enable', 6, 6, u32Item);
  const threshold = priorities(array(o.threshold, 'threshold', 2, 2, u32Item), 'threshold');
  return {
    version: v,
    priority,
    pending,
    claimed,
    enable,
    threshold,
    outputs: bits(o.outputs, 'outputs', 0x3),
  };
}

/** Requires every item of `a` to be a PLIC priority (0–7); reports the first that is not. */
function priorities(a: number[], path: string): number[] {
  const over = a.find((p) => p > 7);
  if (over !== undefined) throw new SchemaViolation(path, 'priorities in [0, 7]', over);
  return a;
}

// ---- their primitives --------------------------------------------------------------------------

/** Joins a path and a field name. */
function at(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path === '' ? key : `${path}.${key}`;
}

/**
 * A plain object with exactly the `required` keys plus any of the `optional` ones (an optional
 * key holding `undefined` counts as absent). Returns a null-prototype copy of the known fields.
 */
function record(
  value: unknown,
  path: string,
  required: readonly string[],
  optional: readonly string[] = [],
): Readonly<Record<string, unknown>> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new SchemaViolation(path, 'an object', value);
  }
  const src = value as Record<string, unknown>;
  const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const key of Object.keys(src)) {
    if (required.includes(key)) continue;
    if (optional.includes(key)) {
      if (src[key] !== undefined) out[key] = src[key];
      continue;
    }
    throw new SchemaViolation(
      at(path, key),
      'absent (not a field of this section version)',
      src[key],
    );
  }
  for (const key of required) {
    if (!Object.hasOwn(src, key)) throw new SchemaViolation(at(path, key), 'present', undefined);
    out[key] = src[key];
  }
  return out;
}

/** An integer in `[min, max]` (inclusive). */
function integer(value: unknown, path: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new SchemaViolation(path, `an integer in [${min}, ${max}]`, value);
  }
  return value;
}

/** An unsigned 32-bit integer. */
function u32(value: unknown, path: string): number {
  return integer(value, path, 0, U32_MAX);
}

/** An unsigned 8-bit integer. */
function u8(value: unknown, path: string): number {
  return integer(value, path, 0, 0xff);
}

/** A non-negative integer that a double holds exactly (< 2^53). */
function count(value: unknown, path: string): number {
  return integer(value, path, 0, Number.MAX_SAFE_INTEGER);
}

/** A 64-bit counter carried as a number: an integer in `[0, 2^64)`. */
function u64(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= TWO_POW_64) {
    throw new SchemaViolation(path, 'an integer in [0, 2^64)', value);
  }
  return value;
}

/** An integer with no bits outside `mask`. */
function bits(value: unknown, path: string, mask: number): number {
  const v = u32(value, path);
  if ((v & ~mask) !== 0) {
    throw new SchemaViolation(path, `a value with no bits outside 0x${mask.toString(16)}`, value);
  }
  return v;
}

/** A u32 that is a multiple of 4. */
function aligned4(value: unknown, path: string): number {
  const v = u32(value, path);
  if (v % 4 !== 0) throw new SchemaViolation(path, 'a multiple of 4', value);
  return v;
}

/** A boolean. */
function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') throw new SchemaViolation(path, 'true or false', value);
  return value;
}

/** One of the given strings. */
function oneOf<T extends string>(value: unknown, path: string, options: readonly T[]): T {
  if (typeof value !== 'string' || !(options as readonly string[]).includes(value)) {
    throw new SchemaViolation(path, `one of ${options.map((o) => `'${o}'`).join(', ')}`, value);
  }
  return value as T;
}

/** A string matching `pattern` (described as `what`). */
function matching(value: unknown, path: string, pattern: RegExp, what: string): string {
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new SchemaViolation(path, what, value);
  }
  return value;
}

/** An array of `min`..`max` items, each checked by `item`. The length is checked first. */
function array<T>(
  value: unknown,
  path: string,
  min: number,
  max: number,
  item: (v: unknown, path: string) => T,
): T[] {
  if (!Array.isArray(value)) throw new SchemaViolation(path, 'an array', value);
  if (value.length < min || value.length > max) {
    const want = min === max ? `exactly ${min}` : `${min}–${max}`;
    throw new SchemaViolation(path, `an array of ${want} items`, value);
  }
  const out = new Array<T>(value.length);
  for (let k = 0; k < value.length; k++) out[k] = item(value[k], at(path, k));
  return out;
}

/** The body's `version` field: must equal the section version in the container entry. */
function sectionVersion(value: unknown, version: number): number {
  if (value !== version) {
    throw new SchemaViolation('version', `${version}, the version in the section entry`, value);
  }
  return version;
}
