/**
 * Generates the compact encoder's body writer from a {@link CompactLayout}. It checks only that
 * every value fits its slot — never truncating or wrapping one — in four phases: every record is
 * an object; every array and string has a length its slot carries (fixed arrays, then byte
 * arrays, then strings, each in field order); then the fixed part and the tail are written in
 * layout order, each value checked as it is written. The section rules are the decoder's.
 *
 * @packageDocumentation
 */

import { join } from './check-plan.js';
import type { CompactLayout, LayoutSection, Slot, SlotOf } from './compact-layout.js';
import { statePathOf } from './compact-layout.js';
import type { Field, FieldTable, VariantField } from './fields.js';
import { Constants, Locals, compile, literal } from './source.js';
import { oneOfText } from './value-checks.js';

/**
 * The error for a value the layout cannot carry: `section`, its state path, what it must be and
 * the value (a `SnapshotError` to throw).
 */
export type Unfit = (section: string, path: string, expected: string, got: unknown) => Error;

/** Writes a state's body; returns a fresh array with `header` bytes before it, left zero. */
export type BodyWriter = (state: unknown) => Uint8Array;

/** The body writer of `layout`, leaving `header` bytes for the caller. */
export function compileBodyWriter(layout: CompactLayout, header: number, unfit: Unfit): BodyWriter {
  return new WriterSource(layout, header, unfit).compile();
}

/** A record of the state and the local holding it. */
interface Scope {
  readonly section: LayoutSection;
  readonly fields: FieldTable;
  /** Body path of the record. */
  readonly path: string;
  /** Local holding the record object. */
  readonly object: string;
}

class WriterSource {
  private readonly k = new Constants();
  private readonly locals = new Locals();
  private readonly lines: string[] = [];
  private readonly unfit: string;
  /** Local holding each array or string, by `section/path`. */
  private readonly sized = new Map<string, string>();
  /** Local holding each enum's index, by `section/path`. */
  private readonly codes = new Map<string, string>();
  /** Local holding each record object, by `section/path`. */
  private readonly objectLocals = new Map<string, string>();

  constructor(
    private readonly layout: CompactLayout,
    private readonly header: number,
    unfit: Unfit,
  ) {
    this.unfit = this.k.ref(unfit);
  }

  compile(): BodyWriter {
    const scopes = this.objects();
    for (const kind of ['u32-array', 'byte-array', 'hex'] as const) {
      for (const scope of scopes) this.sizes(scope, kind);
    }
    const lengths = this.layout.tail.map((p) => `${this.sizedLocal(p.section, p.path)}.length`);
    const bodyBytes = [String(this.layout.minBodyBytes), ...lengths].join(' + ');
    this.lines.push(
      `const out = new Uint8Array(${this.header} + ${bodyBytes});`,
      'const v = new DataView(out.buffer);',
    );
    for (const scope of scopes) this.fixed(scope);
    this.tail();
    const body = ['return function writeBody(state) {', ...this.lines, 'return out;', '}'];
    return compile('compact-body-writer', this.k, body.join('\n'));
  }

  private throwUnfit(section: LayoutSection, path: string, expected: string, got: string): string {
    return `throw ${this.unfit}(${literal(section.name)}, ${path}, ${expected}, ${got});`;
  }

  /** Phase 1: the state, each section's model and their nested records are objects. */
  private objects(): Scope[] {
    const scopes: Scope[] = [];
    const own = this.layout.sections.find((s) => s.component === null) ?? this.layout.sections[0]!;
    this.lines.push(
      `if (typeof state !== 'object' || state === null) ${this.throwUnfit(own, literal('the state'), literal('an object'), 'state')}`,
    );
    const visit = (
      section: LayoutSection,
      fields: FieldTable,
      path: string,
      object: string,
    ): void => {
      this.objectLocals.set(`${section.name}/${path}`, object);
      for (const [name, f] of Object.entries(fields)) {
        if (f.kind !== 'record') continue;
        const at = join(path, name);
        visit(section, f.fields, at, this.object(section, `${object}.${name}`, at));
      }
    };
    for (const section of this.layout.sections) {
      const object =
        section.component === null
          ? 'state'
          : this.object(section, `state.${section.component}`, '');
      visit(section, section.fields, '', object);
      scopes.push({ section, fields: section.fields, path: '', object });
    }
    return scopes;
  }

  private object(section: LayoutSection, read: string, path: string): string {
    const o = this.locals.next('o');
    const what = literal(statePathOf(section, path) || 'the state');
    this.lines.push(
      `const ${o} = ${read};`,
      `if (typeof ${o} !== 'object' || ${o} === null) ${this.throwUnfit(section, what, literal('an object'), o)}`,
    );
    return o;
  }

