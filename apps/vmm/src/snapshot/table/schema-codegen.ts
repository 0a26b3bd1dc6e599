/**
 * Generates a section's schema check from its table: the function the container runs on every
 * parsed JSON body (and on every model before it writes one). It takes untrusted plain data and
 * the section version, checks every field's kind and rules in the {@link checkPlan} order, and
 * returns a fresh model with the keys in field order; the first violation throws
 * `SchemaViolation(path, expected, got)`.
 *
 * @packageDocumentation
 */

import { SchemaViolation, U32_MAX, checkRecordShape } from '../schemas/check.js';
import { checkPlan, isOptionalKey, join, presenceOf, type CheckStep } from './check-plan.js';
import {
  integer,
  type Field,
  type FieldTable,
  type NumberField,
  type SectionTable,
} from './fields.js';
import { Constants, Locals, compile, literal } from './source.js';
import {
  hexText,
  numberChecks,
  oneOfText,
  rangeText,
  ruleLines,
  versionExpected,
  type Fail,
} from './value-checks.js';

/** A section's schema: validates an untrusted body of section version `version`. */
export type SectionCheck = (body: unknown, version: number) => unknown;

/** Compiles the schema check of `table` (once, at module load). */
export function compileSectionCheck(table: SectionTable): SectionCheck {
  const k = new Constants();
  const writer = new SchemaWriter(k);
  const result = writer.record(table.fields, '', 'body');
  const body = [
    `return function check_${table.name.replace(/[^a-z0-9]/g, '_')}(body, version) {`,
    ...writer.lines,
    `return ${result};`,
    '}',
  ].join('\n');
  return compile(`schema-${table.name}`, k, body);
}

/** Writes the statements of one section's check; values end up in locals. */
class SchemaWriter {
  readonly lines: string[] = [];
  private readonly locals = new Locals();
  /** Checked value of each path (no entry: absent). */
  private readonly values = new Map<string, string>();
  /** Local holding each record (the untrusted object). */
  private readonly records = new Map<string, string>();
  private readonly fail: Fail;

  constructor(private readonly k: Constants) {
    const V = k.ref(SchemaViolation);
    this.fail = (path, expected, got) => `throw new ${V}(${path}, ${expected}, ${got});`;
  }

  /** Checks the record in local `input` at `path` and returns the source of its checked copy. */
  record(fields: FieldTable, path: string, input: string): string {
    this.shape(fields, path, input);
    for (const step of checkPlan(fields, path)) this.step(step);
    return this.literal(fields, path);
  }

  private step(s: CheckStep): void {
    const input = this.locals.next(s.kind === 'shape' ? 'r' : 'i');
    this.lines.push(`const ${input} = ${this.records.get(s.parent)!}.${s.name};`);
    if (s.field.kind === 'record') this.shape(s.field.fields, s.path, input);
    else this.value(s.field, input, s.path, s.parent);
  }

  private shape(fields: FieldTable, path: string, input: string): void {
    const entries = Object.entries(fields);
    const required = entries.filter(([, f]) => !isOptionalKey(f)).map(([n]) => n);
    const optional = entries.filter(([, f]) => isOptionalKey(f)).map(([n]) => n);
    const shape = this.k.ref(checkRecordShape);
    const req = this.k.ref(Object.freeze(required));
    const opt = this.k.ref(Object.freeze(optional));
    this.lines.push(`${shape}(${input}, ${literal(path)}, ${req}, ${opt});`);
    this.records.set(path, input);
  }

