/**
 * The order in which a section's rules are checked, shared by every generated validator (the
 * container's schema check and the compact decoder), so that both report the same violation
 * first when several are broken.
 *
 * @packageDocumentation
 */

import type { Field, FieldTable, RecordField, VariantField } from './fields.js';

/** One step of a {@link checkPlan}. */
export interface CheckStep {
  /** `shape`: a nested record's own check (an object with exactly its keys); `value`: a field. */
  readonly kind: 'shape' | 'value';
  /** Path of the field in the section body, e.g. `csr.mstatus`. */
  readonly path: string;
  /** Path of the record holding it (`''` for the body). */
  readonly parent: string;
  /** Its key in that record. */
  readonly name: string;
  readonly field: Field;
}

/**
 * The checks of a record's fields in schema order: first the fields marked `checkFirst` (a
 * nested record's shape comes first when it holds one), then the others; each group in field
 * order, a record's shape before its fields. A nullable field is one step, its own fields
 * checked inside it in field order.
 *
 * @param prefix - path of the record (`''` for the section body)
 * @throws Error when the table breaks an ordering constraint: a variant's tag or a rule's sibling
 *   checked after the field, `checkFirst` below a nullable, optional fields of one record under
 *   different conditions
 */
export function checkPlan(fields: FieldTable, prefix = ''): CheckStep[] {
  const steps: { step: CheckStep; first: boolean }[] = [];
  collect(fields, prefix, steps);
  const plan = [...steps.filter((s) => s.first), ...steps.filter((s) => !s.first)].map(
    (s) => s.step,
  );
  assertOrder(plan);
  return plan;
}

/**
 * The condition under which a record's optional fields (variants absent otherwise) are present:
 * their tag and the tag values that carry them; undefined when the record has none.
 */
export function presenceOf(
  fields: FieldTable,
): { readonly tag: string; readonly values: readonly string[] } | undefined {
  let found: { tag: string; values: readonly string[] } | undefined;
  for (const f of Object.values(fields)) {
    if (f.kind !== 'variant' || f.otherwise.kind !== 'absent') continue;
    const values = Object.keys(f.cases);
    if (found === undefined) found = { tag: f.tag, values };
    else if (found.tag !== f.tag || found.values.join() !== values.join()) {
      throw new Error('optional fields of one record must share their tag and cases');
    }
  }
  return found;
}

/** True when the field is a variant absent otherwise: its key is optional. */
export function isOptionalKey(f: Field): f is VariantField {
  return f.kind === 'variant' && f.otherwise.kind === 'absent';
}

/** Joins a record path and a key. */
export function join(prefix: string, name: string): string {
  return prefix === '' ? name : `${prefix}.${name}`;
}

function collect(
  fields: FieldTable,
  prefix: string,
  out: { step: CheckStep; first: boolean }[],
): void {
  presenceOf(fields);
  for (const [name, field] of Object.entries(fields)) {
    const path = join(prefix, name);
    if (field.kind === 'record') {
      out.push({
        step: { kind: 'shape', path, parent: prefix, name, field },
        first: hasFirst(field),
      });
      collect(field.fields, path, out);
      continue;
    }
    if (field.kind === 'nullable' && field.of.kind === 'record' && hasFirst(field.of)) {
      throw new Error(`${path}: checkFirst is not allowed below a nullable`);
    }
    out.push({
      step: { kind: 'value', path, parent: prefix, name, field },
      first: field.checkFirst,
    });
  }
}

function hasFirst(r: RecordField): boolean {
  return Object.values(r.fields).some((f) => f.checkFirst || (f.kind === 'record' && hasFirst(f)));
}

function assertOrder(plan: readonly CheckStep[]): void {
  const seen = new Set<string>();
  for (const step of plan) {
    const f = step.field;
    const needs: string[] = [];
    if (f.kind === 'variant') {
      needs.push(join(step.parent, f.tag));
      for (const c of Object.values(f.cases)) {
        for (const r of c.rules)
          if (r.sibling !== undefined) needs.push(join(step.parent, r.sibling));
      }
    }
    for (const r of f.rules) if (r.sibling !== undefined) needs.push(join(step.parent, r.sibling));
    for (const n of needs) {
      if (!seen.has(n)) throw new Error(`${step.path} is checked before ${n}, which it needs`);
    }
    seen.add(step.path);
  }
}
