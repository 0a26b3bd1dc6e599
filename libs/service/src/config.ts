import { parseArgs } from 'node:util';
import { ServiceError } from './errors.js';

/**
 * Configuration from command-line flags and `HANDOFF_*` environment
 * variables. Precedence: flag, then environment, then default.
 */

/** One option: its flag is `--<name>`, its variable `HANDOFF_<PREFIX>_<NAME>` or `env`. */
export type OptionSpec =
  | { type: 'string'; default?: string; env?: string; description: string }
  | {
      type: 'number';
      default?: number;
      env?: string;
      description: string;
      min?: number;
      max?: number;
    }
  | { type: 'boolean'; default?: boolean; env?: string; description: string };

export type ConfigSpec = Record<string, OptionSpec>;

type ValueOf<O extends OptionSpec> = O extends { type: 'number' }
  ? number
  : O extends { type: 'boolean' }
    ? boolean
    : string;

/** The parsed config: every option with a default is present. */
export type ConfigOf<S extends ConfigSpec> = {
  [K in keyof S]: S[K] extends { default: unknown } ? ValueOf<S[K]> : ValueOf<S[K]> | undefined;
};

/** Environment variable name for an option: `--log-level` of memstore -> HANDOFF_MEMSTORE_LOG_LEVEL. */
export function envName(prefix: string, option: string, spec: OptionSpec): string {
  if (spec.env !== undefined) return spec.env;
  const parts = ['HANDOFF', prefix, option].filter((p) => p !== '');
  return parts.join('_').replaceAll('-', '_').toUpperCase();
}

/**
 * Parses argv and env against a spec. Throws ServiceError(SERVICE_INVALID_CONFIG)
 * with a message naming the flag or variable and the expected form.
 */
export function parseConfig<S extends ConfigSpec>(
  spec: S,
  opts: { prefix: string; argv?: string[]; env?: NodeJS.ProcessEnv },
): ConfigOf<S> {
  const argv = opts.argv ?? process.argv.slice(2);
  const env = opts.env ?? process.env;
  const parseOptions: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const [name, o] of Object.entries(spec)) {
    parseOptions[name] = { type: o.type === 'boolean' ? 'boolean' : 'string' };
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: argv, options: parseOptions, strict: true, allowPositionals: false })
      .values as Record<string, string | boolean | undefined>;
  } catch (err) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `${(err as Error).message}; run with --help to list the options`,
    );
  }
  const out: Record<string, unknown> = {};
  for (const [name, o] of Object.entries(spec)) {
    const variable = envName(opts.prefix, name, o);
    const fromFlag = values[name];
    const fromEnv = env[variable];
    const source = fromFlag !== undefined ? `--${name}` : variable;
    const raw = fromFlag ?? (fromEnv === '' ? undefined : fromEnv);
    if (raw === undefined) {
      out[name] = o.default;
      continue;
    }
    out[name] = convert(o, raw, source);
  }
  return out as ConfigOf<S>;
}

function convert(o: OptionSpec, raw: string | boolean, source: string): unknown {
  switch (o.type) {
    case 'string':
      return String(raw);
    case 'boolean': {
      if (typeof raw === 'boolean') return raw;
      const v = raw.toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(v)) return true;
      if (['0', 'false', 'no', 'off'].includes(v)) return false;
      throw new ServiceError(
        'SERVICE_INVALID_CONFIG',
        `${source}=${raw} is not a boolean; use true or false`,
      );
    }
    case 'number': {
      const n = Number(raw);
      if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(n)) {
        throw new ServiceError(
          'SERVICE_INVALID_CONFIG',
          `${source}=${String(raw)} is not a number`,
        );
      }
      if ((o.min !== undefined && n < o.min) || (o.max !== undefined && n > o.max)) {
        throw new ServiceError(
          'SERVICE_INVALID_CONFIG',
          `${source}=${n} is out of range; use a value in [${o.min ?? '-inf'}, ${o.max ?? 'inf'}]`,
        );
      }
      return n;
    }
  }
}

/** `--help` text: one line per option with its variable and default. */
export function helpText(title: string, usage: string, spec: ConfigSpec, prefix: string): string {
  const lines = [
    title,
    '',
    `Usage: ${usage}`,
    '',
    'Options (flag, environment variable, default):',
  ];
  for (const [name, o] of Object.entries(spec)) {
    const def = o.default === undefined ? '' : ` (default: ${String(o.default)})`;
    const flag = o.type === 'boolean' ? `--${name}` : `--${name} <${o.type}>`;
    lines.push(`  ${flag.padEnd(28)} ${envName(prefix, name, o)}`);
    lines.push(`      ${o.description}${def}`);
  }
  lines.push('  --help                       print this help');
  return lines.join('\n');
}
