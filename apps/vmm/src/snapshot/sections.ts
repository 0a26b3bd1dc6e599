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
  component('cpu', CPU_SECTION_VERSION, 16 * 1024, checkCpu),
  component('clock', CLOCK_SECTION_VERSION, 1024, checkClock),
  component('clint', CLINT_SECTION_VERSION, 1024, checkClint),
  // 64 Ki received bytes of up to 4 characters each, plus the registers.
  component('uart', UART_SECTION_VERSION, 1024 * 1024, checkUart),
  component('finisher', FINISHER_SECTION_VERSION, 1024, checkFinisher),
  component('control', CONTROL_SECTION_VERSION, 16 * 1024, checkControl),
]);

/** The known section called `name`, if any. */
export function findSection(name: string): SectionSpec<unknown> | undefined {
  return MACHINE_SECTIONS.find((s) => s.name === name);
}

/** Components of a {@link MachineState} that are one section each, named after their field. */
type ComponentKey = Exclude<keyof MachineState, 'version'>;

/** A required section holding one component of the machine state, named after its field. */
function component<K extends ComponentKey>(
  key: K,
  version: number,
  maxBodyBytes: number,
  check: (body: unknown, version: number) => MachineState[K],
): SectionSpec<unknown> {
  return spec<MachineState[K]>({
    name: key,
    version,
    maxBodyBytes,
    save: (s) => s[key],
    check,
    load: (d, m) => {
      d[key] = m;
    },
  });
}

/** Fills the defaults of a required, single-version section spec. */
function spec<T>(
  s: Omit<SectionSpec<T>, 'optional' | 'minVersion'> &
    Partial<Pick<SectionSpec<T>, 'optional' | 'minVersion'>>,
): SectionSpec<unknown> {
  return Object.freeze({ optional: false, minVersion: s.version, ...s }) as SectionSpec<unknown>;
}
