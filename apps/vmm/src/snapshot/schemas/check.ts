/**
 * Schema primitives for section bodies. Each takes an untrusted value (parsed JSON, or a state
 * about to be written) and a path for the message, and either returns a fresh, well-typed value
 * or throws {@link SchemaViolation}. They never recurse beyond the shape asked for, so hostile
 * nesting costs nothing.
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

/** Joins a path and a field name. */
export function at(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path === '' ? key : `${path}.${key}`;
}

/**
 * A plain object with exactly the `required` keys plus any of the `optional` ones (an optional
 * key holding `undefined` counts as absent). Returns a null-prototype copy of the known fields.
 */
export function record(
  value: unknown,
  path: string,
  required: readonly string[],
  optional: readonly string[] = [],
): Readonly<Record<string, unknown>> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new SchemaViolation(path, 'an object', value);
  }
  const src = value as Record<string, unknown>;
  const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const key of Object.keys(src)) {
    if (required.includes(key)) continue;
    if (optional.includes(key)) {
      if (src[key] !== undefined) out[key] = src[key];
      continue;
    }
    throw new SchemaViolation(
      at(path, key),
      'absent (not a field of this section version)',
      src[key],
    );
  }
  for (const key of required) {
    if (!Object.hasOwn(src, key)) throw new SchemaViolation(at(path, key), 'present', undefined);
    out[key] = src[key];
  }
  return out;
}

/** An integer in `[min, max]` (inclusive). */
export function integer(value: unknown, path: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new SchemaViolation(path, `an integer in [${min}, ${max}]`, value);
  }
  return value;
}

/** An unsigned 32-bit integer. */
export function u32(value: unknown, path: string): number {
  return integer(value, path, 0, U32_MAX);
}

/** An unsigned 8-bit integer. */
export function u8(value: unknown, path: string): number {
  return integer(value, path, 0, 0xff);
}

/** A non-negative integer that a double holds exactly (< 2^53). */
export function count(value: unknown, path: string): number {
  return integer(value, path, 0, Number.MAX_SAFE_INTEGER);
}

/** A 64-bit counter carried as a number: an integer in `[0, 2^64)`. */
export function u64(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= TWO_POW_64) {
    throw new SchemaViolation(path, 'an integer in [0, 2^64)', value);
  }
  return value;
}

/** An integer with no bits outside `mask`. */
export function bits(value: unknown, path: string, mask: number): number {
  const v = u32(value, path);
  if ((v & ~mask) !== 0) {
    throw new SchemaViolation(path, `a value with no bits outside 0x${mask.toString(16)}`, value);
  }
  return v;
}

/** A u32 that is a multiple of 4. */
export function aligned4(value: unknown, path: string): number {
  const v = u32(value, path);
  if (v % 4 !== 0) throw new SchemaViolation(path, 'a multiple of 4', value);
  return v;
}

/** A boolean. */
export function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') throw new SchemaViolation(path, 'true or false', value);
  return value;
}

/** One of the given strings. */
export function oneOf<T extends string>(value: unknown, path: string, options: readonly T[]): T {
  if (typeof value !== 'string' || !(options as readonly string[]).includes(value)) {
    throw new SchemaViolation(path, `one of ${options.map((o) => `'${o}'`).join(', ')}`, value);
  }
  return value as T;
}

/** A string matching `pattern` (described as `what`). */
export function matching(value: unknown, path: string, pattern: RegExp, what: string): string {
  if (typeof value !== 'string' || !pattern.test(value)) {
    throw new SchemaViolation(path, what, value);
  }
  return value;
}

/** An array of `min`..`max` items, each checked by `item`. The length is checked first. */
export function array<T>(
  value: unknown,
  path: string,
  min: number,
  max: number,
  item: (v: unknown, path: string) => T,
): T[] {
  if (!Array.isArray(value)) throw new SchemaViolation(path, 'an array', value);
  if (value.length < min || value.length > max) {
    const want = min === max ? `exactly ${min}` : `${min}–${max}`;
    throw new SchemaViolation(path, `an array of ${want} items`, value);
  }
  const out = new Array<T>(value.length);
  for (let k = 0; k < value.length; k++) out[k] = item(value[k], at(path, k));
  return out;
}

/** The body's `version` field: must equal the section version in the container entry. */
export function sectionVersion(value: unknown, version: number): number {
  if (value !== version) {
    throw new SchemaViolation('version', `${version}, the version in the section entry`, value);
  }
  return version;
}
