/**
 * Generates the compact decoder's second pass, the value pass, from a {@link CompactLayout}: it
 * reads every field where the layout put it, checks the table's rules in {@link checkPlan}
 * order — the order of the container's schema check, so the first violation reported is the
 * same, with the same wording — and returns the `MachineState`, built in one straight-line
 * function without intermediate objects. The layout already bounds what it carries (types,
 * array lengths, u32 and u8 items) and the layout check ran first, so only the rules left are
 * checked. A failure is `SNAPSHOT_INVALID_STATE`.
 *
 * @packageDocumentation
 */

import { checkPlan, join, presenceOf, type CheckStep } from './check-plan.js';
import type { CompactPass } from './compact-check-codegen.js';
import type { CompactLayout, LayoutSection, Slot, SlotOf } from './compact-layout.js';
import type { Field, FieldTable, NumberField } from './fields.js';
import { Constants, Locals, compile, literal } from './source.js';
import {
  hexText,
  numberChecks,
  oneOfText,
  ruleLines,
  versionExpected,
  type Fail,
} from './value-checks.js';

/** The cold paths the generated pass calls; each throws a `SnapshotError`. */
export interface ValueFaults {
  /** `SNAPSHOT_INVALID_STATE`, worded as the container's schema check words it. */
  invalid(section: string, version: number, path: string, expected: string, got: unknown): never;
  /** The ASCII string of the `n` bytes at `at` (what an invalid string field reports). */
  ascii(bytes: Uint8Array, at: number, n: number): string;
}

/** The value pass of `layout` for bodies at offset `header` whose layout check passed. */
export function compileValueReader(
  layout: CompactLayout,
  header: number,
  faults: ValueFaults,
): CompactPass<unknown> {
  const k = new Constants();
  const locals = new Locals();
  const lines: string[] = [];
  // Where each tail piece starts and how long it is (the layout check bounded both).
  lines.push(`let p = ${header + layout.fixedBytes};`);
  const tail = new Map<string, { at: string; n: string }>();
  for (const piece of layout.tail) {
    const at = locals.next('t');
    const n = locals.next('n');
    const count = piece.enc === 'ascii' ? 'bytes[p]' : 'v.getUint32(p, true)';
    lines.push(
      `const ${n} = ${count};`,
      `const ${at} = p + ${piece.countBytes};`,
      `p = ${at} + ${n};`,
    );
    tail.set(`${piece.section.name}/${piece.path}`, { at, n });
  }
  const parts = layout.sections.map((section) => {
    const reader = new SectionReader(section, layout, header, k, locals, lines, tail, faults);
    return reader.read();
  });
  const body = [
    'return function readValues(bytes, v) {',
    ...lines,
    `return { ${parts.join(', ')} };`,
    '}',
  ].join('\n');
  return compile('compact-value-reader', k, body);
}

/** Writes the value pass of one section into the shared `lines`. */
class SectionReader {
  /** Source of each checked value, by body path. */
  private readonly values = new Map<string, string>();
  /** Local holding each enum's code, by body path. */
  private readonly codes = new Map<string, { readonly code: string; readonly base: number }>();
  private readonly fail: Fail;

  constructor(
    private readonly section: LayoutSection,
    private readonly layout: CompactLayout,
    private readonly header: number,
    private readonly k: Constants,
    private readonly locals: Locals,
    private readonly lines: string[],
    private readonly tail: ReadonlyMap<string, { readonly at: string; readonly n: string }>,
    private readonly faults: ValueFaults,
  ) {
    const invalid = k.ref(faults.invalid);
    const prefix = `${invalid}(${literal(section.name)}, ${section.version}, `;
    this.fail = (path, expected, got) => `${prefix}${path}, ${expected}, ${got});`;
  }

  /** Emits the section's checks; returns its part of the state literal. */
  read(): string {
    for (const step of checkPlan(this.section.fields)) this.step(step);
    if (this.section.component !== null) {
      return `${this.section.component}: ${this.literal(this.section.fields, '')}`;
    }
    return this.entries(this.section.fields, '', Object.keys(this.section.fields));
  }

  private step(s: CheckStep): void {
    if (s.kind === 'value') this.value(s.field, s.path, s.parent);
  }

