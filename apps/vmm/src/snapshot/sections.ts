/**
 * The sections of a machine's device state: which named, versioned sections a container holds,
 * how each is taken from a {@link MachineState}, checked, and put back. Each comes from its one
 * declaration, a field table in `schemas/` (FORMAT.md, "Field tables"); this list is the one
 * place that ties them to the machine model and fixes their order.
 *
 * Adding data to a device: add the field to its section's table and bump that table's
 * `version` (FORMAT.md, "Versioning"). Data an older reader may skip goes in an optional
 * section (`optional: true`) named `<parent>.<what>`, with `needed` returning true only when the
 * data differs from what an older reader assumes. A new device is a new required section with
 * `sinceMinor` set to the container minor that adds it and `absentModel` giving the state older
 * containers imply (its reset state).
 *
 * @packageDocumentation
 */

import { plicResetState } from '../devices/plic.js';
import type { MachineState } from '../machine/state.js';
import { CLINT_SECTION } from './schemas/clint.js';
import { CLOCK_SECTION } from './schemas/clock.js';
import { CONTROL_SECTION } from './schemas/control.js';
import { CPU_SECTION } from './schemas/cpu.js';
import { FINISHER_SECTION } from './schemas/finisher.js';
import { MACHINE_SECTION, type MachineSectionState } from './schemas/machine.js';
import { PLIC_SECTION } from './schemas/plic.js';
import { UART_SECTION } from './schemas/uart.js';
import type { FieldTable, SectionTable } from './table/fields.js';
import { compileSectionCheck } from './table/schema-codegen.js';

/** A {@link MachineState} under construction while sections are loaded. */
export type MachineStateDraft = { -readonly [K in keyof MachineState]?: MachineState[K] };

/** Components of a {@link MachineState} that are one section each, named after their field. */
export type ComponentKey = Exclude<keyof MachineState, 'version'>;

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
  /**
   * The container minor version that added the section (0: format 1.0 had it). A container of
   * an older minor lacks it and loads {@link SectionSpec.absentModel} in its place; from this
   * minor on, a required section must be present.
   */
  readonly sinceMinor: number;
  /** Sections added after 1.0: the model a container older than `sinceMinor` implies. */
  absentModel?(): T;
  /** Largest body accepted or written, in bytes; checked before the body is parsed. */
  readonly maxBodyBytes: number;
  /** The section's fields, from its table; the compact layout is generated from them. */
  readonly fields: FieldTable;
  /** The {@link MachineState} key of the model, or null when its fields are the state's own. */
  readonly component: ComponentKey | null;
  /** Optional sections only: true when this state needs the section written (QEMU's `needed()`). */
  needed?(state: MachineState): boolean;
  /** The section's model, taken from a machine state. */
  save(state: MachineState): T;
  /**
   * The schema, generated from the table: validates an untrusted body (parsed JSON) of section
   * version `version` and returns a fresh, well-typed model. Throws `SchemaViolation`.
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
  spec<MachineSectionState>(MACHINE_SECTION, {
    component: null,
    save: (s) => ({ version: s.version }),
    load: (d, m) => {
      d.version = m.version;
    },
  }),
  component('cpu', CPU_SECTION),
  component('clock', CLOCK_SECTION),
  component('clint', CLINT_SECTION),
  component('uart', UART_SECTION),
  component('finisher', FINISHER_SECTION),
  component('control', CONTROL_SECTION),
  component('plic', PLIC_SECTION, { sinceMinor: 1, absentModel: plicResetState }),
]);

/** The known section called `name`, if any. */
export function findSection(name: string): SectionSpec<unknown> | undefined {
  return MACHINE_SECTIONS.find((s) => s.name === name);
}

/**
 * A required section holding one component of the machine state, named after its field;
 * `added` for a component added after format 1.0.
 */
function component<K extends ComponentKey>(
  key: K,
  table: SectionTable,
  added?: Pick<SectionSpec<MachineState[K]>, 'sinceMinor' | 'absentModel'>,
): SectionSpec<unknown> {
  if (table.name !== key) throw new Error(`section table ${table.name} declared for ${key}`);
  return spec<MachineState[K]>(table, {
    component: key,
    save: (s) => s[key],
    load: (d, m) => {
      d[key] = m;
    },
    ...added,
  });
}

/** A required, single-version section spec of `table`, with its generated schema. */
function spec<T>(
  table: SectionTable,
  wiring: Pick<SectionSpec<T>, 'component' | 'save' | 'load'> &
    Partial<Pick<SectionSpec<T>, 'sinceMinor' | 'absentModel'>>,
): SectionSpec<unknown> {
  return Object.freeze({
    name: table.name,
    version: table.version,
    minVersion: table.version,
    optional: false,
    sinceMinor: 0,
    maxBodyBytes: table.maxBodyBytes,
    fields: table.fields,
    check: compileSectionCheck(table) as SectionSpec<T>['check'],
    ...wiring,
  }) as SectionSpec<unknown>;
}
