/**
 * Shared helpers of the snapshot tests: machines booted from the prebuilt conformance guests,
 * the sample state (re-exported from sample-state.ts) and valid containers of it to attack,
 * re-sealing (CRC fix-up) so attacks reach the deeper checks, and a generator of random states
 * within the section schemas.
 *
 * @packageDocumentation
 */

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';

import fc from 'fast-check';

import { MIE_MASK, MSTATUS_MASK, MSTATUS_MPP } from '../cpu/arch.js';
import { createMachine, type Machine } from '../machine/machine.js';
import type { MachineState } from '../machine/state.js';
import {
  CONTAINER_HEADER_BYTES,
  decodeContainer,
  encodeContainer,
  type ContainerSection,
  type EncodeContainerOptions,
} from './container.js';
import { encodeDeviceState } from './device-state.js';
import { isSnapshotError, type SnapshotError } from './errors.js';
import { TEST_IDENTITY, TEST_RAM, sampleState } from './sample-state.js';

export { TEST_IDENTITY, TEST_RAM, bootMixer, mixerProgram, sampleState } from './sample-state.js';

/** Directory of the prebuilt conformance ELFs. */
export const PREBUILT = fileURLToPath(
  new URL('../../../../guests/conformance/prebuilt/', import.meta.url),
);

/** The SnapshotError `fn` throws (fails the test on any other outcome). */
export function errorOf(fn: () => unknown): SnapshotError {
  try {
    fn();
  } catch (err) {
    if (!isSnapshotError(err)) throw new Error(`expected a SnapshotError, got ${String(err)}`);
    return err;
  }
  throw new Error('expected a SnapshotError, but nothing was thrown');
}

/** True when the prebuilt guest `name` exists (they are committed; tests skip without them). */
export function hasGuest(name: string): boolean {
  return existsSync(PREBUILT + name);
}

/** A deterministic-time machine running guest `name`, its UART output appended to `out`. */
export function bootGuest(name: string, out: number[]): Machine {
  return createMachine({
    ramSize: TEST_RAM,
    elf: readFileSync(PREBUILT + name),
    timeMode: 'deterministic',
    uartSink: (b) => out.push(b),
    identity: TEST_IDENTITY,
  });
}

/** A fresh machine over a copy of `from`'s RAM (no ELF loaded), output appended to `out`. */
export function machineWithRamOf(from: Machine, out: number[]): Machine {
  return createMachine({
    ramSize: TEST_RAM,
    ram: { bytes: from.memory.main.buffer.slice(0) },
    timeMode: 'deterministic',
    uartSink: (b) => out.push(b),
  });
}

/** A valid container of {@link sampleState}. */
export function sampleContainer(): Uint8Array {
  return encodeDeviceState(sampleState());
}

/** The sections of a valid container, with copied bodies, for building variants. */
export function sectionsOf(bytes: Uint8Array): ContainerSection[] {
  return decodeContainer(bytes).sections.map((s) => ({
    name: s.name,
    version: s.version,
    optional: s.optional,
    body: s.body.slice(),
  }));
}

/** Re-frames `bytes` with section `name`'s body replaced by `body` (JSON text or a value). */
export function withBody(
  bytes: Uint8Array,
  name: string,
  body: string | Uint8Array | ((model: Record<string, unknown>) => unknown),
  options: EncodeContainerOptions = {},
): Uint8Array {
  const sections = sectionsOf(bytes).map((s) => {
    if (s.name !== name) return s;
    let next: Uint8Array;
    if (body instanceof Uint8Array) next = body;
    else if (typeof body === 'string') next = new TextEncoder().encode(body);
    else {
      const model = JSON.parse(new TextDecoder().decode(s.body)) as Record<string, unknown>;
      next = new TextEncoder().encode(JSON.stringify(body(model)));
    }
    return { ...s, body: next };
  });
  return encodeContainer(sections, options);
}

/** Recomputes the CRC of a (mutated) container in place, so checks after the CRC see it. */
export function reseal(bytes: Uint8Array): Uint8Array {
  if (bytes.length < CONTAINER_HEADER_BYTES) return bytes;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const total = Math.min(bytes.length, view.getUint32(12, true) + view.getUint32(24, true));
  const crc = crc32(bytes.subarray(32, Math.max(32, total)), crc32(bytes.subarray(0, 28))) >>> 0;
  view.setUint32(28, crc, true);
  return bytes;
}

