/**
 * Migration parameters: the numeric tunables of one migration, named as in
 * QEMU's `qapi/migration.json` (kebab-case), with a registry (description,
 * `since`, unit, default, range), a parser for human input and a formatter
 * whose output the parser reads back.
 *
 * @packageDocumentation
 */
import { QapiError, type QapiIssue } from './errors.js';
import { didYouMean } from './suggest.js';

/**
 * Every parameter name, in registry (and proto field) order. This array is
 * the source of truth for {@link MigrationParameterName}.
 */
export const MIGRATION_PARAMETERS = [
  'downtime-limit',
  'max-bandwidth',
  'max-postcopy-bandwidth',
  'max-iterations',
  'cpu-throttle-initial',
  'cpu-throttle-increment',
] as const;

/** A migration parameter name (a QAPI `MigrationParameters` member), e.g. `downtime-limit`. */
export type MigrationParameterName = (typeof MIGRATION_PARAMETERS)[number];

/**
 * Unit of a parameter's value. Values are always integers in this unit.
 *
 * - `milliseconds` — a duration in ms.
 * - `bytes-per-second` — a rate in bytes per second (not bits).
 * - `count` — a plain number of things.
 * - `percent` — a share of vCPU time, 1–99.
 */
export type ParameterUnit = 'milliseconds' | 'bytes-per-second' | 'count' | 'percent';

/** What the registry knows about one parameter. */
export interface ParameterInfo {
  /** The kebab-case QAPI name. */
  readonly name: MigrationParameterName;
  /** One line: what the parameter controls. */
  readonly description: string;
  /** Handoff version that introduced it. */
  readonly since: string;
  /** Unit of the value. */
  readonly unit: ParameterUnit;
  /** Value when the user says nothing. */
  readonly default: number;
  /** Smallest valid value (inclusive). */
  readonly min: number;
  /** Largest valid value (inclusive). */
  readonly max: number;
  /** What 0 means, when 0 is special (e.g. `unlimited`); otherwise undefined. */
  readonly zeroMeans?: string;
  /** The closest QEMU parameter, for readers who know QEMU (`null` if none). */
  readonly qemu: string | null;
}

/** Parameter values, one per parameter (a resolved set: nothing is missing). */
export type MigrationParameters = { readonly [K in MigrationParameterName]: number };

/** Parameter values the user chose; missing ones take their registry default. */
export type MigrationParameterOverrides = Partial<MigrationParameters>;

/** Largest accepted byte rate: 2^53 − 1 (the largest exact integer of a JS number). */
const MAX_RATE = Number.MAX_SAFE_INTEGER;

/**
 * The parameter registry, keyed by name. The README table is generated from
 * it (a test keeps the two in sync).
 */
export const PARAMETER_REGISTRY: { readonly [K in MigrationParameterName]: ParameterInfo } =
  Object.freeze({
    'downtime-limit': Object.freeze({
      name: 'downtime-limit',
      description:
        'Largest acceptable guest pause (source vCPU stop to target vCPU resume); pre-copy iterates until the expected pause fits.',
      since: '0.1',
      unit: 'milliseconds',
      default: 100,
      min: 1,
      max: 2_000_000,
      qemu: 'downtime-limit',
    }),
    'max-bandwidth': Object.freeze({
      name: 'max-bandwidth',
      description: 'Rate cap for pre-copy and stop-and-copy traffic.',
      since: '0.1',
      unit: 'bytes-per-second',
      default: 0,
      min: 0,
      max: MAX_RATE,
      zeroMeans: 'unlimited',
      qemu: 'max-bandwidth',
    }),
    'max-postcopy-bandwidth': Object.freeze({
      name: 'max-postcopy-bandwidth',
      description:
        'Rate cap for the background page stream during post-copy (pages the target requests are never capped).',
      since: '0.1',
      unit: 'bytes-per-second',
      default: 0,
      min: 0,
      max: MAX_RATE,
      zeroMeans: 'unlimited',
      qemu: 'max-postcopy-bandwidth',
    }),
    'max-iterations': Object.freeze({
      name: 'max-iterations',
      description:
        'Pre-copy passes before giving up on convergence: switch to post-copy if postcopy-ram is on, otherwise fail (the source keeps running).',
      since: '0.1',
      unit: 'count',
      default: 30,
      min: 1,
      max: 1_000_000,
      qemu: null,
    }),
    'cpu-throttle-initial': Object.freeze({
      name: 'cpu-throttle-initial',
      description: 'Share of vCPU time taken away when auto-converge first throttles.',
      since: '0.1',
      unit: 'percent',
      default: 20,
      min: 1,
      max: 99,
      qemu: 'cpu-throttle-initial',
    }),
    'cpu-throttle-increment': Object.freeze({
      name: 'cpu-throttle-increment',
      description:
        'Further share of vCPU time taken away on each pass that still does not converge (capped at 99 %).',
      since: '0.1',
      unit: 'percent',
      default: 10,
      min: 1,
      max: 99,
      qemu: 'cpu-throttle-increment',
    }),
  } satisfies { [K in MigrationParameterName]: ParameterInfo & { name: K } });

