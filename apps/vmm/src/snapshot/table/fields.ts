/**
 * The vocabulary of section field tables, after QEMU's `VMStateDescription`: a device-state
 * section is declared once, as a table of its fields (name, kind, limits, rules), and every codec
 * is generated from that table — the container's schema check (schema-codegen.ts), the compact
 * hand-off layout (compact-layout.ts) and its encoder and decoder (compact-*-codegen.ts).
 * FORMAT.md ("Field tables") describes the kinds and how each codec carries them.
 *
 * Declarations are frozen plain data plus a few rule functions; nothing here runs per state.
 *
 * @packageDocumentation
 */

import { U32_MAX } from '../schemas/check.js';

/**
 * A rule a value must follow beyond its kind (x0 = 0, subTick < instructionsPerTick, …), checked
 * right after the kind, so only on a value of the kind.
 *
 * @typeParam V - the checked value: a number, or a number array for the array kinds
 */
export interface FieldRule<V> {
  /** Appended to the field's path in the violation, e.g. `[0]`; nothing by default. */
  readonly at?: string;
  /**
   * A field of the same record whose checked value is the second argument of {@link holds} and
   * of `expected`. It must be checked before this field.
   */
  readonly sibling?: string;
  /** True when `value` follows the rule. */
  holds(value: V, sibling: number): boolean;
  /** What the value must be, as the violation words it. */
  readonly expected: string | ((sibling: number) => string);
  /** The value the violation reports; the field's value by default. */
  got?(value: V): unknown;
}

/** What every field declares besides its kind. */
interface FieldBase {
  /**
   * Checked before every field of its section that is not (in field order among themselves);
   * decides which violation is reported when several are broken. Not allowed below a nullable.
   */
  readonly checkFirst: boolean;
  /** Rules beyond the kind, in the order they are checked. */
  readonly rules: readonly FieldRule<never>[];
}

/** The section version: equal to the version in the section entry. Carried as a number. */
export interface VersionField extends FieldBase {
  readonly kind: 'version';
}
/** An integer in `[min, max]`. Carried as a number. */
export interface IntegerField extends FieldBase {
  readonly kind: 'integer';
  readonly min: number;
  readonly max: number;
}
/** A 64-bit counter: an integer in `[0, 2^64)`. Carried as a number. */
export interface U64Field extends FieldBase {
  readonly kind: 'u64';
}
/** A u32 with no bits outside `mask`. Carried as a number. */
export interface BitsField extends FieldBase {
  readonly kind: 'bits';
  readonly mask: number;
}
/** `true` or `false`. */
export interface BooleanField extends FieldBase {
  readonly kind: 'boolean';
}
/** One of `values` (strings); the compact layout carries its index. */
export interface EnumField extends FieldBase {
  readonly kind: 'enum';
  readonly values: readonly string[];
}
/** Exactly `digits` lower-case hex digits; the compact layout carries up to `carried` ASCII bytes. */
export interface HexField extends FieldBase {
  readonly kind: 'hex';
  readonly digits: number;
  readonly carried: number;
}
/** Exactly `length` u32 items. */
export interface U32ArrayField extends FieldBase {
  readonly kind: 'u32-array';
  readonly length: number;
}
/** At most `max` u8 items. */
export interface ByteArrayField extends FieldBase {
  readonly kind: 'byte-array';
  readonly max: number;
}
/** A nested record with exactly these fields. */
export interface RecordField extends FieldBase {
  readonly kind: 'record';
  readonly fields: FieldTable;
}
/** `null`, or a value of `of`. */
export interface NullableField extends FieldBase {
  readonly kind: 'nullable';
  readonly of: NumberField | RecordField;
  /** How the compact layout's malformed error names the slots of a null value. */
  readonly unusedSlots: string | undefined;
}
/**
 * A field whose kind depends on the value of an enum field of the same record, its `tag` (which
 * must be checked first): `cases` maps tag values to kinds; any other tag value gets `otherwise`.
 */