const u32 = (): fc.Arbitrary<number> => fc.integer({ min: 0, max: 0xffffffff });
const u8 = (): fc.Arbitrary<number> => fc.integer({ min: 0, max: 255 });
const aligned = (): fc.Arbitrary<number> => u32().map((v) => v - (v % 4));
const counter = (): fc.Arbitrary<number> => fc.bigInt(0n, 1n << 63n).map(Number);
const subset = (mask: number): fc.Arbitrary<number> => u32().map((v) => (v & mask) >>> 0);

/**
 * Machine states that satisfy every section schema (not necessarily reachable by a guest): any
 * value in each field's range, either time mode, with and without a reservation, every exit.
 *
 * @param maxRxBytes - most unread UART bytes a state holds (the schema allows 64 KiB; small
 *   keeps runs fast)
 */
export function validMachineState(maxRxBytes = 64): fc.Arbitrary<MachineState> {
  const cpu = fc.record({
    version: fc.constant(1),
    pc: aligned(),
    x: fc.array(u32(), { minLength: 31, maxLength: 31 }).map((x) => [0, ...x]),
    priv: fc.constantFrom('M' as const, 'U' as const),
    waiting: fc.boolean(),
    csr: fc.record({
      mstatus: fc
        .tuple(subset(MSTATUS_MASK & ~MSTATUS_MPP), fc.constantFrom(0, MSTATUS_MPP))
        .map(([s, mpp]) => (s | mpp) >>> 0),
      mie: subset(MIE_MASK),
      mtvec: u32().map((v) => (v & ~2) >>> 0),
      mepc: aligned(),
      mcause: u32(),
      mtval: u32(),
      mscratch: u32(),
      mcounteren: u32(),
      pmpcfg: fc.array(u32(), { minLength: 4, maxLength: 4 }),
      pmpaddr: fc.array(u32(), { minLength: 16, maxLength: 16 }),
    }),
    retired: fc.maxSafeNat(),
    minstret: counter(),
    mcycle: counter(),
    reservation: fc.option(aligned(), { nil: null }),
  });
  const clock = fc.oneof(
    fc.record({
      version: fc.constant(1),
      mode: fc.constant('realtime' as const),
      mtime: counter(),
    }),
    fc
      .record({ mtime: counter(), instructionsPerTick: fc.integer({ min: 1, max: 0xffffffff }) })
      .chain(({ mtime, instructionsPerTick }) =>
        fc.integer({ min: 0, max: instructionsPerTick - 1 }).map((subTick) => ({
          version: 1,
          mode: 'deterministic' as const,
          mtime,
          instructionsPerTick,
          subTick,
        })),
      ),
  );
  const exit = fc.oneof(
    fc.constant(null),
    fc.constant({ kind: 'pass' as const, code: 0 as const }),
    fc.constant({ kind: 'reset' as const, code: 0 as const }),
    fc.integer({ min: 0, max: 0xffff }).map((code) => ({ kind: 'fail' as const, code })),
  );
  return fc.record({
    version: fc.constant(1),
    cpu,
    clock,
    clint: fc.record({
      version: fc.constant(1),
      msip: fc.constantFrom(0, 1),
      mtimecmpLo: u32(),
      mtimecmpHi: u32(),
    }),
    uart: fc.record({
      version: fc.constant(1),
      ier: subset(0x0f),
      lcr: u8(),
      mcr: subset(0x1f),
      fcr: subset(0xc9),
      scr: u8(),
      divisor: fc.integer({ min: 0, max: 0xffff }),
      thrInterrupt: fc.boolean(),
      rx: fc.array(u8(), { maxLength: maxRxBytes }),
    }),
    finisher: fc.record({ version: fc.constant(1), exit }),
    control: fc.record({
      version: fc.constant(1),
      generationId: fc.bigInt(0n, (1n << 64n) - 1n).map((g) => g.toString(16).padStart(16, '0')),
      entropy: fc.array(u32(), { minLength: 8, maxLength: 8 }),
      readyCount: fc.maxSafeNat(),
      hostArgs: fc.array(u8(), { maxLength: 256 }),
    }),
    plic: fc.record({
      version: fc.constant(1),
      priority: fc
        .array(fc.integer({ min: 0, max: 7 }), { minLength: 95, maxLength: 95 })
        .map((p) => [0, ...p]),
      pending: sourceBits(),
      claimed: sourceBits(),
      enable: fc.array(u32(), { minLength: 6, maxLength: 6 }),
      threshold: fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 2, maxLength: 2 }),
      outputs: fc.integer({ min: 0, max: 3 }),
    }),
  });
}

/** A PLIC bit set of sources 0–95 without source 0. */
function sourceBits(): fc.Arbitrary<number[]> {
  return fc
    .array(u32(), { minLength: 3, maxLength: 3 })
    .map(([w0, ...rest]) => [(w0! & ~1) >>> 0, ...rest]);
}
