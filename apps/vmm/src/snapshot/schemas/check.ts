/**
 * What the code generated from the section tables (table/schema-codegen.ts) needs at run time:
 * the violation it throws, the bounds it compares with, and the record shape check.
 *
 * @packageDocumentation
 */

/** A value that breaks its section's schema; turned into `SNAPSHOT_INVALID_STATE` by the caller. */
export class SchemaViolation extends Error {
  override readonly name = 'SchemaViolation';

  /**
   * @param path - where in the section body, e.g. `csr.mstatus` or `x[5]`
   * @param expected - what the value must be, e.g. `an integer in [0, 255]`
   * @param got - the offending value (described, never dumped)
   */
  constructor(
    readonly path: string,
    readonly expected: string,
    readonly got: unknown,
  ) {
    super(`${path || 'the body'} must be ${expected}`);
  }
}

/** Largest u32. */
export const U32_MAX = 0xffffffff;
/** 2^64: exclusive bound of 64-bit counters carried as numbers. */
export const TWO_POW_64 = 18446744073709551616;

/** Joins a path and a field name or an array index. */
function at(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path === '' ? key : `${path}.${key}`;
}

/**
 * Requires a plain object with every `required` key as its own property and no keys but those
 * and the `optional` ones (an optional key holding `undefined` counts as absent). Reports the
 * first unknown key in the object's key order, then the first missing key in `required` order.
 * Reads no value: nesting below the record costs nothing.
 *
 * @throws SchemaViolation naming the record (`an object`) or the key (`absent …`, `present`)
 */
export function checkRecordShape(
  value: unknown,
  path: string,
  required: readonly string[],
  optional: readonly string[],
): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new SchemaViolation(path, 'an object', value);
  }
  const src = value as Record<string, unknown>;
  for (const key of Object.keys(src)) {
    if (required.includes(key) || optional.includes(key)) continue;
    throw new SchemaViolation(
      at(path, key),
      'absent (not a field of this section version)',
      src[key],
    );
  }
  for (const key of required) {
    if (!Object.hasOwn(src, key)) throw new SchemaViolation(at(path, key), 'present', undefined);
  }
}