export interface VariantField extends FieldBase {
  readonly kind: 'variant';
  readonly tag: string;
  readonly cases: Readonly<Record<string, NumberField>>;
  readonly otherwise: AbsentOtherwise | ZeroOtherwise;
}

/** Of a variant: the field is absent from the record (its key is optional). */
export interface AbsentOtherwise {
  readonly kind: 'absent';
  /** What a value present anyway must be, e.g. `absent for a real-time clock`. */
  readonly expected: string;
  /** How the compact layout's malformed error names the unused slots. */
  readonly unusedSlots: string;
}
/** Of a variant: the field holds 0 (−0 passes; the checked value is 0). */
export interface ZeroOtherwise {
  readonly kind: 'zero';
  /** What another value must be, given the tag's value. */
  readonly expected: (tag: string) => string;
}

/** The kinds carried as one number. */
export type NumberField = VersionField | IntegerField | U64Field | BitsField;

/** Any field. */
export type Field =
  | NumberField
  | BooleanField
  | EnumField
  | HexField
  | U32ArrayField
  | ByteArrayField
  | RecordField
  | NullableField
  | VariantField;

/** The fields of a record, by name, in field order (the order of the model's JSON keys). */
export type FieldTable = Readonly<Record<string, Field>>;

/**
 * A table with exactly the keys of model `T`. (`keyof` of a union is its common keys, so tagged
 * unions such as `ExitStatus` work.)
 */
export type FieldsOf<T> = { readonly [K in keyof T]-?: Field };

/** One device-state section, declared once. */
export interface SectionTable {
  /** Unique section name (charset in FORMAT.md). */
  readonly name: string;
  /** Version written, and the only one read. Bump it whenever the fields change (FORMAT.md). */
  readonly version: number;
  /** Largest JSON body the container accepts or writes for it, in bytes. */
  readonly maxBodyBytes: number;
  readonly fields: FieldTable;
}

/** Options of a scalar field. */
export interface ScalarOptions {
  readonly checkFirst?: boolean;
  readonly rules?: readonly FieldRule<number>[];
}
/** Options of an array field. */
export interface ArrayOptions {
  readonly checkFirst?: boolean;
  readonly rules?: readonly FieldRule<readonly number[]>[];
}

/**
 * Declares a section of model `T`: its table must name every key of `T` and no other.
 *
 * @throws Error when a field name is not a JavaScript identifier (the generated code uses them)
 */
export function defineSection<T>(table: {
  readonly name: string;
  readonly version: number;
  readonly maxBodyBytes: number;
  readonly fields: FieldsOf<T>;
}): SectionTable {
  assertNames(table.fields, table.name);
  return Object.freeze({ ...table, fields: table.fields as FieldTable });
}