  /** Checks the field value in local `v`; records the local of its checked value. */
  private value(f: Field, v: string, path: string, parent: string): void {
    const p = literal(path);
    const sibling = (name: string): string => this.values.get(join(parent, name))!;
    const rules = (value: string): void => {
      this.lines.push(...ruleLines(f.rules, value, path, sibling, this.k, this.fail));
    };
    switch (f.kind) {
      case 'version':
        this.lines.push(`if (${v} !== version) ${this.fail(p, versionExpected('version'), v)}`);
        this.values.set(path, 'version');
        return;
      case 'integer':
      case 'u64':
      case 'bits':
        this.number(f, v, path, sibling);
        this.values.set(path, v);
        return;
      case 'boolean':
        this.lines.push(
          `if (typeof ${v} !== 'boolean') ${this.fail(p, literal('true or false'), v)}`,
        );
        break;
      case 'enum': {
        const broken = f.values.map((o) => `${v} !== ${literal(o)}`).join(' && ');
        this.lines.push(`if (${broken}) ${this.fail(p, literal(oneOfText(f.values)), v)}`);
        break;
      }
      case 'hex': {
        const pattern = this.k.ref(new RegExp(`^[0-9a-f]{${f.digits}}$`));
        this.lines.push(
          `if (typeof ${v} !== 'string' || !${pattern}.test(${v})) ${this.fail(p, literal(hexText(f.digits)), v)}`,
        );
        break;
      }
      case 'u32-array':
      case 'byte-array': {
        const copy =
          f.kind === 'u32-array'
            ? this.array(f.length, f.length, v, path, U32_MAX)
            : this.array(0, f.max, v, path, 0xff);
        this.values.set(path, copy);
        rules(copy);
        return;
      }
      case 'nullable': {
        const out = this.locals.next('n');
        this.lines.push(`let ${out} = null;`, `if (${v} !== null) {`);
        if (f.of.kind === 'record')
          this.lines.push(`${out} = ${this.record(f.of.fields, path, v)};`);
        else {
          this.number(f.of, v, path, sibling);
          this.lines.push(`${out} = ${v};`);
        }
        this.lines.push('}');
        this.values.set(path, out);
        return;
      }
      case 'variant': {
        const tag = sibling(f.tag);
        const out = this.locals.next('w');
        this.lines.push(`let ${out};`);
        const cases = Object.entries(f.cases);
        cases.forEach(([value, kind], n) => {
          this.lines.push(`${n === 0 ? '' : '} else '}if (${tag} === ${literal(value)}) {`);
          this.number(kind, v, path, sibling);
          this.lines.push(`${out} = ${v};`);
        });
        this.lines.push('} else {');
        if (f.otherwise.kind === 'absent') {
          this.lines.push(
            `if (${v} !== undefined) ${this.fail(p, literal(f.otherwise.expected), v)}`,
          );
        } else {
          const expected = `${this.k.ref(f.otherwise.expected)}(${tag})`;
          this.lines.push(`if (${v} !== 0) ${this.fail(p, expected, v)}`, `${out} = 0;`);
        }
        this.lines.push('}');
        this.values.set(path, out);
        return;
      }
      case 'record':
        throw new Error(`${path}: records are checked as shape steps`);
    }
    rules(v);
    this.values.set(path, v);
  }

  /** Checks a number field (kind and rules) on local `v`. */
  private number(f: NumberField, v: string, path: string, sibling: (name: string) => string): void {
    if (f.kind === 'version') throw new Error(`${path}: a version cannot be nullable or a case`);
    for (const c of numberChecks(f, v, true)) {
      this.lines.push(`if (${c.broken}) ${this.fail(literal(path), c.expected, v)}`);
    }
    this.lines.push(...ruleLines(f.rules, v, path, sibling, this.k, this.fail));
  }

  /** Checks an array of `min`–`max` integer items in [0, `itemMax`]; returns its fresh copy. */
  private array(min: number, max: number, v: string, path: string, itemMax: number): string {
    const p = literal(path);
    const want = min === max ? `exactly ${min}` : `${min}–${max}`;
    const copy = this.locals.next('a');
    const item = this.locals.next('e');
    const [c] = numberChecks(integer(0, itemMax), item, true);
    this.lines.push(
      `if (!Array.isArray(${v})) ${this.fail(p, literal('an array'), v)}`,
      `if (${v}.length < ${min} || ${v}.length > ${max}) ${this.fail(p, literal(`an array of ${want} items`), v)}`,
      `const ${copy} = new Array(${v}.length);`,
      `for (let k = 0; k < ${v}.length; k++) {`,
      `const ${item} = ${v}[k];`,
      `if (${c!.broken}) ${this.fail(`${p} + '[' + k + ']'`, literal(rangeText(0, itemMax)), item)}`,
      `${copy}[k] = ${item};`,
      '}',
    );
    return copy;
  }

  /** The source of a record's checked copy: its keys in field order, optional ones if present. */
  private literal(fields: FieldTable, path: string): string {
    const all = Object.entries(fields);
    const obj = (names: readonly [string, Field][]): string =>
      `{ ${names.map(([n, f]) => `${n}: ${this.outputOf(f, join(path, n))}`).join(', ')} }`;
    const presence = presenceOf(fields);
    if (presence === undefined) return obj(all);
    const tag = this.values.get(join(path, presence.tag))!;
    const present = presence.values.map((o) => `${tag} === ${literal(o)}`).join(' || ');
    return `(${present}) ? ${obj(all)} : ${obj(all.filter(([, f]) => !isOptionalKey(f)))}`;
  }

  private outputOf(f: Field, path: string): string {
    return f.kind === 'record' ? this.literal(f.fields, path) : this.values.get(path)!;
  }
}