/** True when `name` is a known parameter name (exact, kebab-case). */
export function isMigrationParameterName(name: unknown): name is MigrationParameterName {
  return typeof name === 'string' && Object.hasOwn(PARAMETER_REGISTRY, name);
}

/**
 * Parses a parameter name typed by a user; a leading `--` is ignored, so CLI
 * flag names work as they are.
 *
 * @throws QapiError `QAPI_INVALID_PARAMETER` for an unknown name, with a hint
 */
export function parseParameterName(input: string): MigrationParameterName {
  const name = input.trim().replace(/^--/, '');
  if (isMigrationParameterName(name)) return name;
  throw new QapiError(
    'QAPI_INVALID_PARAMETER',
    `unknown migration parameter '${input}'.${didYouMean(name, MIGRATION_PARAMETERS)} Known parameters: ${MIGRATION_PARAMETERS.join(', ')}.`,
  );
}

/** Short unit label for messages and tables: `ms`, `bytes/s`, `count`, `%`. */
export function unitLabel(unit: ParameterUnit): string {
  switch (unit) {
    case 'milliseconds':
      return 'ms';
    case 'bytes-per-second':
      return 'bytes/s';
    case 'count':
      return 'count';
    case 'percent':
      return '%';
  }
}

/** Input examples per unit, quoted in parse errors. */
const EXAMPLES: Readonly<Record<ParameterUnit, string>> = {
  milliseconds: "milliseconds such as '50', '50ms' or '0.5s'",
  'bytes-per-second':
    "bytes per second such as '104857600', '100M', '512KiB/s', '1.5G' or '125MB' (0 or 'unlimited' = no cap)",
  count: "a whole number such as '30'",
  percent: "a whole percentage such as '20' or '20%'",
};

const KIB = 1024n;
/** Byte-rate units, exact spelling → multiplier. Single letters and IEC names are ×1024; SI names ×1000. */
const BYTE_UNITS: ReadonlyMap<string, bigint> = new Map<string, bigint>([
  ['', 1n],
  ['B', 1n],
  ['K', KIB],
  ['k', KIB],
  ['KiB', KIB],
  ['M', KIB ** 2n],
  ['m', KIB ** 2n],
  ['MiB', KIB ** 2n],
  ['G', KIB ** 3n],
  ['g', KIB ** 3n],
  ['GiB', KIB ** 3n],
  ['T', KIB ** 4n],
  ['t', KIB ** 4n],
  ['TiB', KIB ** 4n],
  ['kB', 1000n],
  ['KB', 1000n],
  ['MB', 1000n ** 2n],
  ['GB', 1000n ** 3n],
  ['TB', 1000n ** 4n],
]);

const TIME_UNITS: ReadonlyMap<string, bigint> = new Map<string, bigint>([
  ['', 1n],
  ['ms', 1n],
  ['s', 1000n],
]);

const NUMBER_AND_UNIT = /^(\d+)(?:\.(\d+))?\s*(.*)$/s;

function invalid(message: string): QapiError {
  return new QapiError('QAPI_INVALID_PARAMETER', message);
}

/** Range message shared by parsing, resolving and validation; `shown` is the offending input. */
function rangeMessage(info: ParameterInfo, shown: string): string {
  const unit = info.unit === 'count' ? '' : ` ${unitLabel(info.unit)}`;
  const zero = info.zeroMeans !== undefined ? ` (0 = ${info.zeroMeans})` : '';
  return `'${info.name}' must be a whole number from ${info.min} to ${info.max}${unit}${zero}; got ${shown}. Default: ${formatParameterValue(info.name, info.default)}.`;
}

/**
 * Checks one parameter value against its registry entry without throwing.
 *
 * @returns undefined when valid, otherwise an error issue (code `QAPI_INVALID_PARAMETER`)
 */
export function checkParameterValue(
  name: MigrationParameterName,
  value: unknown,
): QapiIssue | undefined {
  const info = PARAMETER_REGISTRY[name];
  const ok =
    typeof value === 'number' &&
    Number.isSafeInteger(value) &&
    value >= info.min &&
    value <= info.max;
  if (ok) return undefined;
  const shown = typeof value === 'number' ? String(value) : JSON.stringify(value);
  return {
    severity: 'error',
    code: 'QAPI_INVALID_PARAMETER',
    rule: 'parameter-range',
    names: [name],
    message: rangeMessage(info, shown),
  };
}

