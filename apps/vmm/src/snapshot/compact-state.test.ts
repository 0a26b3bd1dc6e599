import { isDeepStrictEqual } from 'node:util';
import { crc32 } from 'node:zlib';

import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';

import { MIE_MASK, MSTATUS_MASK, MSTATUS_MPP } from '../cpu/arch.js';
import { ENTROPY_WORDS, HOST_ARGS_SIZE } from '../devices/control.js';
import { createMachine } from '../machine/machine.js';
import { runUntilStopped } from '../machine/run-sync.js';
import type { MachineState } from '../machine/state.js';
import {
  COMPACT_ENTROPY_WORDS,
  COMPACT_GENERATION_ID_LIMIT,
  COMPACT_HOST_ARGS_LIMIT,
  COMPACT_RX_LIMIT,
  COMPACT_STATE_HEADER_BYTES,
  COMPACT_STATE_MAGIC,
  COMPACT_STATE_MAX_BYTES,
  COMPACT_STATE_SECTIONS,
  COMPACT_STATE_VERSION,
  checkCompactLayout,
  compactStateCurrent,
  decodeCompactState,
  encodeCompactState,
  isCompactState,
  openCompactState,
} from './compact-state.js';
import {
  decodeDeviceState,
  encodeDeviceState,
  stateFromBodies,
  type SectionToLoad,
} from './device-state.js';
import { isSnapshotError, type SnapshotError, type SnapshotErrorCode } from './errors.js';
import { SchemaViolation, U32_MAX } from './schemas/check.js';
import { UART_RX_LIMIT } from './schemas/uart.js';
import type * as sectionsModule from './sections.js';
import { MACHINE_SECTIONS } from './sections.js';
import { byteArray } from './table/fields.js';
import { REFERENCE_SCHEMAS } from './testing/reference-schemas.js';
import {
  bootGuest,
  bootMixer,
  errorOf,
  hasGuest,
  machineWithRamOf,
  sampleContainer,
  sampleState,
  validMachineState,
} from './test-support.js';

/** Layout 2 offsets (from the start of the bytes), as FORMAT.md lists them. */
const B = COMPACT_STATE_HEADER_BYTES;
const AT = {
  version: 8,
  flags: 10,
  bodyLength: 12,
  crc: 16,
  machineVersion: B,
  cpuVersion: B + 8,
  pc: B + 16,
  x: B + 24,
  priv: B + 152,
  waiting: B + 153,
  mstatus: B + 154,
  mcounteren: B + 210,
  pmpcfg: B + 218,
  pmpaddr: B + 234,
  retired: B + 298,
  mcycle: B + 314,
  reservationPresent: B + 322,
  reservation: B + 323,
  clockVersion: B + 331,
  clockMode: B + 339,
  mtime: B + 340,
  instructionsPerTick: B + 348,
  subTick: B + 356,
  clintVersion: B + 364,
  mtimecmpHi: B + 388,
  uartVersion: B + 396,
  divisor: B + 444,
  thrInterrupt: B + 452,
  finisherVersion: B + 453,
  exitKind: B + 461,
  exitCode: B + 462,
  controlVersion: B + 470,
  entropy: B + 478,
  readyCount: B + 510,
  plicVersion: B + 518,
  priority: B + 526,
  pending: B + 910,
  claimed: B + 922,
  enable: B + 934,
  threshold: B + 958,
  outputs: B + 966,
  generationIdLength: B + 974,
} as const;

const viewOf = (bytes: Uint8Array): DataView =>
  new DataView(bytes.buffer, bytes.byteOffset, bytes.length);

/** Recomputes the body CRC after an edit, so the checks after the CRC see the edit. */
function reseal(bytes: Uint8Array): Uint8Array {
  viewOf(bytes).setUint32(AT.crc, crc32(bytes.subarray(B)) >>> 0, true);
  return bytes;
}

/** A copy of `bytes` edited by `edit` (given a view) and resealed. */
function edited(bytes: Uint8Array, edit: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const copy = bytes.slice();
  edit(viewOf(copy), copy);
  return reseal(copy);
}

/**
 * Requires {@link decodeCompactState} to reject `bytes` with `code`, in `section` (undefined:
 * none), with a message matching `message`. `what` names the case.
 */
function rejected(
  bytes: Uint8Array,
  code: SnapshotErrorCode,
  section: string | undefined,
  message: RegExp,
  what?: string,
): void {
  const err = errorOf(() => decodeCompactState(bytes));
  expect(err.code, what).toBe(code);
  expect(err.section, what).toBe(section);
  expect(err.message, what).toMatch(message);
}

/** Offsets of the variable part of `bytes`. */
function variableOffsets(bytes: Uint8Array): { hostArgsCount: number; rxCount: number } {
  const hostArgsCount = AT.generationIdLength + 1 + bytes[AT.generationIdLength]!;
  const rxCount = hostArgsCount + 4 + viewOf(bytes).getUint32(hostArgsCount, true);
  return { hostArgsCount, rxCount };
}

const roundTrip = (s: MachineState): MachineState => decodeCompactState(encodeCompactState(s));
const viaContainer = (s: MachineState): MachineState =>
  decodeDeviceState(encodeDeviceState(s)).state;

const sample = sampleState();
const valid = encodeCompactState(sample);

/** Edits of one to four bytes of {@link valid}'s body, to any values (see {@link bodyEdited}). */
const BODY_EDITS = fc.array(
  fc.record({
    at: fc.nat({ max: valid.length - 1 - B }),
    value: fc.integer({ min: 0, max: 255 }),
  }),
  { minLength: 1, maxLength: 4 },
);

/** A copy of {@link valid} with `edits` from {@link BODY_EDITS} made to its body, resealed. */
function bodyEdited(edits: readonly { readonly at: number; readonly value: number }[]): Uint8Array {
  const bytes = valid.slice();
  for (const e of edits) bytes[B + e.at] = e.value;
  return reseal(bytes);
}

