/**
 * Turning generated JavaScript source into functions, once, at module load (as protobufjs does):
 * the generators write straight-line code for one table, so the codecs run no interpreter loop
 * and allocate nothing per field beyond the values they return.
 *
 * @packageDocumentation
 */

/**
 * A JavaScript literal of `value`: a string as JSON, a number exactly (`-0`, `NaN`, `Infinity`).
 */
export function literal(value: string | number): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (Object.is(value, -0)) return '-0';
  return String(value);
}

/** The constants a generated function refers to by name, collected while it is written. */
export class Constants {
  private readonly values = new Map<unknown, string>();

  /** The name under which `value` (a function, a regular expression, a frozen array) is passed. */
  ref(value: unknown): string {
    let name = this.values.get(value);
    if (name === undefined) {
      name = `K${this.values.size}`;
      this.values.set(value, name);
    }
    return name;
  }

  /** Names and values, in matching order. */
  entries(): [string[], unknown[]] {
    return [[...this.values.values()], [...this.values.keys()]];
  }
}

/**
 * Compiles `body` — statements ending in `return function …` — with `constants` in scope, and
 * returns the function it returns. `name` labels the code in stack traces (`sourceURL`).
 */
export function compile<F>(name: string, constants: Constants, body: string): F {
  const [names, values] = constants.entries();
  const factory = new Function(
    ...names,
    `'use strict';\n${body}\n//# sourceURL=handoff-snapshot/${name}.js`,
  ) as (...args: unknown[]) => F;
  return factory(...values);
}

/** A counter of fresh local names. */
export class Locals {
  private n = 0;

  /** A fresh identifier starting with `prefix` (a letter). */
  next(prefix: string): string {
    return `${prefix}${this.n++}`;
  }
}
