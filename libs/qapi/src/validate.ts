/**
 * Validation of a whole capability + parameter set: unknown names, ranges
 * and the combination rules in {@link VALIDATION_RULES}. Returns every
 * problem at once (errors and warnings); {@link assertValidMigrationConfig}
 * is the throwing variant.
 *
 * @packageDocumentation
 */
import {
  CAPABILITY_REGISTRY,
  MIGRATION_CAPABILITIES,
  isMigrationCapability,
  type MigrationCapabilities,
  type MigrationCapability,
  type MigrationCapabilityOverrides,
} from './capabilities.js';
import type { QapiErrorCode, QapiIssue } from './errors.js';
import {
  MIGRATION_PARAMETERS,
  PARAMETER_REGISTRY,
  aggregate,
  checkParameterValue,
  isMigrationParameterName,
  type MigrationParameterName,
  type MigrationParameterOverrides,
  type MigrationParameters,
} from './parameters.js';
import { didYouMean } from './suggest.js';

/** A rule {@link validateMigrationConfig} applies, for documentation and tests. */
export interface ValidationRule {
  /** Stable kebab-case id; appears as `rule` on the issues it raises. */
  readonly id: string;
  /** `error` blocks the migration; `warning` is advice. */
  readonly severity: 'error' | 'warning';
  /** Code of the issues it raises. */
  readonly code: QapiErrorCode;
  /** One line: when it fires. */
  readonly summary: string;
}

/**
 * Every rule, in the order they are checked. Combinations not listed here
 * are allowed — notably `bypass-shared-memory` + `postcopy-ram` (QEMU
 * refuses `x-ignore-shared` with postcopy; Handoff serves missing pages of
 * private blocks by post-copy while shared blocks move by reference),
 * `pause-before-switchover` + `postcopy-ram` (the pause comes before the
 * switch into post-copy, as in QEMU) and `auto-converge` + `postcopy-ram`
 * (throttling applies to the pre-copy phase).
 */
export const VALIDATION_RULES: readonly ValidationRule[] = Object.freeze([
  {
    id: 'capability-name',
    severity: 'error',
    code: 'QAPI_INVALID_CAPABILITY',
    summary: 'A capability name is unknown.',
  },
  {
    id: 'capability-state',
    severity: 'error',
    code: 'QAPI_INVALID_CAPABILITY',
    summary: 'A capability state is not a boolean.',
  },
  {
    id: 'parameter-name',
    severity: 'error',
    code: 'QAPI_INVALID_PARAMETER',
    summary: 'A parameter name is unknown.',
  },
  {
    id: 'parameter-range',
    severity: 'error',
    code: 'QAPI_INVALID_PARAMETER',
    summary: 'A parameter value is not a whole number within its range.',
  },
  {
    id: 'postcopy-needs-return-path',
    severity: 'error',
    code: 'QAPI_INCOMPATIBLE',
    summary:
      '`postcopy-ram` is on and `return-path` is off: post-copy page requests travel on the return path.',
  },
  {
    id: 'return-path-off',
    severity: 'warning',
    code: 'QAPI_INCOMPATIBLE',
    summary:
      '`return-path` is off (without `postcopy-ram`): the source finishes without the target confirming that it resumed the guest.',
  },
  {
    id: 'pause-without-events',
    severity: 'warning',
    code: 'QAPI_INCOMPATIBLE',
    summary:
      '`pause-before-switchover` is on and `events` is off: nothing announces that the migration waits in pre-switchover.',
  },
  {
    id: 'postcopy-bandwidth-unused',
    severity: 'warning',
    code: 'QAPI_INCOMPATIBLE',
    summary:
      '`max-postcopy-bandwidth` differs from its default while `postcopy-ram` is off: it has no effect.',
  },
  {
    id: 'throttle-unused',
    severity: 'warning',
    code: 'QAPI_INCOMPATIBLE',
    summary:
      '`cpu-throttle-initial` or `cpu-throttle-increment` differs from its default while `auto-converge` is off: it has no effect.',
  },
] satisfies ValidationRule[]);

/** What to validate: the user's choices; anything missing takes its default. */
export interface MigrationConfigInput {
  /** Capability states the user chose. */
  readonly capabilities?: MigrationCapabilityOverrides;
  /** Parameter values the user chose. */
  readonly parameters?: MigrationParameterOverrides;
}

/** A complete, resolved configuration. */
export interface MigrationConfig {
  /** Every capability's state. */
  readonly capabilities: MigrationCapabilities;
  /** Every parameter's value. */
  readonly parameters: MigrationParameters;
}

/** Outcome of {@link validateMigrationConfig}. */
export interface ValidationResult extends MigrationConfig {
  /** True when there are no errors (warnings allowed). */
  readonly ok: boolean;
  /** Problems that block the migration. */
  readonly errors: readonly QapiIssue[];
  /** Advice: settings with no effect or with risks. */
  readonly warnings: readonly QapiIssue[];
}

/** Outcome of {@link assertValidMigrationConfig}: the resolved config and its warnings. */
export interface ValidatedMigrationConfig extends MigrationConfig {
  /** Advice the caller should show the user. */
  readonly warnings: readonly QapiIssue[];
}

const RULES_BY_ID = new Map(VALIDATION_RULES.map((r) => [r.id, r]));

function issue(rule: string, names: readonly string[], message: string): QapiIssue {
  const r = RULES_BY_ID.get(rule);
  if (r === undefined) throw new Error(`qapi: validation rule '${rule}' is not registered`);
  return Object.freeze({ severity: r.severity, code: r.code, rule, names, message });
}