  /** Phase 2: the lengths of one kind of sized field of a record and its nested records. */
  private sizes(scope: Scope, kind: 'u32-array' | 'byte-array' | 'hex'): void {
    for (const [name, f] of Object.entries(scope.fields)) {
      const path = join(scope.path, name);
      if (f.kind === 'record') {
        const object = this.objectOf(scope.section, path);
        this.sizes({ section: scope.section, fields: f.fields, path, object }, kind);
      }
      if (f.kind !== kind) continue;
      const what = literal(statePathOf(scope.section, path));
      const x = this.locals.next('s');
      this.lines.push(`const ${x} = ${scope.object}.${name};`);
      if (f.kind === 'u32-array') {
        this.lines.push(
          `if (!Array.isArray(${x}) || ${x}.length !== ${f.length}) ${this.throwUnfit(scope.section, what, literal(`an array of exactly ${f.length} items`), x)}`,
        );
      } else if (f.kind === 'byte-array') {
        this.lines.push(
          `if (!Array.isArray(${x}) || ${x}.length > ${f.max}) ${this.throwUnfit(scope.section, what, literal(`an array of at most ${f.max} bytes`), x)}`,
        );
      } else {
        this.lines.push(
          `if (typeof ${x} !== 'string' || ${x}.length > ${f.carried}) ${this.throwUnfit(scope.section, what, literal(asciiText(f.carried)), x)}`,
        );
      }
      this.sized.set(`${scope.section.name}/${path}`, x);
    }
  }

  /** Phase 3: the fixed part of a record, in field order. */
  private fixed(scope: Scope): void {
    const { section, fields } = scope;
    const entries = Object.entries(fields);
    for (let i = 0; i < entries.length; i++) {
      const [name, f] = entries[i]!;
      const path = join(scope.path, name);
      const what = literal(statePathOf(section, path));
      if (f.kind === 'record') {
        this.fixed({ section, fields: f.fields, path, object: this.objectOf(section, path) });
        continue;
      }
      const read = `${scope.object}.${name}`;
      const slot = <E extends Slot['enc']>(enc: E): SlotOf<E> =>
        this.layout.slot(section.name, path, enc);
      const at = (offset: number): number => this.header + offset;
      switch (f.kind) {
        case 'version':
        case 'integer':
        case 'u64':
        case 'bits':
          this.f64(section, read, what, at(slot('f64').offset));
          break;
        case 'boolean': {
          const b = this.local('b', read);
          this.lines.push(
            `if (${b} === true) out[${at(slot('flag').offset)}] = 1;`,
            `else if (${b} !== false) ${this.throwUnfit(section, what, literal('true or false'), b)}`,
          );
          break;
        }
        case 'enum': {
          const code = slot('code');
          const e = this.local('e', read);
          const index = f.values.reduceRight(
            (rest, value, n) => `${e} === ${literal(value)} ? ${n} : ${rest}`,
            '-1',
          );
          const c = this.local('c', index);
          this.lines.push(
            `if (${c} < 0) ${this.throwUnfit(section, what, literal(oneOfText(f.values)), e)}`,
            `out[${at(code.offset)}] = ${c}${code.base === 0 ? '' : ` + ${code.base}`};`,
          );
          this.codes.set(`${section.name}/${path}`, c);
          break;
        }
        case 'u32-array': {
          const items = slot('u32s');
          const a = this.sizedLocal(section, path);
          const item = this.locals.next('i');
          this.lines.push(
            `for (let k = 0; k < ${f.length}; k++) {`,
            `const ${item} = ${a}[k];`,
            `if (typeof ${item} !== 'number' || ${item} >>> 0 !== ${item}) ${this.throwUnfit(section, `${what} + '[' + k + ']'`, literal('an integer in [0, 2^32)'), item)}`,
            `v.setUint32(${at(items.offset)} + 4 * k, ${item}, true);`,
            '}',
          );
          break;
        }
        case 'nullable': {
          const n = this.local('n', read);
          if (f.of.kind !== 'record') {
            const presence = slot('presence');
            this.lines.push(
              `if (${n} !== null) {`,
              `if (typeof ${n} !== 'number') ${this.throwUnfit(section, what, literal('null or a number'), n)}`,
              `out[${at(presence.offset)}] = 1;`,
              `v.setFloat64(${at(presence.offset + 1)}, ${n}, true);`,
              '}',
            );
          } else {
            slot('folded');
            this.lines.push(
              `if (${n} !== null) {`,
              `if (typeof ${n} !== 'object') ${this.throwUnfit(section, what, literal('null or an object'), n)}`,
            );
            this.fixed({ section, fields: f.of.fields, path, object: n });
            this.lines.push('}');
          }
          break;
        }
        case 'variant': {
          if (f.otherwise.kind === 'zero') {
            this.f64(section, read, what, at(slot('f64').offset));
            break;
          }
          // A run of optional fields under one tag: written when the tag carries them, else
          // each must be absent.
          const run = [[name, f]] as [string, VariantField][];
          while (i + 1 < entries.length && sameAbsence(entries[i + 1]![1], f)) {
            run.push(entries[++i] as [string, VariantField]);
          }
          this.optionalRun(scope, run);
          break;
        }
        case 'byte-array':
        case 'hex':
          break;
      }
    }
  }