/** The section version. */
export function sectionVersion(): VersionField {
  return field({ kind: 'version' }, {});
}
/** An integer in `[min, max]`. */
export function integer(min: number, max: number, options: ScalarOptions = {}): IntegerField {
  return field({ kind: 'integer', min, max }, options);
}
/** An unsigned 32-bit integer. */
export function u32(options: ScalarOptions = {}): IntegerField {
  return integer(0, U32_MAX, options);
}
/** An unsigned 8-bit integer. */
export function u8(options: ScalarOptions = {}): IntegerField {
  return integer(0, 0xff, options);
}
/** An unsigned 16-bit integer. */
export function u16(options: ScalarOptions = {}): IntegerField {
  return integer(0, 0xffff, options);
}
/** A non-negative integer a double holds exactly (< 2^53). */
export function count(options: ScalarOptions = {}): IntegerField {
  return integer(0, Number.MAX_SAFE_INTEGER, options);
}
/** A u32 that is a multiple of 4 (an address or pc). */
export function aligned4(options: ScalarOptions = {}): IntegerField {
  return u32({ ...options, rules: [MULTIPLE_OF_4, ...(options.rules ?? [])] });
}
/** A 64-bit counter carried as a number. */
export function u64(options: ScalarOptions = {}): U64Field {
  return field({ kind: 'u64' }, options);
}
/** A u32 with no bits outside `mask`. */
export function bits(mask: number, options: ScalarOptions = {}): BitsField {
  return field({ kind: 'bits', mask }, options);
}
/** A boolean. */
export function boolean(options: { readonly checkFirst?: boolean } = {}): BooleanField {
  return field({ kind: 'boolean' }, options);
}
/** One of `values`. */
export function oneOf(
  values: readonly string[],
  options: { readonly checkFirst?: boolean } = {},
): EnumField {
  return field({ kind: 'enum', values: Object.freeze([...values]) }, options);
}
/** Exactly `digits` lower-case hex digits, of which the compact layout carries up to `carried`. */
export function hexDigits(digits: number, carried: number): HexField {
  return field({ kind: 'hex', digits, carried }, {});
}
/** Exactly `length` u32 items. */
export function u32Array(length: number, options: ArrayOptions = {}): U32ArrayField {
  return field({ kind: 'u32-array', length }, options);
}
/** At most `max` bytes (u8 items). */
export function byteArray(max: number): ByteArrayField {
  return field({ kind: 'byte-array', max }, {});
}
/** A nested record of model `T`. */
export function record<T>(fields: FieldsOf<T>): RecordField {
  return field({ kind: 'record', fields: Object.freeze({ ...fields }) as FieldTable }, {});
}
/** `null` or a value of `of`; `unusedSlots` names the compact slots of a null record. */
export function nullable(
  of: NumberField | RecordField,
  options: { readonly unusedSlots?: string } = {},
): NullableField {
  return field({ kind: 'nullable', of, unusedSlots: options.unusedSlots }, {});
}
/** A field whose kind depends on the enum field `tag` (see {@link VariantField}). */
export function variant(
  tag: string,
  cases: Readonly<Record<string, NumberField>>,
  otherwise: AbsentOtherwise | ZeroOtherwise,
): VariantField {
  return field({ kind: 'variant', tag, cases: Object.freeze({ ...cases }), otherwise }, {});
}
/** Of a {@link variant}: absent otherwise. */
export function absent(expected: string, unusedSlots: string): AbsentOtherwise {
  return Object.freeze({ kind: 'absent', expected, unusedSlots });
}
/** Of a {@link variant}: 0 otherwise. */
export function zero(expected: (tag: string) => string): ZeroOtherwise {
  return Object.freeze({ kind: 'zero', expected });
}
/** A typed {@link FieldRule}. */
export function rule<V>(r: FieldRule<V>): FieldRule<V> {
  return Object.freeze(r);
}

const MULTIPLE_OF_4 = rule<number>({ holds: (v) => v % 4 === 0, expected: 'a multiple of 4' });

function field<F extends Field>(
  kind: Omit<F, keyof FieldBase>,
  options: { readonly checkFirst?: boolean; readonly rules?: readonly FieldRule<never>[] },
): F {
  return Object.freeze({
    ...kind,
    checkFirst: options.checkFirst ?? false,
    rules: Object.freeze([...(options.rules ?? [])]),
  }) as F;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

function assertNames(fields: object, where: string): void {
  for (const [name, f] of Object.entries(fields) as [string, Field][]) {
    if (!IDENTIFIER.test(name)) {
      throw new Error(
        `section table ${where}: field name ${JSON.stringify(name)} is no identifier`,
      );
    }
    if (f.kind === 'record') assertNames(f.fields, `${where}.${name}`);
    if (f.kind === 'nullable' && f.of.kind === 'record')
      assertNames(f.of.fields, `${where}.${name}`);
  }
}

/**
 * The limit a top-level field of `table` declares: a byte array's most items, a u32 array's
 * length, or the characters a hex field's compact slot carries. For exported constants that
 * must follow the table.
 *
 * @throws Error when `name` is no such field
 */
export function fieldLimit(table: SectionTable, name: string): number {
  const f = table.fields[name];
  if (f?.kind === 'byte-array') return f.max;
  if (f?.kind === 'u32-array') return f.length;
  if (f?.kind === 'hex') return f.carried;
  throw new Error(`section table ${table.name}: ${name} is no array or hex field`);
}