  private slot<E extends Slot['enc']>(path: string, enc: E): SlotOf<E> {
    return this.layout.slot(this.section.name, path, enc);
  }

  private at(offset: number): number {
    return this.header + offset;
  }

  private value(f: Field, path: string, parent: string): void {
    const p = literal(path);
    const sibling = (name: string): string => this.values.get(join(parent, name))!;
    const local = (prefix: string, init: string): string => {
      const name = this.locals.next(prefix);
      this.lines.push(`const ${name} = ${init};`);
      return name;
    };
    switch (f.kind) {
      case 'version': {
        const n = local('f', this.f64(path));
        const version = this.section.version;
        this.lines.push(
          `if (${n} !== ${version}) ${this.fail(p, versionExpected(String(version)), n)}`,
        );
        this.values.set(path, String(version));
        return;
      }
      case 'integer':
      case 'u64':
      case 'bits': {
        const n = local('f', this.f64(path));
        this.number(f, n, path, sibling);
        this.values.set(path, n);
        return;
      }
      case 'boolean': {
        const c = local('b', `bytes[${this.at(this.slot(path, 'flag').offset)}]`);
        this.lines.push(`if (${c} > 1) ${this.fail(p, literal('true or false'), c)}`);
        this.values.set(path, local('v', `${c} === 1`));
        return;
      }
      case 'enum': {
        const slot = this.slot(path, 'code');
        const c = local('c', `bytes[${this.at(slot.offset)}]`);
        const last = f.values.length - 1 + slot.base;
        this.lines.push(`if (${c} > ${last}) ${this.fail(p, literal(oneOfText(f.values)), c)}`);
        const value = local(
          'e',
          `${this.k.ref(f.values)}[${c}${slot.base === 0 ? '' : ` - ${slot.base}`}]`,
        );
        this.codes.set(path, { code: c, base: slot.base });
        this.values.set(path, value);
        return;
      }
      case 'hex': {
        const { at, n } = this.tailOf(path);
        const ok = this.locals.next('h');
        const c = this.locals.next('c');
        const ascii = this.k.ref(this.faults.ascii);
        this.lines.push(
          `let ${ok} = ${n} === ${f.digits};`,
          `for (let k = 0; ${ok} && k < ${f.digits}; k++) {`,
          `const ${c} = bytes[${at} + k];`,
          `${ok} = (${c} >= 0x30 && ${c} <= 0x39) || (${c} >= 0x61 && ${c} <= 0x66);`,
          '}',
          `if (!${ok}) ${this.fail(p, literal(hexText(f.digits)), `${ascii}(bytes, ${at}, ${n})`)}`,
        );
        const chars = Array.from({ length: f.digits }, (_, i) => `bytes[${at} + ${i}]`);
        this.values.set(path, local('s', `String.fromCharCode(${chars.join(', ')})`));
        return;
      }
      case 'u32-array': {
        const slot = this.slot(path, 'u32s');
        const a = local('a', `new Array(${f.length})`);
        this.lines.push(
          `for (let k = 0; k < ${f.length}; k++) ${a}[k] = v.getUint32(${this.at(slot.offset)} + 4 * k, true);`,
        );
        this.lines.push(...ruleLines(f.rules, a, path, sibling, this.k, this.fail));
        this.values.set(path, a);
        return;
      }
      case 'byte-array': {
        const { at, n } = this.tailOf(path);
        const a = local('a', `new Array(${n})`);
        this.lines.push(`for (let k = 0; k < ${n}; k++) ${a}[k] = bytes[${at} + k];`);
        this.values.set(path, a);
        return;
      }
      case 'nullable': {
        const out = this.locals.next('n');
        this.lines.push(`let ${out} = null;`);
        if (f.of.kind === 'record') {
          const slot = this.slot(path, 'folded');
          this.lines.push(`if (bytes[${this.at(slot.offset)}] !== 0) {`);
          for (const step of checkPlan(f.of.fields, path)) this.step(step);
          this.lines.push(`${out} = ${this.literal(f.of.fields, path)};`);
        } else {
          const slot = this.slot(path, 'presence');
          this.lines.push(`if (bytes[${this.at(slot.offset)}] === 1) {`);
          const n = local('f', `v.getFloat64(${this.at(slot.offset + 1)}, true)`);
          this.number(f.of, n, path, sibling);
          this.lines.push(`${out} = ${n};`);
        }
        this.lines.push('}');
        this.values.set(path, out);
        return;
      }
      case 'variant': {
        const tag = this.codes.get(join(parent, f.tag));
        if (tag === undefined)
          throw new Error(`${path}: its tag ${f.tag} is no enum checked before it`);
        const tagField = fieldAt(this.section.fields, join(parent, f.tag));
        const out = this.locals.next('w');
        this.lines.push(`let ${out};`);
        Object.entries(f.cases).forEach(([value, kind], n) => {
          const code = tagField.values.indexOf(value) + tag.base;
          this.lines.push(`${n === 0 ? '' : '} else '}if (${tag.code} === ${code}) {`);
          const read = local('f', this.f64(path));
          this.number(kind, read, path, sibling);
          this.lines.push(`${out} = ${read};`);
        });
        // Absent otherwise: the layout check found its slot zero; nothing to read.
        if (f.otherwise.kind === 'zero') {
          this.lines.push('} else {');
          const read = local('f', this.f64(path));
          const expected = `${this.k.ref(f.otherwise.expected)}(${sibling(f.tag)})`;
          this.lines.push(`if (${read} !== 0) ${this.fail(p, expected, read)}`, `${out} = 0;`);
        }
        this.lines.push('}');
        this.values.set(path, out);
        return;
      }
      case 'record':
        throw new Error(`${path}: records are shape steps`);
    }
  }