/**
 * Parses one parameter value typed by a user. The grammar, per unit:
 *
 * - milliseconds: `N`, `Nms` or `Ns` (`N` may have a fraction: `0.5s`); the
 *   result must be a whole number of ms.
 * - bytes per second: `N` with an optional unit and an optional `/s`:
 *   `B`; `K` `M` `G` `T` (any case) and `KiB` `MiB` `GiB` `TiB` are ×1024;
 *   `kB`/`KB` `MB` `GB` `TB` are ×1000. Fractions are allowed (`1.5G`) and
 *   round down to a whole byte. `unlimited` means 0. Bits (`Mb`, `Gbit`) are
 *   refused: the unit is bytes.
 * - count: a whole number.
 * - percent: a whole number with an optional `%`.
 *
 * Whitespace between number and unit is allowed. Numbers given as JS numbers
 * (from JSON) must already be whole values in the parameter's unit.
 *
 * @param name - the parameter (see {@link parseParameterName} for user-typed names)
 * @param input - the text (or a number in the parameter's unit)
 * @returns the value in the parameter's unit, within its range
 * @throws QapiError `QAPI_INVALID_PARAMETER` saying what was expected
 */
export function parseParameterValue(name: MigrationParameterName, input: string | number): number {
  const info = PARAMETER_REGISTRY[name];
  if (typeof input === 'number') {
    const issue = checkParameterValue(name, input);
    if (issue !== undefined) throw invalid(issue.message);
    return input;
  }
  const text = input.trim();
  if (info.zeroMeans === 'unlimited' && text.toLowerCase() === 'unlimited') return 0;
  const m = NUMBER_AND_UNIT.exec(text);
  if (m === null) {
    throw invalid(`'${name}' expects ${EXAMPLES[info.unit]}; got '${input}'.`);
  }
  const whole = m[1] ?? '0';
  const fraction = m[2] ?? '';
  let unit = (m[3] ?? '').trim();

  let multiplier: bigint | undefined;
  let roundDown = false;
  switch (info.unit) {
    case 'milliseconds':
      multiplier = TIME_UNITS.get(unit);
      if (multiplier === undefined) {
        throw invalid(
          `'${name}' has unknown unit '${unit}' in '${input}': use ms (the default) or s, e.g. '50ms' or '0.5s'.`,
        );
      }
      break;
    case 'bytes-per-second':
      if (unit.endsWith('/s')) unit = unit.slice(0, -2).trim();
      multiplier = BYTE_UNITS.get(unit);
      if (multiplier === undefined && /^[kmgt]ib$/i.test(unit)) {
        // IEC names are unambiguous, so their case does not matter (kib = KiB).
        multiplier = BYTE_UNITS.get(`${unit.charAt(0).toUpperCase()}iB`);
      }
      if (multiplier === undefined) {
        const bits = /bit|^[kKmMgGtT]?b$/.test(unit)
          ? ' The unit is bytes, not bits (1 Gbit/s = 125MB/s).'
          : '';
        throw invalid(
          `'${name}' has unknown unit '${unit}' in '${input}'.${bits} Use B, K, M, G, T or KiB, MiB, GiB, TiB (×1024), or kB, MB, GB, TB (×1000), optionally followed by /s.`,
        );
      }
      roundDown = true;
      break;
    case 'count':
      if (unit !== '' || fraction !== '') {
        throw invalid(`'${name}' expects ${EXAMPLES.count}; got '${input}'.`);
      }
      multiplier = 1n;
      break;
    case 'percent':
      if ((unit !== '' && unit !== '%') || fraction !== '') {
        throw invalid(`'${name}' expects ${EXAMPLES.percent}; got '${input}'.`);
      }
      multiplier = 1n;
      break;
  }

  // Exact decimal arithmetic: (whole.fraction × multiplier) without float error.
  const scale = 10n ** BigInt(fraction.length);
  const scaled = (BigInt(whole) * scale + BigInt(fraction === '' ? '0' : fraction)) * multiplier;
  const quotient = scaled / scale;
  if (!roundDown && quotient * scale !== scaled) {
    throw invalid(
      `'${name}' has a resolution of 1 ${unitLabel(info.unit)}; '${input}' is not a whole number of ${unitLabel(info.unit)}. Give e.g. '${quotient}' or '${quotient + 1n}'.`,
    );
  }
  if (quotient > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw invalid(rangeMessage(info, `'${input}'`));
  }
  const value = Number(quotient);
  if (value < info.min || value > info.max) {
    const shown = String(value) === text ? String(value) : `'${input}' = ${value}`;
    throw invalid(rangeMessage(info, shown));
  }
  return value;
}

