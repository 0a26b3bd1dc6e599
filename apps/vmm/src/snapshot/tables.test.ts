import { isDeepStrictEqual } from 'node:util';

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import type { MachineState } from '../machine/state.js';
import { SchemaViolation } from './schemas/check.js';
import { MACHINE_SECTIONS, type SectionSpec } from './sections.js';
import { compileSectionCheck } from './table/schema-codegen.js';
import {
  absent,
  aligned4,
  defineSection,
  nullable,
  oneOf,
  record,
  sectionVersion,
  u32,
  variant,
} from './table/fields.js';
import { REFERENCE_SCHEMAS } from './testing/reference-schemas.js';
import { sampleState, validMachineState } from './test-support.js';

/** What a schema made of a body: its model (and that model's JSON), or what it threw. */
type Verdict =
  | { readonly model: unknown; readonly json: string | undefined }
  | { readonly violation: readonly unknown[] };

function verdictOf(check: (body: unknown, version: number) => unknown, body: unknown): Verdict {
  try {
    const model = check(body, 1);
    return { model, json: JSON.stringify(model) };
  } catch (err) {
    if (!(err instanceof SchemaViolation)) throw err;
    return { violation: [err.path, err.expected, err.got, err.message] };
  }
}

/** Counts of one comparison run. */
class Tally {
  accepted = 0;
  rejected = 0;

  /**
   * Runs section `spec`'s generated schema and its reference on `body`, and requires the same
   * verdict: equal models with the same JSON (key order included), or the same violation.
   */
  check(spec: SectionSpec<unknown>, body: unknown, what: string): void {
    const ours = verdictOf(spec.check, body);
    const ref = verdictOf(REFERENCE_SCHEMAS[spec.name]!, body);
    if (!isDeepStrictEqual(ours, ref)) expect(ours, `${spec.name}: ${what}`).toEqual(ref);
    if ('model' in ref) this.accepted++;
    else this.rejected++;
  }
}

/** The body of every section of `state`, as the container writes them. */
function bodiesOf(state: MachineState): [SectionSpec<unknown>, Record<string, unknown>][] {
  return MACHINE_SECTIONS.map((spec) => [
    spec,
    JSON.parse(JSON.stringify(spec.save(state))) as Record<string, unknown>,
  ]);
}

/** Every path to a value in `body` (keys and array indices), parents before children. */
function pathsOf(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (typeof value !== 'object' || value === null) return [];
  const keys: (string | number)[] = Array.isArray(value)
    ? [...new Set([0, 1, value.length - 1].filter((k) => k >= 0 && k < value.length))]
    : Object.keys(value);
  return keys.flatMap((k) => {
    const at = [...prefix, k];
    return [at, ...pathsOf((value as Record<string | number, unknown>)[k], at)];
  });
}

