/**
 * The checks of one value, as source, shared by the generated validators: the container's schema
 * check (values of any type) and the compact decoder (numbers as read). Each check is a condition
 * that is true when the value breaks it, and the `expected` wording of its violation.
 *
 * @packageDocumentation
 */

import { TWO_POW_64, U32_MAX } from '../schemas/check.js';
import type { FieldRule, NumberField } from './fields.js';
import { literal, type Constants } from './source.js';

/** A check as source: `broken` is true when the value breaks it. */
export interface ValueCheck {
  readonly broken: string;
  /** Source of the `expected` string. */
  readonly expected: string;
}

/** Emits the statement that reports a violation at `path` (source of strings and values). */
export type Fail = (path: string, expected: string, got: string) => string;

/**
 * The checks of a number field (not the version) on the value in `v`, in order. With
 * `anyType`, the first check also rejects a value that is not a number; without, `v` is a
 * number (NaN, ±Infinity, -0 and fractions included). The conditions are the specialised forms
 * of `Number.isInteger(v) && min <= v && v <= max`, exact for every double.
 */
export function numberChecks(
  f: Exclude<NumberField, { kind: 'version' }>,
  v: string,
  anyType: boolean,
): ValueCheck[] {
  const typed = (broken: string): string =>
    anyType ? `typeof ${v} !== 'number' || ${broken}` : broken;
  if (f.kind === 'u64') {
    return [
      {
        broken: typed(`!(${v} >= 0 && ${v} < ${TWO_POW_64} && Math.floor(${v}) === ${v})`),
        expected: literal('an integer in [0, 2^64)'),
      },
    ];
  }
  if (f.kind === 'bits') {
    return [
      { broken: typed(outsideRange(v, 0, U32_MAX)), expected: literal(rangeText(0, U32_MAX)) },
      {
        broken: `(${v} & ${~f.mask}) !== 0`,
        expected: literal(`a value with no bits outside 0x${f.mask.toString(16)}`),
      },
    ];
  }
  return [
    { broken: typed(outsideRange(v, f.min, f.max)), expected: literal(rangeText(f.min, f.max)) },
  ];
}

/** The schemas' wording of an integer range. */
export function rangeText(min: number, max: number): string {
  return `an integer in [${min}, ${max}]`;
}

/** The schemas' wording of an enum. */
export function oneOfText(values: readonly string[]): string {
  return `one of ${values.map((o) => `'${o}'`).join(', ')}`;
}

/** The wording of a hex field. */
export function hexText(digits: number): string {
  return `${digits} lower-case hex digits`;
}

/** The wording of a section version. */
export function versionExpected(version: string): string {
  return `${version} + ', the version in the section entry'`;
}

/**
 * Statements checking `rules` on the value in `v` (of the field's kind already); `sibling` gives
 * the local holding a sibling's checked value.
 */
export function ruleLines(
  rules: readonly FieldRule<never>[],
  v: string,
  path: string,
  sibling: (name: string) => string,
  k: Constants,
  fail: Fail,
): string[] {
  return rules.map((r) => {
    const other = r.sibling === undefined ? 'undefined' : sibling(r.sibling);
    const expected =
      typeof r.expected === 'string' ? literal(r.expected) : `${k.ref(r.expected)}(${other})`;
    const got = r.got === undefined ? v : `${k.ref(r.got)}(${v})`;
    return `if (!${k.ref(r.holds)}(${v}, ${other})) ${fail(literal(path + (r.at ?? '')), expected, got)}`;
  });
}

/** True (as source) when the number in `v` is not an integer in `[min, max]`. */
function outsideRange(v: string, min: number, max: number): string {
  if (min === 0 && max === U32_MAX) return `${v} >>> 0 !== ${v}`;
  if (min === 1 && max === U32_MAX) return `!(${v} >= 1 && ${v} >>> 0 === ${v})`;
  if (min === 0 && max < 2 ** 31 && (max & (max + 1)) === 0) return `(${v} & ${max}) !== ${v}`;
  return `!(${v} >= ${literal(min)} && ${v} <= ${literal(max)} && Math.floor(${v}) === ${v})`;
}