/**
 * Parses a set of parameters typed by a user (CLI flags, a JSON object):
 * names as in {@link parseParameterName}, values as in {@link parseParameterValue}.
 * `undefined` values are skipped. All problems are reported at once.
 *
 * @example `parseParameters({ 'downtime-limit': '50', 'max-bandwidth': '1G' })`
 * @returns the overrides; resolve them with {@link resolveParameters}
 * @throws QapiError `QAPI_INVALID_PARAMETER`; `issues` lists every problem
 *   (rule `parameter-parse`, `names` = the key as given)
 */
export function parseParameters(
  input: Readonly<Record<string, string | number | undefined>>,
): MigrationParameterOverrides {
  const out: Partial<Record<MigrationParameterName, number>> = {};
  const issues: QapiIssue[] = [];
  for (const [key, raw] of Object.entries(input)) {
    if (raw === undefined) continue;
    try {
      const name = parseParameterName(key);
      if (out[name] !== undefined) {
        throw invalid(`'${name}' is given twice (as '${key}'): give it once.`);
      }
      out[name] = parseParameterValue(name, raw);
    } catch (err) {
      if (!(err instanceof QapiError)) throw err;
      issues.push({
        severity: 'error',
        code: err.code,
        rule: 'parameter-parse',
        names: [key],
        message: err.message,
      });
    }
  }
  if (issues.length > 0) throw aggregate('QAPI_INVALID_PARAMETER', issues);
  return out;
}

/** One QapiError for a list of issues (the first issue's code, every message). */
export function aggregate(code: QapiError['code'], issues: readonly QapiIssue[]): QapiError {
  const first = issues[0];
  const message =
    issues.length === 1 && first !== undefined
      ? first.message
      : `${issues.length} problems: ${issues.map((i, n) => `(${n + 1}) ${i.message}`).join(' ')}`;
  return new QapiError(first?.code ?? code, message, { issues });
}

/** The default value of every parameter (a fresh object). */
export function defaultParameters(): MigrationParameters {
  const out = {} as Record<MigrationParameterName, number>;
  for (const name of MIGRATION_PARAMETERS) out[name] = PARAMETER_REGISTRY[name].default;
  return out;
}

/**
 * Fills in defaults for parameters the user did not set, checking every key
 * and range. Combinations with capabilities are checked by
 * `validateMigrationConfig`.
 *
 * @throws QapiError `QAPI_INVALID_PARAMETER`; `issues` lists every problem
 */
export function resolveParameters(
  overrides: MigrationParameterOverrides = {},
): MigrationParameters {
  const out = defaultParameters() as Record<MigrationParameterName, number>;
  const issues: QapiIssue[] = [];
  for (const [key, value] of Object.entries(overrides) as [string, unknown][]) {
    if (value === undefined) continue;
    if (!isMigrationParameterName(key)) {
      issues.push({
        severity: 'error',
        code: 'QAPI_INVALID_PARAMETER',
        rule: 'parameter-name',
        names: [key],
        message: `unknown migration parameter '${key}'.${didYouMean(key, MIGRATION_PARAMETERS)} Known parameters: ${MIGRATION_PARAMETERS.join(', ')}.`,
      });
      continue;
    }
    const issue = checkParameterValue(key, value);
    if (issue !== undefined) issues.push(issue);
    else out[key] = value as number;
  }
  if (issues.length > 0) throw aggregate('QAPI_INVALID_PARAMETER', issues);
  return out;
}

const BINARY_UNITS: readonly (readonly [string, number])[] = [
  ['TiB', 1024 ** 4],
  ['GiB', 1024 ** 3],
  ['MiB', 1024 ** 2],
  ['KiB', 1024],
];

/**
 * Formats a parameter value for people, in a form {@link parseParameterValue}
 * reads back to the same value: `100ms`, `unlimited`, `100MiB/s`,
 * `1234567B/s`, `30`, `20%`. Byte rates use the largest binary unit that
 * divides the value exactly.
 */
export function formatParameterValue(name: MigrationParameterName, value: number): string {
  const info = PARAMETER_REGISTRY[name];
  switch (info.unit) {
    case 'milliseconds':
      return `${value}ms`;
    case 'bytes-per-second': {
      if (value === 0 && info.zeroMeans !== undefined) return info.zeroMeans;
      for (const [label, size] of BINARY_UNITS) {
        if (value >= size && value % size === 0) return `${value / size}${label}/s`;
      }
      return `${value}B/s`;
    }
    case 'count':
      return String(value);
    case 'percent':
      return `${value}%`;
  }
}