  /** Writes optional fields `run` when their tag carries them; otherwise each must be absent. */
  private optionalRun(scope: Scope, run: readonly [string, VariantField][]): void {
    const { section } = scope;
    const first = run[0]![1];
    const tagField = scope.fields[first.tag];
    const code = this.codes.get(`${section.name}/${join(scope.path, first.tag)}`);
    if (tagField?.kind !== 'enum' || code === undefined || first.otherwise.kind !== 'absent') {
      throw new Error(
        `${section.name}.${scope.path}: the tag ${first.tag} is no enum before its variants`,
      );
    }
    const carried = Object.keys(first.cases)
      .map((value) => `${code} === ${tagField.values.indexOf(value)}`)
      .join(' || ');
    const values = run.map(([name]) => this.local('x', `${scope.object}.${name}`));
    const paths = run.map(([name]) => literal(statePathOf(section, join(scope.path, name))));
    this.lines.push(`if (${carried}) {`);
    run.forEach(([name], n) => {
      const slot = this.layout.slot(section.name, join(scope.path, name), 'f64');
      this.f64(section, values[n]!, paths[n]!, this.header + slot.offset);
    });
    const defined = values.map((x) => `${x} !== undefined`);
    const path = values
      .slice(0, -1)
      .reduceRight((rest, x, n) => `${x} !== undefined ? ${paths[n]!} : ${rest}`, paths.at(-1)!);
    this.lines.push(
      `} else if (${defined.join(' || ')}) ${this.throwUnfit(section, path, literal(first.otherwise.expected), values.join(' ?? '))}`,
    );
  }

  /** Phase 4: the tail, in tail order. */
  private tail(): void {
    this.lines.push(`let p = ${this.header + this.layout.fixedBytes};`);
    for (const piece of this.layout.tail) {
      const x = this.sizedLocal(piece.section, piece.path);
      const what = literal(piece.statePath);
      const c = this.locals.next('c');
      if (piece.enc === 'ascii') {
        this.lines.push(
          `out[p++] = ${x}.length;`,
          `for (let k = 0; k < ${x}.length; k++) {`,
          `const ${c} = ${x}.charCodeAt(k);`,
          `if (${c} > 0x7f) ${this.throwUnfit(piece.section, what, literal(asciiText(piece.limit)), x)}`,
          `out[p++] = ${c};`,
          '}',
        );
      } else {
        this.lines.push(
          `v.setUint32(p, ${x}.length, true);`,
          'p += 4;',
          `for (let k = 0; k < ${x}.length; k++) {`,
          `const ${c} = ${x}[k];`,
          `if (typeof ${c} !== 'number' || (${c} & 0xff) !== ${c}) ${this.throwUnfit(piece.section, `${what} + '[' + k + ']'`, literal('an integer in [0, 255]'), c)}`,
          `out[p + k] = ${c};`,
          '}',
          `p += ${x}.length;`,
        );
      }
    }
  }

  private f64(section: LayoutSection, read: string, what: string, offset: number): void {
    const n = this.local('f', read);
    this.lines.push(
      `if (typeof ${n} !== 'number') ${this.throwUnfit(section, what, literal('a number'), n)}`,
      `v.setFloat64(${offset}, ${n}, true);`,
    );
  }

  private local(prefix: string, init: string): string {
    const name = this.locals.next(prefix);
    this.lines.push(`const ${name} = ${init};`);
    return name;
  }

  /** Local holding the record at `path` (checked in phase 1). */
  private objectOf(section: LayoutSection, path: string): string {
    return this.objectLocals.get(`${section.name}/${path}`)!;
  }

  /** Local holding the array or string at `path` (checked in phase 2). */
  private sizedLocal(section: LayoutSection, path: string): string {
    const x = this.sized.get(`${section.name}/${path}`);
    if (x === undefined)
      throw new Error(`${section.name}.${path}: sized fields below a nullable are not supported`);
    return x;
  }
}

function sameAbsence(f: Field, first: VariantField): boolean {
  return (
    f.kind === 'variant' &&
    f.otherwise.kind === 'absent' &&
    f.tag === first.tag &&
    Object.keys(f.cases).join() === Object.keys(first.cases).join()
  );
}

function asciiText(limit: number): string {
  return `a string of at most ${limit} ASCII characters`;
}