describe('layout 2', () => {
  it('is current in this build: the sections and versions are exactly those of MACHINE_SECTIONS', () => {
    // Fails when a section is added, removed, reordered, made optional or bumped without a new
    // compact layout: write layout 3 (and keep COMPACT_STATE_SECTIONS its literal record).
    expect(compactStateCurrent()).toBe(true);
    expect(Object.entries(COMPACT_STATE_SECTIONS)).toEqual(
      MACHINE_SECTIONS.map((s) => [s.name, s.version]),
    );
    expect(MACHINE_SECTIONS.some((s) => s.optional)).toBe(false);
    expect(COMPACT_STATE_VERSION).toBe(2);
  });

  it('carries the limits the schemas have today', () => {
    expect(COMPACT_RX_LIMIT).toBe(UART_RX_LIMIT);
    expect(COMPACT_HOST_ARGS_LIMIT).toBe(HOST_ARGS_SIZE);
    expect(COMPACT_ENTROPY_WORDS).toBe(ENTROPY_WORDS);
  });

  it('writes the header and fields where FORMAT.md says', () => {
    expect(String.fromCharCode(...COMPACT_STATE_MAGIC)).toBe('HNDFCST\0');
    const v = viewOf(valid);
    expect([...valid.subarray(0, 8)]).toEqual([...COMPACT_STATE_MAGIC]);
    expect(v.getUint16(AT.version, true)).toBe(2);
    expect(v.getUint16(AT.flags, true)).toBe(0);
    expect(v.getUint32(AT.bodyLength, true)).toBe(valid.length - B);
    expect(v.getUint32(AT.crc, true)).toBe(crc32(valid.subarray(B)) >>> 0);

    const s = sample;
    expect(s.cpu.reservation).not.toBeNull();
    expect(s.clock.mode).toBe('deterministic');
    expect(v.getFloat64(AT.machineVersion, true)).toBe(s.version);
    expect(v.getFloat64(AT.cpuVersion, true)).toBe(s.cpu.version);
    expect(v.getFloat64(AT.pc, true)).toBe(s.cpu.pc);
    for (let k = 0; k < 32; k++) expect(v.getUint32(AT.x + 4 * k, true)).toBe(s.cpu.x[k]);
    expect(valid[AT.priv]).toBe(s.cpu.priv === 'M' ? 0 : 1);
    expect(valid[AT.waiting]).toBe(s.cpu.waiting ? 1 : 0);
    expect(v.getFloat64(AT.mstatus, true)).toBe(s.cpu.csr.mstatus);
    expect(v.getFloat64(AT.mcounteren, true)).toBe(s.cpu.csr.mcounteren);
    expect(v.getUint32(AT.pmpcfg + 12, true)).toBe(s.cpu.csr.pmpcfg[3]);
    expect(v.getUint32(AT.pmpaddr + 60, true)).toBe(s.cpu.csr.pmpaddr[15]);
    expect(v.getFloat64(AT.retired, true)).toBe(s.cpu.retired);
    expect(v.getFloat64(AT.mcycle, true)).toBe(s.cpu.mcycle);
    expect(valid[AT.reservationPresent]).toBe(1);
    expect(v.getFloat64(AT.reservation, true)).toBe(s.cpu.reservation);
    expect(v.getFloat64(AT.clockVersion, true)).toBe(s.clock.version);
    expect(valid[AT.clockMode]).toBe(0);
    expect(v.getFloat64(AT.mtime, true)).toBe(s.clock.mtime);
    expect(v.getFloat64(AT.instructionsPerTick, true)).toBe(s.clock.instructionsPerTick);
    expect(v.getFloat64(AT.subTick, true)).toBe(s.clock.subTick);
    expect(v.getFloat64(AT.clintVersion, true)).toBe(s.clint.version);
    expect(v.getFloat64(AT.mtimecmpHi, true)).toBe(s.clint.mtimecmpHi);
    expect(v.getFloat64(AT.uartVersion, true)).toBe(s.uart.version);
    expect(v.getFloat64(AT.divisor, true)).toBe(s.uart.divisor);
    expect(valid[AT.thrInterrupt]).toBe(s.uart.thrInterrupt ? 1 : 0);
    expect(v.getFloat64(AT.finisherVersion, true)).toBe(s.finisher.version);
    expect(valid[AT.exitKind]).toBe(0);
    expect(v.getFloat64(AT.controlVersion, true)).toBe(s.control.version);
    expect(v.getUint32(AT.entropy + 28, true)).toBe(s.control.entropy[7]);
    expect(v.getFloat64(AT.readyCount, true)).toBe(s.control.readyCount);
    expect(v.getFloat64(AT.plicVersion, true)).toBe(s.plic.version);
    const words = (at: number, n: number): number[] =>
      Array.from({ length: n }, (_, k) => v.getUint32(at + 4 * k, true));
    expect(words(AT.priority, 96)).toEqual(s.plic.priority);
    expect(words(AT.pending, 3)).toEqual(s.plic.pending);
    expect(words(AT.claimed, 3)).toEqual(s.plic.claimed);
    expect(words(AT.enable, 6)).toEqual(s.plic.enable);
    expect(words(AT.threshold, 2)).toEqual(s.plic.threshold);
    expect(v.getFloat64(AT.outputs, true)).toBe(s.plic.outputs);
    expect(s.plic.outputs).toBe(1);

    const id = s.control.generationId;
    expect(valid[AT.generationIdLength]).toBe(id.length);
    expect(String.fromCharCode(...valid.subarray(AT.generationIdLength + 1).subarray(0, 16))).toBe(
      id,
    );
    const { hostArgsCount, rxCount } = variableOffsets(valid);
    expect(v.getUint32(hostArgsCount, true)).toBe(s.control.hostArgs.length);
    expect([...valid.subarray(hostArgsCount + 4, rxCount)]).toEqual(s.control.hostArgs);
    expect(v.getUint32(rxCount, true)).toBe(s.uart.rx.length);
    expect([...valid.subarray(rxCount + 4)]).toEqual(s.uart.rx);
    expect(s.uart.rx.length).toBeGreaterThan(0);
    expect(s.control.hostArgs.length).toBeGreaterThan(0);
  });

  it('has COMPACT_STATE_MAX_BYTES for a state with every variable field at its limit', () => {
    const big = {
      ...sample,
      uart: { ...sample.uart, rx: new Array<number>(COMPACT_RX_LIMIT).fill(7) },
      control: {
        ...sample.control,
        generationId: 'a'.repeat(COMPACT_GENERATION_ID_LIMIT),
        hostArgs: new Array<number>(COMPACT_HOST_ARGS_LIMIT).fill(9),
      },
    };
    expect(encodeCompactState(big).length).toBe(COMPACT_STATE_MAX_BYTES);
  });

  it('encodes the same state to the same bytes', () => {
    expect(encodeCompactState(sampleState())).toEqual(valid);
  });
});

describe('round trip', () => {
  it('is exact for fresh machines of either time mode', () => {
    for (const timeMode of ['deterministic', 'realtime'] as const) {
      const state = createMachine({ ramSize: 1 << 20, timeMode }).save();
      expect(roundTrip(state)).toEqual(state);
      expect(roundTrip(state)).toEqual(viaContainer(state));
    }
    const realtime = createMachine({ ramSize: 1 << 20, timeMode: 'realtime' }).save();
    expect(Object.keys(roundTrip(realtime).clock).sort()).toEqual(['mode', 'mtime', 'version']);
  });

  it('is exact for a machine that ran, with a reservation, host arguments and unread input', () => {
    expect(roundTrip(sample)).toEqual(sample);
    expect(roundTrip(sample)).toEqual(viaContainer(sample));
  });

  it('is exact at many points of a run, and for a machine that powered off', () => {
    const m = bootMixer([], 3000, new Uint8Array([1, 2, 3]));
    m.uart.receive([0, 255, 10]);
    let reservations = 0;
    while (m.exit === null) {
      m.cpu.run(4099);
      const state = m.save();
      if (state.cpu.reservation !== null) reservations++;
      expect(roundTrip(state)).toEqual(state);
      expect(roundTrip(state)).toEqual(viaContainer(state));
    }
    expect(reservations).toBeGreaterThan(0);
    const exited = m.save();
    expect(exited.finisher.exit).toEqual({ kind: 'pass', code: 0 });
    expect(roundTrip(exited)).toEqual(exited);
    for (const exit of [
      { kind: 'fail', code: 0xbeef },
      { kind: 'reset', code: 0 },
    ] as const) {
      const state = { ...exited, finisher: { ...exited.finisher, exit } };
      expect(roundTrip(state)).toEqual(state);
    }
  });

  it.skipIf(!hasGuest('interrupts.elf'))('is exact along a prebuilt guest run', () => {
    const m = bootGuest('interrupts.elf', []);
    m.uart.receive([1, 2, 3, 250]);
    for (let k = 0; k < 20 && m.exit === null; k++) {
      m.cpu.run(997);
      const state = m.save();
      expect(roundTrip(state)).toEqual(state);
    }
  });

  it.skipIf(!hasGuest('plic.elf'))('is exact along a run that drives the PLIC', () => {
    const m = bootGuest('plic.elf', []);
    const seen = new Set<string>();
    while (m.exit === null) {
      m.cpu.run(37);
      const state = m.save();
      expect(roundTrip(state)).toEqual(state);
      seen.add(JSON.stringify([state.plic.pending, state.plic.claimed, state.plic.outputs]));
    }
    // Idle, pending with MEIP up, pending with MEIP not re-evaluated, and claimed were all seen.
    expect(seen.size).toBeGreaterThanOrEqual(4);
  });

  it('moves a running guest: pause → encode → decode → restore → resume equals an uninterrupted run', () => {
    const whole: number[] = [];
    const ref = bootMixer(whole);
    expect(runUntilStopped(ref, 1e7)).toBe('halted');
    const total = ref.cpu.retired;
    for (let split = 1; split < total; split += 7919) {
      const out: number[] = [];
      const first = bootMixer(out);
      first.cpu.run(split);
      const second = machineWithRamOf(first, out);
      second.restore(decodeCompactState(encodeCompactState(first.save())));
      expect(runUntilStopped(second, 1e7)).toBe('halted');
      expect(out, `split at ${split} of ${total}`).toEqual(whole);
    }
  });

  it('is exact, and equal to the container, for any state within the schemas', () => {
    fc.assert(
      fc.property(validMachineState(300), (state) => {
        const decoded = roundTrip(state);
        expect(decoded).toEqual(state);
        expect(decoded).toEqual(viaContainer(state));
      }),
      { numRuns: 500 },
    );
  });
});