/** A deep copy of `body` with the value at `path` set (`undefined`: the key deleted). */
function withValue(body: unknown, path: readonly (string | number)[], value: unknown): unknown {
  const copy = structuredClone(body) as Record<string | number, unknown>;
  let o = copy;
  for (const k of path.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (value === undefined && !Array.isArray(o)) delete o[last];
  else o[last] = value;
  return copy;
}

/** True when path `a` is `b` or leads to it. */
function isPrefix(a: readonly (string | number)[], b: readonly (string | number)[]): boolean {
  return a.length <= b.length && a.every((k, n) => b[n] === k);
}

/** Values of every type around every rule's edges. */
// prettier-ignore
const EDGES: readonly unknown[] = [
  0, -0, 1, -1, 2, 3, 4, 0.5, NaN, Infinity, -Infinity, 0x0f, 0x10, 0xc9, 0xca, 0xff, 0x100,
  0x1800, 0xffff, 0x10000, 0x7fffffff, 0xfffffffc, 0xffffffff, 2 ** 32, 2 ** 53 - 1, 2 ** 53,
  2 ** 64 - 2048, 2 ** 64, '', '1', 'M', 'U', 'S', 'deterministic', 'realtime', 'pass', 'fail',
  'reset', '000000000000002a', '000000000000002A', true, false, null, undefined, [], [0], {},
  { kind: 'fail', code: 7 }, { kind: 'pass', code: 0 }, { kind: 'pass' },
];

const STATES: readonly (readonly [string, MachineState])[] = (() => {
  const s = sampleState();
  return [
    ['the sample', s],
    [
      'real time, no reservation, a failed exit',
      {
        ...s,
        cpu: { ...s.cpu, reservation: null },
        clock: { version: 1, mode: 'realtime', mtime: 5 },
        finisher: { version: 1, exit: { kind: 'fail', code: 3 } },
      },
    ],
    ['a passed exit', { ...s, finisher: { version: 1, exit: { kind: 'pass', code: 0 } } }],
  ];
})();

describe('the generated schema checks', () => {
  it('give the reference verdict for every edge value at every path of every section', () => {
    const tally = new Tally();
    for (const [name, state] of STATES) {
      for (const [spec, body] of bodiesOf(state)) {
        tally.check(spec, body, `${name}, unchanged`);
        for (const path of pathsOf(body)) {
          for (const value of EDGES) {
            tally.check(
              spec,
              withValue(body, path, value),
              `${name}: ${path.join('.')} = ${String(value)}`,
            );
          }
        }
        for (const key of ['extra', '__proto__', 'constructor']) {
          tally.check(spec, { ...body, [key]: 1 }, `${name}: unknown key ${key}`);
          tally.check(
            spec,
            JSON.parse(`{"${key}":0,${JSON.stringify(body).slice(1)}`),
            `${name}: leading ${key}`,
          );
        }
        for (const whole of EDGES) tally.check(spec, whole, `${name}: body ${String(whole)}`);
      }
    }
    expect(tally.accepted).toBeGreaterThan(100);
    expect(tally.rejected).toBeGreaterThan(5000);
  });

  it('report the reference violation first when two fields are broken', () => {
    const tally = new Tally();
    for (const [name, state] of STATES) {
      for (const [spec, body] of bodiesOf(state)) {
        const paths = pathsOf(body);
        for (const a of paths) {
          for (const b of paths) {
            if (isPrefix(a, b) || isPrefix(b, a)) continue;
            for (const [x, y] of [
              ['x', -1],
              [undefined, 0.5],
              [null, 'x'],
            ] as const) {
              const both = withValue(withValue(body, a, x), b, y);
              tally.check(spec, both, `${name}: ${a.join('.')} = ${x}, ${b.join('.')} = ${y}`);
            }
          }
        }
      }
    }
    expect(tally.rejected).toBeGreaterThan(5000);
  });

  it('give the reference verdict on random states with random JSON in random places', () => {
    const tally = new Tally();
    const value = fc.oneof(fc.constantFrom(...EDGES), fc.jsonValue({ maxDepth: 2 }), fc.double());
    fc.assert(
      fc.property(
        validMachineState(8),
        fc.nat(),
        fc.array(fc.tuple(fc.nat(), value), { maxLength: 3 }),
        (state, section, edits) => {
          const [spec, body] = bodiesOf(state)[section % MACHINE_SECTIONS.length]!;
          let edited: unknown = body;
          for (const [at, v] of edits) {
            const paths = pathsOf(edited);
            if (paths.length === 0) break;
            edited = withValue(edited, paths[at % paths.length]!, v);
          }
          tally.check(spec, edited, JSON.stringify(edits));
        },
      ),
      { numRuns: 3000 },
    );
    expect(tally.accepted).toBeGreaterThan(100);
    expect(tally.rejected).toBeGreaterThan(1000);
  });
});

describe('the table generators', () => {
  it('refuse a table that checks a field before what it needs', () => {
    const late = defineSection<{ version: number; n: number; mode: string }>({
      name: 'late',
      version: 1,
      maxBodyBytes: 1024,
      fields: {
        version: sectionVersion(),
        n: variant('mode', { a: u32() }, absent('absent', 'unused')),
        mode: oneOf(['a', 'b']),
      },
    });
    expect(() => compileSectionCheck(late)).toThrow(/n is checked before mode/);
  });

  it('refuse checkFirst below a nullable, and field names that are no identifiers', () => {
    const below = defineSection<{ version: number; n: { a: number } | null }>({
      name: 'below',
      version: 1,
      maxBodyBytes: 1024,
      fields: {
        version: sectionVersion(),
        n: nullable(record<{ a: number }>({ a: aligned4({ checkFirst: true }) })),
      },
    });
    expect(() => compileSectionCheck(below)).toThrow(/checkFirst is not allowed below a nullable/);
    expect(() =>
      defineSection<{ 'a-b': number }>({
        name: 'bad',
        version: 1,
        maxBodyBytes: 1024,
        fields: { 'a-b': u32() },
      }),
    ).toThrow(/no identifier/);
  });
});