  /** Checks a number field's kind and rules on the f64 in local `n`. */
  private number(f: NumberField, n: string, path: string, sibling: (name: string) => string): void {
    if (f.kind === 'version') throw new Error(`${path}: a version cannot be nullable or a case`);
    for (const c of numberChecks(f, n, false)) {
      this.lines.push(`if (${c.broken}) ${this.fail(literal(path), c.expected, n)}`);
    }
    this.lines.push(...ruleLines(f.rules, n, path, sibling, this.k, this.fail));
  }

  /** Source reading the f64 of field `path`. */
  private f64(path: string): string {
    return `v.getFloat64(${this.at(this.slot(path, 'f64').offset)}, true)`;
  }

  private tailOf(path: string): { readonly at: string; readonly n: string } {
    return this.tail.get(`${this.section.name}/${path}`)!;
  }

  /** The record's literal: its keys in field order, the optional ones when its tag carries them. */
  private literal(fields: FieldTable, path: string): string {
    const names = Object.keys(fields);
    const presence = presenceOf(fields);
    if (presence === undefined) return `{ ${this.entries(fields, path, names)} }`;
    const tag = this.codes.get(join(path, presence.tag))!;
    const tagField = fieldAt(fields, presence.tag);
    const present = presence.values
      .map((o) => `${tag.code} === ${tagField.values.indexOf(o) + tag.base}`)
      .join(' || ');
    const required = names.filter((n) => {
      const f = fields[n]!;
      return !(f.kind === 'variant' && f.otherwise.kind === 'absent');
    });
    return `(${present}) ? { ${this.entries(fields, path, names)} } : { ${this.entries(fields, path, required)} }`;
  }

  private entries(fields: FieldTable, path: string, names: readonly string[]): string {
    return names
      .map((n) => {
        const f = fields[n]!;
        const at = join(path, n);
        return `${n}: ${f.kind === 'record' ? this.literal(f.fields, at) : this.values.get(at)!}`;
      })
      .join(', ');
  }
}

/** The enum field at `path` of `fields`. */
function fieldAt(fields: FieldTable, path: string): Extract<Field, { kind: 'enum' }> {
  let table = fields;
  const keys = path.split('.');
  for (let i = 0; i < keys.length - 1; i++) {
    const f = table[keys[i]!];
    if (f?.kind === 'record') table = f.fields;
    else if (f?.kind === 'nullable' && f.of.kind === 'record') table = f.of.fields;
  }
  const f = table[keys[keys.length - 1]!];
  if (f?.kind !== 'enum') throw new Error(`${path} is no enum`);
  return f;
}
