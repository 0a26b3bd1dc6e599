/**
 * The sections of a machine's device state: which named, versioned sections a container holds,
 * how each is taken from a {@link MachineState}, checked, and put back. This table is the one
 * place that ties the container to the machine model (FORMAT.md lists it as "Sections").
 *
 * Adding data to a device later (QEMU's rule): do not grow an existing section's model; add an
 * optional section (`optional: true`) named `<parent>.<what>`, with `needed` returning true only
 * when the data differs from what an older reader assumes. Old readers skip it; new readers load
 * it. Changing an existing model incompatibly bumps that section's `version`.
 *
 * @packageDocumentation
 */

import type { MachineState } from '../machine/state.js';
import { CLINT_SECTION_VERSION, checkClint } from './schemas/clint.js';
import { CLOCK_SECTION_VERSION, checkClock } from './schemas/clock.js';
import { CONTROL_SECTION_VERSION, checkControl } from './schemas/control.js';
import { CPU_SECTION_VERSION, checkCpu } from './schemas/cpu.js';
import { FINISHER_SECTION_VERSION, checkFinisher } from './schemas/finisher.js';
import { MACHINE_SECTION_VERSION, checkMachine } from './schemas/machine.js';
import { UART_SECTION_VERSION, checkUart } from './schemas/uart.js';

/** A {@link MachineState} under construction while sections are loaded. */
export type MachineStateDraft = { -readonly [K in keyof MachineState]?: MachineState[K] };

/** How one section is written and read. `T` is the section's plain-data model. */
export interface SectionSpec<T> {
  /** Unique section name (charset in FORMAT.md). */
  readonly name: string;
  /** Version written, and the newest version read. */
  readonly version: number;
  /** Oldest version read (`check` upgrades older bodies to the current model). */
  readonly minVersion: number;
  /** Optional sections may be absent, and old readers skip them; required ones must be present. */
  readonly optional: boolean;
  /** Largest body accepted or written, in bytes; checked before the body is parsed. */
  readonly maxBodyBytes: number;
  /** Optional sections only: true when this state needs the section written (QEMU's `needed()`). */
  needed?(state: MachineState): boolean;
  /** The section's model, taken from a machine state. */
  save(state: MachineState): T;
  /**
   * The schema: validates an untrusted body (parsed JSON) of section version `version` and
   * returns a fresh, well-typed model. Throws `SchemaViolation`.
   */
  check(body: unknown, version: number): T;
  /** Puts a checked model into the state being assembled. */
  load(draft: MachineStateDraft, model: T): void;
}

/**
 * Every section this build knows, in the order they are written and loaded (parents before
 * their optional subsections).
 */
export const MACHINE_SECTIONS: readonly SectionSpec<unknown>[] = Object.freeze([
  spec({
    name: 'machine',
    version: MACHINE_SECTION_VERSION,
    maxBodyBytes: 1024,
    save: (s) => ({ version: s.version }),
    check: checkMachine,
    load: (d, m) => {
      d.version = m.version;
    },
  }),
  spec({
    name: 'cpu',
    version: CPU_SECTION_VERSION,
    maxBodyBytes: 16 * 1024,
    save: (s) => s.cpu,
    check: checkCpu,
    load: (d, m) => {
      d.cpu = m;
    },
  }),
  spec({
    name: 'clock',
    version: CLOCK_SECTION_VERSION,
    maxBodyBytes: 1024,
    save: (s) => s.clock,
    check: checkClock,
    load: (d, m) => {
      d.clock = m;
    },
  }),
  spec({
    name: 'clint',
    version: CLINT_SECTION_VERSION,
    maxBodyBytes: 1024,
    save: (s) => s.clint,
    check: checkClint,
    load: (d, m) => {
      d.clint = m;
    },
  }),
  spec({
    name: 'uart',
    version: UART_SECTION_VERSION,
    // 64 Ki received bytes of up to 4 characters each, plus the registers.
    maxBodyBytes: 1024 * 1024,
    save: (s) => s.uart,
    check: checkUart,
    load: (d, m) => {
      d.uart = m;
    },
  }),
  spec({
    name: 'finisher',
    version: FINISHER_SECTION_VERSION,
    maxBodyBytes: 1024,
    save: (s) => s.finisher,
    check: checkFinisher,
    load: (d, m) => {
      d.finisher = m;
    },
  }),
  spec({
    name: 'control',
    version: CONTROL_SECTION_VERSION,
    maxBodyBytes: 16 * 1024,
    save: (s) => s.control,
    check: checkControl,
    load: (d, m) => {
      d.control = m;
    },
  }),
]);

/** The known section called `name`, if any. */
export function findSection(name: string): SectionSpec<unknown> | undefined {
  return MACHINE_SECTIONS.find((s) => s.name === name);
}

/** Fills the defaults of a required, single-version section spec. */
function spec<T>(
  s: Omit<SectionSpec<T>, 'optional' | 'minVersion'> &
    Partial<Pick<SectionSpec<T>, 'optional' | 'minVersion'>>,
): SectionSpec<unknown> {
  return Object.freeze({ optional: false, minVersion: s.version, ...s }) as SectionSpec<unknown>;
}