describe('hostile bytes', () => {
  it('rejects another magic, naming both encodings', () => {
    rejected(sampleContainer(), 'SNAPSHOT_BAD_MAGIC', undefined, /HNDFCST.*decodeDeviceState/);
    const bytes = valid.slice();
    bytes[6] = 0x58;
    expect(errorOf(() => decodeCompactState(bytes)).code).toBe('SNAPSHOT_BAD_MAGIC');
    expect(errorOf(() => decodeCompactState(new Uint8Array([0x48, 0x00]))).code).toBe(
      'SNAPSHOT_BAD_MAGIC',
    );
  });

  it('rejects another layout version', () => {
    for (const version of [0, 1, 3, 0xffff]) {
      const bytes = valid.slice();
      viewOf(bytes).setUint16(AT.version, version, true);
      const err = errorOf(() => decodeCompactState(bytes));
      expect(err.code).toBe('SNAPSHOT_UNSUPPORTED_VERSION');
      expect(err.message).toContain(
        `layout version ${version}, but this build reads only layout 2`,
      );
    }
  });

  it('rejects every truncation', () => {
    for (let n = 0; n < valid.length; n++) {
      const err = errorOf(() => decodeCompactState(valid.subarray(0, n)));
      expect(err.code, `${n} bytes`).toBe('SNAPSHOT_TRUNCATED');
      expect(err.message).toContain(`truncated: ${n} bytes`);
    }
  });

  it('rejects bytes after the state', () => {
    const bytes = new Uint8Array(valid.length + 1);
    bytes.set(valid);
    rejected(bytes, 'SNAPSHOT_MALFORMED', undefined, /1 bytes follow the \d+-byte body/);
  });

  it('rejects every single-bit flip of the body or its CRC as corrupted', () => {
    for (let at = AT.crc; at < valid.length; at++) {
      for (let bit = 0; bit < 8; bit++) {
        const bytes = valid.slice();
        bytes[at]! ^= 1 << bit;
        expect(errorOf(() => decodeCompactState(bytes)).code, `byte ${at} bit ${bit}`).toBe(
          'SNAPSHOT_BAD_CRC',
        );
      }
    }
  });

  it('rejects every single-bit flip of the header with a SnapshotError', () => {
    for (let at = 0; at < AT.crc; at++) {
      for (let bit = 0; bit < 8; bit++) {
        const bytes = valid.slice();
        bytes[at]! ^= 1 << bit;
        expect(errorOf(() => decodeCompactState(bytes)).code).not.toBe('SNAPSHOT_BAD_CRC');
      }
    }
  });

  it('rejects nonzero header flags', () => {
    const bytes = valid.slice();
    viewOf(bytes).setUint16(AT.flags, 1, true);
    rejected(bytes, 'SNAPSHOT_MALFORMED', undefined, /flags 0x00000001/);
  });

  it('rejects a declared body longer than layout 2 can have, before reading it', () => {
    const bytes = valid.slice();
    viewOf(bytes).setUint32(AT.bodyLength, COMPACT_STATE_MAX_BYTES, true);
    rejected(bytes, 'SNAPSHOT_MALFORMED', undefined, /at most/);
  });

  it('rejects a CRC-correct body shorter than the fixed part', () => {
    const bytes = new Uint8Array(B + 100);
    bytes.set(valid.subarray(0, B));
    viewOf(bytes).setUint32(AT.bodyLength, 100, true);
    rejected(reseal(bytes), 'SNAPSHOT_MALFORMED', undefined, /shorter than layout 2's smallest/);
  });

  it('rejects CRC-correct counts beyond their limits or the bytes left', () => {
    const { hostArgsCount, rxCount } = variableOffsets(valid);
    const cases: [string, (v: DataView, b: Uint8Array) => void, RegExp, string][] = [
      [
        'oversized rx count',
        (v) => v.setUint32(rxCount, COMPACT_RX_LIMIT + 1, true),
        /uart\.rx has 65537 bytes; layout 2 carries at most 65536/,
        'uart',
      ],
      [
        'rx count past the end',
        (v) => v.setUint32(rxCount, sample.uart.rx.length + 1, true),
        /uart\.rx has \d+ bytes, but only \d+ are left/,
        'uart',
      ],
      [
        'rx count of 2^32 - 1',
        (v) => v.setUint32(rxCount, 0xffffffff, true),
        /uart\.rx has 4294967295 bytes; layout 2 carries at most/,
        'uart',
      ],
      [
        'oversized hostArgs count',
        (v) => v.setUint32(hostArgsCount, 257, true),
        /control\.hostArgs has 257 bytes; layout 2 carries at most 256/,
        'control',
      ],
      [
        'hostArgs count past the end',
        (v) => v.setUint32(hostArgsCount, 200, true),
        /control\.hostArgs has 200 bytes, but only \d+ are left/,
        'control',
      ],
      [
        'oversized generation id length',
        (_v, b) => (b[AT.generationIdLength] = 65),
        /generationId has 65 characters; layout 2 carries at most 64/,
        'control',
      ],
      [
        'non-ASCII generation id',
        (_v, b) => (b[AT.generationIdLength + 3] = 0xe9),
        /non-ASCII byte 233/,
        'control',
      ],
      [
        'reservation presence byte 2',
        (_v, b) => (b[AT.reservationPresent] = 2),
        /presence byte of cpu\.reservation is 2/,
        'cpu',
      ],
    ];
    for (const [what, edit, message, section] of cases) {
      rejected(edited(valid, edit), 'SNAPSHOT_MALFORMED', section, message, what);
    }
  });

  it('rejects a CRC-correct body with bytes after its last field, or a short one', () => {
    const longer = new Uint8Array(valid.length + 1);
    longer.set(valid);
    viewOf(longer).setUint32(AT.bodyLength, valid.length + 1 - B, true);
    rejected(reseal(longer), 'SNAPSHOT_MALFORMED', undefined, /1 bytes follow the last field/);

    const shorter = valid.slice(0, valid.length - 1);
    viewOf(shorter).setUint32(AT.bodyLength, shorter.length - B, true);
    rejected(reseal(shorter), 'SNAPSHOT_MALFORMED', 'uart', /uart\.rx has \d+ bytes, but only/);
  });

  it('requires the unused slots to be zero, so each state has one encoding', () => {
    const none = encodeCompactState({ ...sample, cpu: { ...sample.cpu, reservation: null } });
    expect(decodeCompactState(none).cpu.reservation).toBeNull();
    rejected(
      edited(none, (v) => v.setFloat64(AT.reservation, 8, true)),
      'SNAPSHOT_MALFORMED',
      'cpu',
      /cpu\.reservation when absent must be zero/,
    );

    const realtime = createMachine({ ramSize: 1 << 20, timeMode: 'realtime' }).save();
    const rt = encodeCompactState(realtime);
    rejected(
      edited(rt, (v) => v.setFloat64(AT.subTick, 1, true)),
      'SNAPSHOT_MALFORMED',
      'clock',
      /the tick fields of a real-time clock must be zero/,
    );

    rejected(
      edited(valid, (v) => v.setFloat64(AT.exitCode, 1, true)),
      'SNAPSHOT_MALFORMED',
      'finisher',
      /the exit code of a finisher with no exit must be zero/,
    );
  });

  it('rejects values the layout carries but a schema forbids, as the schemas do', () => {
    const cases: [string, (v: DataView, b: Uint8Array) => void, string, RegExp][] = [
      [
        'priv code 7',
        (_v, b) => (b[AT.priv] = 7),
        'cpu',
        /section 'cpu' \(version 1\) is invalid: priv must be one of 'M', 'U', got 7/,
      ],
      ['waiting 2', (_v, b) => (b[AT.waiting] = 2), 'cpu', /waiting must be true or false, got 2/],
      [
        'thrInterrupt 255',
        (_v, b) => (b[AT.thrInterrupt] = 255),
        'uart',
        /thrInterrupt must be true or false, got 255/,
      ],
      [
        'NaN pc',
        (v) => v.setFloat64(AT.pc, NaN, true),
        'cpu',
        /pc must be an integer in \[0, 4294967295\], got NaN/,
      ],
      [
        'fractional mstatus',
        (v) => v.setFloat64(AT.mstatus, 0.5, true),
        'cpu',
        /csr\.mstatus must be an integer/,
      ],
      ['x0 = 5', (v) => v.setUint32(AT.x, 5, true), 'cpu', /x\[0\] must be 0 \(x0 is hardwired/],
      [
        'cpu version 2',
        (v) => v.setFloat64(AT.cpuVersion, 2, true),
        'cpu',
        /version must be 1, the version in the section entry, got 2/,
      ],
      [
        'machine version 0',
        (v) => v.setFloat64(AT.machineVersion, 0, true),
        'machine',
        /section 'machine'/,
      ],
      ['clock mode code 9', (_v, b) => (b[AT.clockMode] = 9), 'clock', /mode must be one of/],
      [
        'subTick ≥ instructionsPerTick',
        (v) => v.setFloat64(AT.subTick, 1e9, true),
        'clock',
        /subTick must be less than instructionsPerTick/,
      ],
      [
        'exit kind code 9',
        (_v, b) => (b[AT.exitKind] = 9),
        'finisher',
        /exit\.kind must be one of 'pass', 'fail', 'reset', got 9/,
      ],
      [
        'pass with code 3',
        (v, b) => {
          b[AT.exitKind] = 1;
          v.setFloat64(AT.exitCode, 3, true);
        },
        'finisher',
        /exit\.code must be 0 for a 'pass' exit/,
      ],
      [
        'divisor 2^16',
        (v) => v.setFloat64(AT.divisor, 65536, true),
        'uart',
        /divisor must be an integer in \[0, 65535\]/,
      ],
      [
        'generation id not hex',
        (_v, b) => (b[AT.generationIdLength + 1] = 0x5a),
        'control',
        /generationId must be 16 lower-case hex digits/,
      ],
    ];
    // A 15-character id: the body one byte shorter, the rest of it moved up.
    const id = AT.generationIdLength;
    const short = new Uint8Array(valid.length - 1);
    short.set(valid.subarray(0, id + 16));
    short.set(valid.subarray(id + 17), id + 16);
    short[id] = 15;
    viewOf(short).setUint32(AT.bodyLength, short.length - B, true);
    rejected(
      reseal(short),
      'SNAPSHOT_INVALID_STATE',
      'control',
      /generationId must be 16 lower-case hex digits, got "[0-9a-f]{15}"/,
    );

    for (const [what, edit, section, message] of cases) {
      rejected(edited(valid, edit), 'SNAPSHOT_INVALID_STATE', section, message, what);
    }
  });

  it('rejects what is not bytes', () => {
    const err = errorOf(() => decodeCompactState('HNDFCST' as unknown as Uint8Array));
    expect(err.code).toBe('SNAPSHOT_MALFORMED');
  });

  it('returns a state its container writer accepts, or throws a SnapshotError, for any edit', () => {
    fc.assert(
      fc.property(BODY_EDITS, (edits) => {
        let state: MachineState;
        try {
          state = decodeCompactState(bodyEdited(edits));
        } catch (err) {
          if (isSnapshotError(err)) return;
          throw err;
        }
        // Valid for every schema: the container writer runs them all. (An edited sign byte can
        // make a zero -0, which the schemas accept and JSON writes as 0.)
        const asJson = JSON.parse(JSON.stringify(state)) as MachineState;
        expect(decodeDeviceState(encodeDeviceState(state)).state).toEqual(asJson);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('encoder', () => {
  const refuses = (state: unknown, section: string, message: RegExp): void => {
    const err = errorOf(() => encodeCompactState(state as MachineState));
    expect(err.code).toBe('SNAPSHOT_INVALID_STATE');
    expect(err.section).toBe(section);
    expect(err.message).toMatch(/^refusing to encode a compact hand-off state: /);
    expect(err.message).toMatch(message);
  };
  const s = sample;

  it('refuses byte items outside 0–255 and byte arrays over their limit', () => {
    for (const item of [256, -1, 1.5, NaN, '1']) {
      refuses(
        { ...s, uart: { ...s.uart, rx: [1, item] } },
        'uart',
        /uart\.rx\[1\] must be an integer in \[0, 255\]/,
      );
    }
    refuses(
      { ...s, uart: { ...s.uart, rx: new Array<number>(COMPACT_RX_LIMIT + 1).fill(0) } },
      'uart',
      /uart\.rx must be an array of at most 65536 bytes, got an array of 65537/,
    );
    refuses(
      { ...s, control: { ...s.control, hostArgs: [300] } },
      'control',
      /control\.hostArgs\[0\] must be an integer in \[0, 255\], got 300/,
    );
    refuses(
      { ...s, control: { ...s.control, hostArgs: new Array<number>(257).fill(0) } },
      'control',
      /hostArgs must be an array of at most 256 bytes/,
    );
  });

  it('refuses u32 array items that would wrap, and arrays of another length', () => {
    const x = (v: unknown): unknown[] => [0, 1, 2, v, ...s.cpu.x.slice(4)];
    for (const bad of [2 ** 32, -1, 0.5, NaN, '7']) {
      refuses(
        { ...s, cpu: { ...s.cpu, x: x(bad) } },
        'cpu',
        /cpu\.x\[3\] must be an integer in \[0, 2\^32\)/,
      );
    }
    refuses(
      { ...s, cpu: { ...s.cpu, x: [...s.cpu.x, 0] } },
      'cpu',
      /cpu\.x must be an array of exactly 32 items, got an array of 33/,
    );
    refuses(
      { ...s, cpu: { ...s.cpu, csr: { ...s.cpu.csr, pmpaddr: [] } } },
      'cpu',
      /cpu\.csr\.pmpaddr must be an array of exactly 16/,
    );
    refuses(
      { ...s, control: { ...s.control, entropy: [...s.control.entropy.slice(1), 2 ** 32] } },
      'control',
      /control\.entropy\[7\]/,
    );
  });

  it('refuses non-numbers where numbers go, and unknown enum values', () => {
    refuses({ ...s, cpu: { ...s.cpu, pc: '4' } }, 'cpu', /cpu\.pc must be a number, got "4"/);
    refuses({ ...s, cpu: { ...s.cpu, mcycle: 1n } }, 'cpu', /cpu\.mcycle must be a number/);
    refuses({ ...s, version: undefined }, 'machine', /version must be a number, got undefined/);
    refuses({ ...s, cpu: { ...s.cpu, priv: 'S' } }, 'cpu', /cpu\.priv must be one of 'M', 'U'/);
    refuses({ ...s, cpu: { ...s.cpu, waiting: 1 } }, 'cpu', /cpu\.waiting must be true or false/);
    refuses(
      { ...s, clock: { ...s.clock, mode: 'virtual' } },
      'clock',
      /clock\.mode must be one of 'deterministic', 'realtime', got "virtual"/,
    );
    refuses(
      { ...s, finisher: { ...s.finisher, exit: { kind: 'crash', code: 1 } } },
      'finisher',
      /finisher\.exit\.kind must be one of 'pass', 'fail', 'reset'/,
    );
    refuses({ ...s, finisher: { ...s.finisher, exit: 5 } }, 'finisher', /null or an object/);
    refuses(
      { ...s, cpu: { ...s.cpu, reservation: undefined } },
      'cpu',
      /cpu\.reservation must be null or a number, got undefined/,
    );
    refuses({ ...s, clint: null }, 'clint', /clint must be an object, got null/);
    refuses(null, 'machine', /the state must be an object/);
  });

  it('refuses clock fields the mode does not carry', () => {
    const { instructionsPerTick: _i, subTick: _s, ...bare } = s.clock;
    refuses(
      { ...s, clock: bare },
      'clock',
      /clock\.instructionsPerTick must be a number, got undefined/,
    );
    const realtime = { ...s.clock, mode: 'realtime' };
    refuses(
      { ...s, clock: realtime },
      'clock',
      /clock\.instructionsPerTick must be absent for a real-time clock/,
    );
  });

  it('refuses a generation id that is not ASCII of at most 64 characters', () => {
    for (const id of ['00000000000000é0', 'a'.repeat(65), 42]) {
      refuses(
        { ...s, control: { ...s.control, generationId: id } },
        'control',
        /control\.generationId must be a string of at most 64 ASCII characters/,
      );
    }
  });

  it('does not run the schemas: a state that fits but breaks one encodes, and decode rejects it', () => {
    const bad = { ...s, cpu: { ...s.cpu, x: [5, ...s.cpu.x.slice(1)] } };
    rejected(encodeCompactState(bad), 'SNAPSHOT_INVALID_STATE', 'cpu', /x\[0\] must be 0/);
    // A value a float64 carries exactly, e.g. NaN, is judged by the schema rules too.
    const nan = { ...s, clock: { ...s.clock, mtime: NaN } };
    expect(errorOf(() => decodeCompactState(encodeCompactState(nan))).message).toMatch(
      /mtime must be an integer in \[0, 2\^64\), got NaN/,
    );
  });
});

describe('isCompactState', () => {
  it('tells the compact state from a container and from short input', () => {
    expect(isCompactState(valid)).toBe(true);
    expect(isCompactState(valid.subarray(0, 8))).toBe(true);
    expect(isCompactState(sampleContainer())).toBe(false);
    expect(isCompactState(valid.subarray(0, 7))).toBe(false);
    expect(isCompactState(new Uint8Array(0))).toBe(false);
    expect(isCompactState(new Uint8Array(64))).toBe(false);
    expect(isCompactState([...valid] as unknown as Uint8Array)).toBe(false);
  });
});

describe('a build whose sections differ from the layout', () => {
  type Sections = typeof MACHINE_SECTIONS;
  const variants: [string, (sections: Sections) => Sections][] = [
    [
      'a bumped section version',
      (x) => x.map((s) => (s.name === 'uart' ? { ...s, version: 2 } : s)),
    ],
    ['an extra optional section', (x) => [...x, { ...x[1]!, name: 'cpu.vector', optional: true }]],
    ['a missing section', (x) => x.filter((s) => s.name !== 'clint')],
    ['reordered sections', (x) => [...x].reverse()],
    [
      'an optional section',
      (x) => x.map((s) => (s.name === 'uart' ? { ...s, optional: true } : s)),
    ],
  ];
  for (const [what, change] of variants) {
    it(`neither encodes nor decodes, with ${what}`, async () => {
      vi.resetModules();
      vi.doMock('./sections.js', async (importOriginal) => {
        const original = await importOriginal<typeof sectionsModule>();
        return { ...original, MACHINE_SECTIONS: change(original.MACHINE_SECTIONS) };
      });
      try {
        const other = await import('./compact-state.js');
        expect(other.compactStateCurrent()).toBe(false);
        for (const fn of [
          () => other.encodeCompactState(sample),
          () => other.decodeCompactState(valid),
        ]) {
          const err = errorOf(fn);
          expect(err.code).toBe('SNAPSHOT_UNSUPPORTED_VERSION');
          expect(err.message).toMatch(/are not those compact layout 2 encodes/);
        }
      } finally {
        vi.doUnmock('./sections.js');
        vi.resetModules();
      }
    });
  }

  it('neither encodes nor decodes when a table places a field differently, with the same versions', async () => {
    vi.resetModules();
    vi.doMock('./sections.js', async (importOriginal) => {
      const original = await importOriginal<typeof sectionsModule>();
      const grown = original.MACHINE_SECTIONS.map((s) =>
        s.name === 'uart' ? { ...s, fields: { ...s.fields, rx: byteArray(1 << 17) } } : s,
      );
      return { ...original, MACHINE_SECTIONS: grown };
    });
    try {
      const other = await import('./compact-state.js');
      expect(other.compactStateCurrent()).toBe(false);
      const err = errorOf(() => other.decodeCompactState(valid));
      expect(err.code).toBe('SNAPSHOT_UNSUPPORTED_VERSION');
      expect(err.message).toMatch(/section tables place the fields .* unlike compact layout 2/);
    } finally {
      vi.doUnmock('./sections.js');
      vi.resetModules();
    }
  });
});

// ---- validation while reading, proven equal to the section schemas ------------------------------

/** An edit of compact bytes in place (given a view of them); {@link edited} reseals it. */
type Edit = (v: DataView, b: Uint8Array) => void;

/** What a decoder made of some bytes: a state, or the SnapshotError it threw. */
type Verdict = { readonly state: MachineState } | { readonly error: SnapshotError };

function verdictOf(decode: (bytes: Uint8Array) => MachineState, bytes: Uint8Array): Verdict {
  try {
    return { state: decode(bytes) };
  } catch (err) {
    if (!isSnapshotError(err)) throw err;
    return { error: err };
  }
}

/** The SchemaViolation that caused `err` (path, expected, got), if one did. */
function violationOf(err: SnapshotError): unknown[] {
  const cause = err.cause;
  return cause instanceof SchemaViolation ? [cause.path, cause.expected, cause.got] : [cause];
}

/** The schema rule a rejection names: section, path and expected (the subTick bound elided). */
function ruleOf(err: SnapshotError): string {
  const cause = err.cause;
  if (!(cause instanceof SchemaViolation)) return `${err.section ?? '-'} ${err.code}`;
  const expected = cause.expected.replace(/^(less than instructionsPerTick) \(\d+\)$/, '$1 (n)');
  return `${err.section} ${cause.path}: ${expected}`;
}

/** Tallies of one equivalence run: how many candidates each decoder accepted or rejected, how. */
class Tally {
  accepted = 0;
  rejected = 0;
  readonly rules = new Set<string>();
  readonly codes = new Set<string>();
  /** Per rule (see {@link ruleOf}), the first edit of the current base that broke it. */
  readonly breakers = new Map<string, Edit>();

  /** {@link check} of `base` edited by `edit`, remembering the edit as a breaker of its rule. */
  edit(base: Uint8Array, edit: Edit, what: string): void {
    const rule = this.check(edited(base, edit), what);
    if (rule !== null && !this.breakers.has(rule)) this.breakers.set(rule, edit);
  }

  /**
   * Decodes `bytes` with {@link decodeCompactState} and with the reference (the reader's plain
   * bodies through the section schemas) and requires the same verdict: both accept and the
   * states are deep-equal (-0 and NaN included), or both reject with the same code, section,
   * message and schema violation. Returns the rule both broke ({@link ruleOf}), or null.
   */
  check(bytes: Uint8Array, what: string): string | null {
    const ref = verdictOf(referenceDecode, bytes);
    const got = verdictOf(decodeCompactState, bytes);
    // Compared with isDeepStrictEqual first (it tells -0 from 0 and NaN equals NaN, like
    // toEqual), and with expect only on a difference, for its diff: the sweep is large.
    if ('state' in ref) {
      if (!('state' in got)) {
        expect.fail(
          `${what}: the schemas accept, decodeCompactState rejects: ${got.error.message}`,
        );
      }
      if (!isDeepStrictEqual(got.state, ref.state)) expect(got.state, what).toEqual(ref.state);
      this.accepted++;
      return null;
    }
    if ('state' in got) {
      expect.fail(`${what}: the schemas reject (${ref.error.message}), decodeCompactState accepts`);
    }
    const [a, b] = [got.error, ref.error];
    const ours = [a.code, a.section, a.message, ...violationOf(a)];
    const theirs = [b.code, b.section, b.message, ...violationOf(b)];
    if (!isDeepStrictEqual(ours, theirs)) expect(ours, what).toEqual(theirs);
    this.rejected++;
    this.codes.add(b.code);
    const rule = ruleOf(b);
    this.rules.add(rule);
    return rule;
  }
}

/** Body offsets of the f64 fields of layout 2 (FORMAT.md), with their state paths. */
const F64_FIELDS: readonly (readonly [string, number])[] = [
  ['version', 0],
  ['cpu.version', 8],
  ['cpu.pc', 16],
  ['cpu.csr.mstatus', 154],
  ['cpu.csr.mie', 162],
  ['cpu.csr.mtvec', 170],
  ['cpu.csr.mepc', 178],
  ['cpu.csr.mcause', 186],
  ['cpu.csr.mtval', 194],
  ['cpu.csr.mscratch', 202],
  ['cpu.csr.mcounteren', 210],
  ['cpu.retired', 298],
  ['cpu.minstret', 306],
  ['cpu.mcycle', 314],
  ['cpu.reservation', 323],
  ['clock.version', 331],
  ['clock.mtime', 340],
  ['clock.instructionsPerTick', 348],
  ['clock.subTick', 356],
  ['clint.version', 364],
  ['clint.msip', 372],
  ['clint.mtimecmpLo', 380],
  ['clint.mtimecmpHi', 388],
  ['uart.version', 396],
  ['uart.ier', 404],
  ['uart.lcr', 412],
  ['uart.mcr', 420],
  ['uart.fcr', 428],
  ['uart.scr', 436],
  ['uart.divisor', 444],
  ['finisher.version', 453],
  ['finisher.exit.code', 462],
  ['control.version', 470],
  ['control.readyCount', 510],
  ['plic.version', 518],
  ['plic.outputs', 966],
];

/** Body offsets of the one-byte codes: enums, flags and the reservation's presence. */
const CODE_FIELDS: readonly (readonly [string, number])[] = [
  ['cpu.priv', 152],
  ['cpu.waiting', 153],
  ['cpu.reservation present', 322],
  ['clock.mode', 339],
  ['uart.thrInterrupt', 452],
  ['finisher.exit kind', 461],
];

/** Body offsets and lengths of the fixed u32 arrays. */
const U32_ARRAYS: readonly (readonly [string, number, number])[] = [
  ['cpu.x', 24, 32],
  ['cpu.csr.pmpcfg', 218, 4],
  ['cpu.csr.pmpaddr', 234, 16],
  ['control.entropy', 478, COMPACT_ENTROPY_WORDS],
  ['plic.priority', 526, 96],
  ['plic.pending', 910, 3],
  ['plic.claimed', 922, 3],
  ['plic.enable', 934, 6],
  ['plic.threshold', 958, 2],
];

/**
 * Values around every rule's edges: each range end ±1 (0, 1, 255, 0xffff, 2^32 - 1, 2^53 - 1,
 * 2^64), the masks and their neighbours, fractions, -0, NaN and ±Infinity.
 */
// prettier-ignore
const EDGES: readonly number[] = [
  0, -0, 1, -1, 2, 3, 4, 5, 7, 8, 0.5, 1.5, -0.5, 3.999, 1 + 2 ** -52, NaN, Infinity, -Infinity,
  0x0f, 0x10, 0x1f, 0x20, 0xc9, 0xca, 0xfe, 0xff, 0x100, 0x800, 0x1000, 0x1800, 0xfffe, 0xffff,
  0x10000, 0x7fffffff, 0x80000000, 0xfffffffc, 0xfffffffd, 0xfffffffe, 0xffffffff, 2 ** 32,
  2 ** 32 + 4, 2 ** 53 - 2, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 64 - 2048, 2 ** 64,
  2 ** 64 + 4096, Number.MAX_VALUE, Number.MIN_VALUE, -(2 ** 31), -(2 ** 32), MSTATUS_MASK,
  MSTATUS_MASK + 1, MIE_MASK, MIE_MASK + 1, MSTATUS_MPP, 1 << 11, 1 << 12,
];

/**
 * Candidates for an f64 field holding `original`: the edges, every power of two up to 2^64,
 * every single-bit flip of it (each mask bit set and cleared), it ±1, +0.5 and negated.
 */
function f64Candidates(original: number): number[] {
  const out = [...EDGES, original - 1, original + 1, original + 0.5, -original];
  for (let k = 0; k <= 64; k++) out.push(2 ** k);
  for (let k = 0; k < 32; k++) out.push((original ^ (1 << k)) >>> 0);
  return out;
}

/** Candidates for a u32 array item holding `original`. */
function u32Candidates(original: number): number[] {
  return [0, 1, 2, 3, 4, 0xff, 0x100, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, original ^ 1];
}

/** `bytes` with the variable part rebuilt from raw generation id bytes, host arguments and rx. */
function withVariable(
  bytes: Uint8Array,
  id: readonly number[],
  hostArgs: readonly number[],
  rx: readonly number[],
): Uint8Array {
  const at = AT.generationIdLength;
  const out = new Uint8Array(at + 1 + id.length + 4 + hostArgs.length + 4 + rx.length);
  out.set(bytes.subarray(0, at));
  const v = viewOf(out);
  let p = at;
  out[p++] = id.length;
  out.set(id, p);
  p += id.length;
  v.setUint32(p, hostArgs.length, true);
  out.set(hostArgs, p + 4);
  p += 4 + hostArgs.length;
  v.setUint32(p, rx.length, true);
  out.set(rx, p + 4);
  v.setUint32(AT.bodyLength, out.length - B, true);
  return reseal(out);
}

const ascii = (s: string): number[] => [...s].map((c) => c.charCodeAt(0));

/** (instructionsPerTick, subTick) pairs around the deterministic clock's rules. */
// prettier-ignore
const TICKS: readonly (readonly [number, number])[] = [
  [1, 0], [1, 1], [2, 1], [2, 2], [3, -0], [0, 0], [-0, 0], [U32_MAX, U32_MAX - 1],
  [U32_MAX, U32_MAX], [2 ** 32, 0], [5, 4.5], [4.5, 4], [NaN, 0], [5, NaN], [Infinity, 1],
  [5, -1], [1e9, 1e9 - 1],
];

/** Valid states to mutate: both time modes, with and without a reservation, every exit. */
const BASES: readonly (readonly [string, MachineState])[] = [
  ['the sample', sample],
  [
    'real time, no reservation',
    {
      ...sample,
      cpu: { ...sample.cpu, reservation: null },
      clock: { version: 1, mode: 'realtime', mtime: sample.clock.mtime },
    },
  ],
  ['a failed exit', { ...sample, finisher: { version: 1, exit: { kind: 'fail', code: 0x1234 } } }],
  ['a passed exit', { ...sample, finisher: { version: 1, exit: { kind: 'pass', code: 0 } } }],
  ['a reset', { ...sample, finisher: { version: 1, exit: { kind: 'reset', code: 0 } } }],
];

/**
 * Every rule the sweep must hit (section, path, expected): all the schema rules a value the
 * layout carries can break. A rule missing here means the candidates no longer reach it.
 */
const SWEPT_RULES: readonly string[] = [
  'machine version: 1, the version in the section entry',
  'cpu version: 1, the version in the section entry',
  'cpu x[0]: 0 (x0 is hardwired to zero)',
  `cpu csr.mstatus: an integer in [0, ${U32_MAX}]`,
  `cpu csr.mstatus: a value with no bits outside 0x${MSTATUS_MASK.toString(16)}`,
  'cpu csr.mstatus: a value whose MPP field holds M (3) or U (0)',
  `cpu csr.mtvec: an integer in [0, ${U32_MAX}]`,
  'cpu csr.mtvec: a value with mode 0 (direct) or 1 (vectored)',
  `cpu pc: an integer in [0, ${U32_MAX}]`,
  'cpu pc: a multiple of 4',
  "cpu priv: one of 'M', 'U'",
  'cpu waiting: true or false',
  `cpu csr.mie: an integer in [0, ${U32_MAX}]`,
  `cpu csr.mie: a value with no bits outside 0x${MIE_MASK.toString(16)}`,
  `cpu csr.mepc: an integer in [0, ${U32_MAX}]`,
  'cpu csr.mepc: a multiple of 4',
  `cpu csr.mcause: an integer in [0, ${U32_MAX}]`,
  `cpu csr.mtval: an integer in [0, ${U32_MAX}]`,
  `cpu csr.mscratch: an integer in [0, ${U32_MAX}]`,
  `cpu csr.mcounteren: an integer in [0, ${U32_MAX}]`,
  `cpu retired: an integer in [0, ${Number.MAX_SAFE_INTEGER}]`,
  'cpu minstret: an integer in [0, 2^64)',
  'cpu mcycle: an integer in [0, 2^64)',
  `cpu reservation: an integer in [0, ${U32_MAX}]`,
  'cpu reservation: a multiple of 4',
  "clock mode: one of 'deterministic', 'realtime'",
  'clock version: 1, the version in the section entry',
  'clock mtime: an integer in [0, 2^64)',
  `clock instructionsPerTick: an integer in [1, ${U32_MAX}]`,
  `clock subTick: an integer in [0, ${U32_MAX}]`,
  'clock subTick: less than instructionsPerTick (n)',
  'clint version: 1, the version in the section entry',
  'clint msip: an integer in [0, 1]',
  `clint mtimecmpLo: an integer in [0, ${U32_MAX}]`,
  `clint mtimecmpHi: an integer in [0, ${U32_MAX}]`,
  'uart version: 1, the version in the section entry',
  `uart ier: an integer in [0, ${U32_MAX}]`,
  'uart ier: a value with no bits outside 0xf',
  'uart lcr: an integer in [0, 255]',
  `uart mcr: an integer in [0, ${U32_MAX}]`,
  'uart mcr: a value with no bits outside 0x1f',
  `uart fcr: an integer in [0, ${U32_MAX}]`,
  'uart fcr: a value with no bits outside 0xc9',
  'uart scr: an integer in [0, 255]',
  'uart divisor: an integer in [0, 65535]',
  'uart thrInterrupt: true or false',
  'finisher version: 1, the version in the section entry',
  "finisher exit.kind: one of 'pass', 'fail', 'reset'",
  'finisher exit.code: an integer in [0, 65535]',
  "finisher exit.code: 0 for a 'pass' exit",
  "finisher exit.code: 0 for a 'reset' exit",
  'control version: 1, the version in the section entry',
  'control generationId: 16 lower-case hex digits',
  `control readyCount: an integer in [0, ${Number.MAX_SAFE_INTEGER}]`,
  'plic version: 1, the version in the section entry',
  'plic priority[0]: 0 (source 0 does not exist)',
  'plic priority: priorities in [0, 7]',
  'plic pending[0]: a word with bit 0 clear (source 0 does not exist)',
  'plic claimed[0]: a word with bit 0 clear (source 0 does not exist)',
  'plic threshold: priorities in [0, 7]',
  `plic outputs: an integer in [0, ${U32_MAX}]`,
  'plic outputs: a value with no bits outside 0x3',
];

describe('validation while reading', () => {
  it('sweeps the fields where FORMAT.md puts them', () => {
    const state = BASES[2]![1];
    const bytes = encodeCompactState(state);
    const v = viewOf(bytes);
    const at = (path: string): unknown =>
      path.split('.').reduce<unknown>((o, key) => (o as Record<string, unknown>)[key], state);
    for (const [field, offset] of F64_FIELDS) {
      expect(v.getFloat64(B + offset, true), field).toBe(at(field));
    }
    for (const [field, offset, n] of U32_ARRAYS) {
      const items = Array.from({ length: n }, (_, k) => v.getUint32(B + offset + 4 * k, true));
      expect(items, field).toEqual(at(field));
    }
    expect(CODE_FIELDS.map(([, offset]) => B + offset)).toEqual([
      AT.priv,
      AT.waiting,
      AT.reservationPresent,
      AT.clockMode,
      AT.thrInterrupt,
      AT.exitKind,
    ]);
  });

  it('accepts and rejects exactly what the section schemas do, at every edge of every rule', () => {
    const tally = new Tally();
    for (const [base, state] of BASES) {
      const bytes = encodeCompactState(state);
      const v = viewOf(bytes);
      tally.breakers.clear();
      for (const [field, at] of F64_FIELDS) {
        for (const value of f64Candidates(v.getFloat64(B + at, true))) {
          tally.edit(
            bytes,
            (w) => w.setFloat64(B + at, value, true),
            `${base}: ${field} = ${value}`,
          );
        }
      }
      for (const [field, at] of CODE_FIELDS) {
        for (let code = 0; code < 256; code++) {
          tally.edit(bytes, (_w, b) => (b[B + at] = code), `${base}: ${field} = ${code}`);
        }
      }
      for (const [field, at, n] of U32_ARRAYS) {
        for (let k = 0; k < n; k++) {
          for (const value of u32Candidates(v.getUint32(B + at + 4 * k, true))) {
            tally.edit(
              bytes,
              (w) => w.setUint32(B + at + 4 * k, value, true),
              `${base}: ${field}[${k}] = ${value}`,
            );
          }
        }
      }
      // Every ASCII byte, and two others, at every generation id position (in place: the
      // length stays 16).
      for (let k = 0; k < 16; k++) {
        for (let c = 0; c < 0x82; c++) {
          tally.edit(
            bytes,
            (_w, b) => (b[AT.generationIdLength + 1 + k] = c < 0x81 ? c : 0xff),
            `${base}: generationId[${k}] = ${c < 0x81 ? c : 0xff}`,
          );
        }
      }
      // Deterministic clock variants: mode × (instructionsPerTick, subTick).
      for (const mode of [0, 1, 2]) {
        for (const [ipt, sub] of TICKS) {
          tally.edit(
            bytes,
            (w, b) => {
              b[AT.clockMode] = mode;
              w.setFloat64(AT.instructionsPerTick, ipt, true);
              w.setFloat64(AT.subTick, sub, true);
            },
            `${base}: clock mode ${mode}, ${ipt} instructions per tick, subTick ${sub}`,
          );
        }
      }
      // Finisher: every exit kind code × codes; reservation: presence × values.
      for (let kind = 0; kind < 6; kind++) {
        for (const code of [0, -0, 1, 3, 0xffff, 0x10000, -1, 0.5, NaN, Infinity]) {
          tally.edit(
            bytes,
            (w, b) => {
              b[AT.exitKind] = kind;
              w.setFloat64(AT.exitCode, code, true);
            },
            `${base}: exit kind ${kind}, code ${code}`,
          );
        }
      }
      for (let present = 0; present < 3; present++) {
        for (const value of [0, -0, 4, 6, 0xfffffffc, 2 ** 32, NaN]) {
          tally.edit(
            bytes,
            (w, b) => {
              b[AT.reservationPresent] = present;
              w.setFloat64(AT.reservation, value, true);
            },
            `${base}: reservation present ${present}, ${value}`,
          );
        }
      }
      // Two broken rules at once, for every pair of rules broken above (layout rules included):
      // the first violation reported, across and within sections, is the schemas' first.
      const breakers = [...tally.breakers];
      for (let i = 0; i < breakers.length; i++) {
        for (let j = i + 1; j < breakers.length; j++) {
          const [ruleA, editA] = breakers[i]!;
          const [ruleB, editB] = breakers[j]!;
          tally.check(
            edited(bytes, (w, b) => {
              editA(w, b);
              editB(w, b);
            }),
            `${base}: both ${ruleA} and ${ruleB}`,
          );
        }
      }
    }

    // The variable part, on the sample: generation id lengths around 16 and other strings, byte
    // arrays empty and at their limits (and one past: malformed), with every kind of byte.
    const id = ascii(sample.control.generationId);
    const { hostArgs } = sample.control;
    const { rx } = sample.uart;
    for (const other of [
      '',
      '0',
      '0123456789abcde',
      '0123456789abcdef0',
      '0123456789ABCDEF',
      '0123456789abcdef\n',
      ' 0123456789abcdef',
      'g123456789abcdef',
      'a'.repeat(64),
      'a'.repeat(65),
    ]) {
      tally.check(withVariable(valid, ascii(other), hostArgs, rx), `generationId ${other}`);
    }
    for (const [n, m] of [
      [0, 0],
      [1, 1],
      [COMPACT_HOST_ARGS_LIMIT, COMPACT_RX_LIMIT],
      [COMPACT_HOST_ARGS_LIMIT + 1, 0],
      [0, COMPACT_RX_LIMIT + 1],
    ] as const) {
      for (const item of [0, 0x7f, 0x80, 0xff]) {
        tally.check(
          withVariable(valid, id, new Array<number>(n).fill(item), new Array<number>(m).fill(item)),
          `${n} host argument bytes and ${m} rx bytes of ${item}`,
        );
      }
    }

    expect(tally.accepted).toBeGreaterThan(10_000);
    expect(tally.rejected).toBeGreaterThan(10_000);
    expect(tally.codes).toEqual(new Set(['SNAPSHOT_INVALID_STATE', 'SNAPSHOT_MALFORMED']));
    const swept = [...tally.rules].filter((r) => !r.endsWith('SNAPSHOT_MALFORMED'));
    expect(swept.sort()).toEqual([...SWEPT_RULES].sort());
  }, 60_000);

  it('agrees with the schemas on random valid states with random edits of any field', () => {
    const tally = new Tally();
    const f64Edit = fc.record({
      kind: fc.constant('f64' as const),
      field: fc.nat({ max: F64_FIELDS.length - 1 }),
      value: fc.oneof(
        fc.constantFrom(...EDGES),
        fc.double(),
        fc.nat({ max: 64 }).map((k) => 2 ** k),
      ),
    });
    const codeEdit = fc.record({
      kind: fc.constant('code' as const),
      field: fc.nat({ max: CODE_FIELDS.length - 1 }),
      value: fc.oneof(fc.constantFrom(0, 1, 2, 3, 4), fc.nat({ max: 255 })),
    });
    const itemEdit = fc.record({
      kind: fc.constant('u32' as const),
      field: fc.nat({ max: U32_ARRAYS.length - 1 }),
      index: fc.nat({ max: 31 }),
      value: fc.oneof(fc.constantFrom(0, 1, 0xffffffff), fc.nat({ max: 0xffffffff })),
    });
    const idEdit = fc.record({
      kind: fc.constant('id' as const),
      index: fc.nat({ max: 15 }),
      value: fc.nat({ max: 0x7f }),
    });
    const edit = fc.oneof(f64Edit, codeEdit, itemEdit, idEdit);
    fc.assert(
      fc.property(validMachineState(300), fc.array(edit, { maxLength: 3 }), (state, edits) => {
        const bytes = edited(encodeCompactState(state), (w, b) => {
          for (const e of edits) {
            if (e.kind === 'f64') w.setFloat64(B + F64_FIELDS[e.field]![1], e.value, true);
            else if (e.kind === 'code') b[B + CODE_FIELDS[e.field]![1]] = e.value;
            else if (e.kind === 'u32') {
              const [, at, n] = U32_ARRAYS[e.field]!;
              w.setUint32(B + at + 4 * (e.index % n), e.value, true);
            } else b[AT.generationIdLength + 1 + e.index] = e.value;
          }
        });
        tally.check(bytes, JSON.stringify(edits));
      }),
      { numRuns: 3000 },
    );
    expect(tally.accepted).toBeGreaterThan(300);
    expect(tally.rejected).toBeGreaterThan(1000);
  });

  it('agrees with the schemas on any byte edits of the body', () => {
    const tally = new Tally();
    fc.assert(
      fc.property(BODY_EDITS, (edits) => {
        tally.check(bodyEdited(edits), JSON.stringify(edits));
      }),
      { numRuns: 3000 },
    );
  });
});

// ---- the reference: the hand-written schemas on the raw values ---------------------------------
//
// The schemas' side of the equivalence tests above. It shares the header and layout checks with
// decodeCompactState (openCompactState and checkCompactLayout, which judge no value); then it
// reads every field raw into plain per-section bodies shaped like the container's JSON bodies
// and runs them through `stateFromBodies` with the reference schemas (testing/
// reference-schemas.ts: the schemas as written by hand before the field tables, independent of
// them). It takes the offsets and enum codes from this file's tables (F64_FIELDS, U32_ARRAYS,
// AT, the codes below: FORMAT.md's, which "sweeps the fields where FORMAT.md puts them" checks
// against the encoder), not from the layout, and has no rule of its own, so the tests compare
// decodeCompactState — generated from the tables — with code that never saw them: a table,
// generator or decoder change that alters a verdict, a message or the order of checks fails them.

/** A body under construction: the raw values, nested by their state paths. */
interface Body {
  [key: string]: unknown;
}

/** The sections in load order, each checked by its reference schema instead of its table's. */
const REF_LOAD: readonly SectionToLoad[] = MACHINE_SECTIONS.map((spec) => ({
  spec: { ...spec, check: REFERENCE_SCHEMAS[spec.name]! },
  version: spec.version,
}));
/** The enum codes of layout 2 (FORMAT.md): an option's code is its index (+1 for the exit). */
const PRIVS = ['M', 'U'] as const;
const CLOCK_MODES = ['deterministic', 'realtime'] as const;
const EXIT_KINDS = ['pass', 'fail', 'reset'] as const;
/** {@link F64_FIELDS} and {@link U32_ARRAYS} with their paths split, once. */
const REF_F64 = F64_FIELDS.map(([path, at]) => [path.split('.'), B + at] as const);
const REF_U32 = U32_ARRAYS.map(([path, at, n]) => [path.split('.'), B + at, n] as const);

/**
 * The schemas' verdict on compact bytes: the shared header and layout checks, then plain bodies
 * with the raw values (unknown enum codes and flag bytes as numbers) through `stateFromBodies`.
 * Skips the `compactStateCurrent` check (the tests above run in a current build).
 */
function referenceDecode(bytes: Uint8Array): MachineState {
  const v = openCompactState(bytes);
  checkCompactLayout(bytes, v);

  // Every read in bounds, every presence byte 0 or 1 and every count checked: the layout passed.
  const cpu: Body = { csr: {} };
  const clock: Body = {};
  const uart: Body = {};
  const exit: Body = {};
  const finisher: Body = { exit };
  const control: Body = {};
  const state: Body = { cpu, clock, clint: {}, uart, finisher, control, plic: {} };
  for (const [path, at] of REF_F64) put(state, path, v.getFloat64(at, true));
  for (const [path, at, n] of REF_U32) {
    put(
      state,
      path,
      Array.from({ length: n }, (_, k) => v.getUint32(at + 4 * k, true)),
    );
  }
  cpu.priv = enumValue(bytes[AT.priv]!, PRIVS, 0);
  cpu.waiting = boolValue(bytes[AT.waiting]!);
  if (bytes[AT.reservationPresent] === 0) cpu.reservation = null;
  // Real time carries no tick fields; an unknown mode reaches the schema as its raw code.
  clock.mode = enumValue(bytes[AT.clockMode]!, CLOCK_MODES, 0);
  if (clock.mode !== CLOCK_MODES[0]) {
    delete clock.instructionsPerTick;
    delete clock.subTick;
  }
  uart.thrInterrupt = boolValue(bytes[AT.thrInterrupt]!);
  if (bytes[AT.exitKind] === 0) finisher.exit = null;
  else exit.kind = enumValue(bytes[AT.exitKind]!, EXIT_KINDS, 1);

  // The variable part: the generation id (after its length byte), then the host arguments and
  // rx (each after its u32 count).
  const idAt = AT.generationIdLength + 1;
  const hostArgsCount = idAt + bytes[AT.generationIdLength]!;
  const hostArgs = countedBytes(bytes, v, hostArgsCount);
  control.generationId = String.fromCharCode(...bytes.subarray(idAt, hostArgsCount));
  control.hostArgs = hostArgs;
  uart.rx = countedBytes(bytes, v, hostArgsCount + 4 + hostArgs.length);

  const bodies = REF_LOAD.map(({ spec }) =>
    spec.name === 'machine' ? { version: state.version } : state[spec.name],
  );
  return stateFromBodies(REF_LOAD, (k) => bodies[k]);
}

/** Sets the value at `path` in `body`, whose objects along the path exist. */
function put(body: Body, path: readonly string[], value: unknown): void {
  let o = body;
  for (let k = 0; k < path.length - 1; k++) o = o[path[k]!] as Body;
  o[path[path.length - 1]!] = value;
}

/** The bytes after the u32 count at `p`, as numbers. */
function countedBytes(bytes: Uint8Array, v: DataView, p: number): number[] {
  return [...bytes.subarray(p + 4, p + 4 + v.getUint32(p, true))];
}

/** The option of a code (`base` for the first); an unknown code stays a number for the schema. */
function enumValue<T extends string>(
  code: number,
  options: readonly T[],
  base: number,
): T | number {
  const k = code - base;
  return k >= 0 && k < options.length ? options[k]! : code;
}

/** 0/1 as false/true; any other byte stays a number, which the schema rejects. */
function boolValue(code: number): boolean | number {
  return code === 0 ? false : code === 1 ? true : code;
}