/**
 * Validates a capability + parameter set without throwing: unknown names,
 * ranges and every combination rule of {@link VALIDATION_RULES}. Invalid
 * entries are left at their defaults in the returned resolved config.
 *
 * @param input - the user's choices (e.g. from `parseCapabilitySettings` and `parseParameters`)
 */
export function validateMigrationConfig(input: MigrationConfigInput = {}): ValidationResult {
  const found: QapiIssue[] = [];

  const caps: Record<MigrationCapability, boolean> = {} as Record<MigrationCapability, boolean>;
  for (const name of MIGRATION_CAPABILITIES) caps[name] = CAPABILITY_REGISTRY[name].default;
  for (const [key, value] of Object.entries(input.capabilities ?? {}) as [string, unknown][]) {
    if (value === undefined) continue;
    if (!isMigrationCapability(key)) {
      found.push(
        issue(
          'capability-name',
          [key],
          `unknown migration capability '${key}'.${didYouMean(key, MIGRATION_CAPABILITIES)} Known capabilities: ${MIGRATION_CAPABILITIES.join(', ')}.`,
        ),
      );
    } else if (typeof value !== 'boolean') {
      found.push(
        issue(
          'capability-state',
          [key],
          `capability '${key}' has state ${JSON.stringify(value)}: a capability is true (on) or false (off).`,
        ),
      );
    } else {
      caps[key] = value;
    }
  }

  const params: Record<MigrationParameterName, number> = {} as Record<
    MigrationParameterName,
    number
  >;
  for (const name of MIGRATION_PARAMETERS) params[name] = PARAMETER_REGISTRY[name].default;
  for (const [key, value] of Object.entries(input.parameters ?? {}) as [string, unknown][]) {
    if (value === undefined) continue;
    if (!isMigrationParameterName(key)) {
      found.push(
        issue(
          'parameter-name',
          [key],
          `unknown migration parameter '${key}'.${didYouMean(key, MIGRATION_PARAMETERS)} Known parameters: ${MIGRATION_PARAMETERS.join(', ')}.`,
        ),
      );
      continue;
    }
    const bad = checkParameterValue(key, value);
    if (bad !== undefined) found.push(bad);
    else params[key] = value as number;
  }

  const isDefault = (name: MigrationParameterName): boolean =>
    params[name] === PARAMETER_REGISTRY[name].default;

  if (caps['postcopy-ram'] && !caps['return-path']) {
    found.push(
      issue(
        'postcopy-needs-return-path',
        ['postcopy-ram', 'return-path'],
        `postcopy-ram needs return-path: the target requests missing pages over it. Turn return-path on (the default) or turn postcopy-ram off.`,
      ),
    );
  } else if (!caps['return-path']) {
    found.push(
      issue(
        'return-path-off',
        ['return-path'],
        `return-path is off: the source finishes without the target confirming that it resumed the guest, so a failure on the target after switchover goes unnoticed by the source. Leave return-path on (the default) unless nothing can answer, e.g. when saving to a file.`,
      ),
    );
  }
  if (caps['pause-before-switchover'] && !caps.events) {
    found.push(
      issue(
        'pause-without-events',
        ['pause-before-switchover', 'events'],
        `pause-before-switchover is on but events is off: nothing will announce that the migration is waiting in pre-switchover. Turn events on, or poll for status pre-switchover before sending continue.`,
      ),
    );
  }
  if (!caps['postcopy-ram'] && !isDefault('max-postcopy-bandwidth')) {
    found.push(
      issue(
        'postcopy-bandwidth-unused',
        ['max-postcopy-bandwidth', 'postcopy-ram'],
        `max-postcopy-bandwidth has no effect while postcopy-ram is off. Turn postcopy-ram on, or drop max-postcopy-bandwidth (use max-bandwidth to cap pre-copy).`,
      ),
    );
  }
  if (!caps['auto-converge']) {
    const unused = (['cpu-throttle-initial', 'cpu-throttle-increment'] as const).filter(
      (n) => !isDefault(n),
    );
    if (unused.length > 0) {
      found.push(
        issue(
          'throttle-unused',
          [...unused, 'auto-converge'],
          `${unused.join(' and ')} ${unused.length === 1 ? 'has' : 'have'} no effect while auto-converge is off. Turn auto-converge on, or drop ${unused.length === 1 ? 'it' : 'them'}.`,
        ),
      );
    }
  }

  const errors = Object.freeze(found.filter((i) => i.severity === 'error'));
  const warnings = Object.freeze(found.filter((i) => i.severity === 'warning'));
  return {
    ok: errors.length === 0,
    errors,
    warnings,
    capabilities: Object.freeze(caps),
    parameters: Object.freeze(params),
  };
}

/**
 * Validates like {@link validateMigrationConfig} and throws on any error.
 *
 * @returns the resolved configuration and its warnings (show them to the user)
 * @throws QapiError with the code of the first error (`QAPI_INVALID_CAPABILITY`,
 *   `QAPI_INVALID_PARAMETER` or `QAPI_INCOMPATIBLE`); the message lists every
 *   error and `issues` holds them
 */
export function assertValidMigrationConfig(
  input: MigrationConfigInput = {},
): ValidatedMigrationConfig {
  const result = validateMigrationConfig(input);
  if (!result.ok) throw aggregate('QAPI_INCOMPATIBLE', result.errors);
  return {
    capabilities: result.capabilities,
    parameters: result.parameters,
    warnings: result.warnings,
  };
}
