import { describe, expect, it } from 'vitest';

import { defaultCapabilities } from './capabilities.js';
import { QapiError } from './errors.js';
import { defaultParameters } from './parameters.js';
import {
  VALIDATION_RULES,
  assertValidMigrationConfig,
  validateMigrationConfig,
  type MigrationConfigInput,
} from './validate.js';

interface Case {
  readonly name: string;
  readonly input: MigrationConfigInput;
  /** Rules expected as errors, in order. */
  readonly errors: readonly string[];
  /** Rules expected as warnings, in order. */
  readonly warnings: readonly string[];
}

const M = 1024 ** 2;

const CASES: readonly Case[] = [
  { name: 'defaults', input: {}, errors: [], warnings: [] },
  {
    name: 'bypass-shared-memory + postcopy-ram is allowed (unlike QEMU x-ignore-shared)',
    input: { capabilities: { 'bypass-shared-memory': true, 'postcopy-ram': true } },
    errors: [],
    warnings: [],
  },
  {
    name: 'auto-converge + postcopy-ram is allowed',
    input: { capabilities: { 'auto-converge': true, 'postcopy-ram': true } },
    errors: [],
    warnings: [],
  },
  {
    name: 'pause-before-switchover + postcopy-ram + events is allowed',
    input: {
      capabilities: { 'pause-before-switchover': true, 'postcopy-ram': true, events: true },
    },
    errors: [],
    warnings: [],
  },
  {
    name: 'pause-before-switchover without events warns',
    input: { capabilities: { 'pause-before-switchover': true } },
    errors: [],
    warnings: ['pause-without-events'],
  },
  {
    name: 'postcopy-ram needs return-path',
    input: { capabilities: { 'postcopy-ram': true, 'return-path': false } },
    errors: ['postcopy-needs-return-path'],
    warnings: [],
  },
  {
    name: 'return-path off without postcopy warns',
    input: { capabilities: { 'return-path': false } },
    errors: [],
    warnings: ['return-path-off'],
  },
  {
    name: 'max-postcopy-bandwidth without postcopy-ram warns',
    input: { parameters: { 'max-postcopy-bandwidth': 64 * M } },
    errors: [],
    warnings: ['postcopy-bandwidth-unused'],
  },
  {
    name: 'max-postcopy-bandwidth with postcopy-ram is fine',
    input: {
      capabilities: { 'postcopy-ram': true },
      parameters: { 'max-postcopy-bandwidth': 64 * M },
    },
    errors: [],
    warnings: [],
  },
  {
    name: 'max-postcopy-bandwidth at its default does not warn',
    input: { parameters: { 'max-postcopy-bandwidth': 0 } },
    errors: [],
    warnings: [],
  },
  {
    name: 'cpu throttle parameters with auto-converge turned off warn',
    input: {
      capabilities: { 'auto-converge': false },
      parameters: { 'cpu-throttle-initial': 30, 'cpu-throttle-increment': 5 },
    },
    errors: [],
    warnings: ['throttle-unused'],
  },
  {
    name: 'cpu throttle parameters with auto-converge are fine',
    input: {
      capabilities: { 'auto-converge': true },
      parameters: { 'cpu-throttle-initial': 30, 'cpu-throttle-increment': 5 },
    },
    errors: [],
    warnings: [],
  },
  {
    name: 'a throttle parameter set to its default does not warn',
    input: { parameters: { 'cpu-throttle-initial': 20 } },
    errors: [],
    warnings: [],
  },
  {
    name: 'unknown capability',
    input: { capabilities: { 'x-ignore-shared': true } as never },
    errors: ['capability-name'],
    warnings: [],
  },
  {
    name: 'capability state that is not a boolean',
    input: { capabilities: { events: 'yes' } as never },
    errors: ['capability-state'],
    warnings: [],
  },
  {
    name: 'unknown parameter',
    input: { parameters: { downtime: 50 } as never },
    errors: ['parameter-name'],
    warnings: [],
  },
  {
    name: 'parameters out of range, fractional, not a number',
    input: {
      parameters: {
        'downtime-limit': 0,
        'cpu-throttle-initial': 100,
        'max-iterations': 1.5,
        'max-bandwidth': -1,
        'cpu-throttle-increment': Number.NaN,
      },
    },
    errors: [
      'parameter-range',
      'parameter-range',
      'parameter-range',
      'parameter-range',
      'parameter-range',
    ],
    warnings: [],
  },
  {
    name: 'everything wrong at once',
    input: {
      capabilities: {
        'postcopy-ram': false,
        'return-path': false,
        'pause-before-switchover': true,
        'auto-converge': false,
      },
      parameters: {
        'max-postcopy-bandwidth': M,
        'cpu-throttle-increment': 50,
        'downtime-limit': 0,
      },
    },
    errors: ['parameter-range'],
    warnings: [
      'return-path-off',
      'pause-without-events',
      'postcopy-bandwidth-unused',
      'throttle-unused',
    ],
  },
];

describe('validateMigrationConfig', () => {
  it.each(CASES)('$name', ({ input, errors, warnings }) => {
    const result = validateMigrationConfig(input);
    expect(result.errors.map((i) => i.rule)).toEqual(errors);
    expect(result.warnings.map((i) => i.rule)).toEqual(warnings);
    expect(result.ok).toBe(errors.length === 0);
    for (const issue of [...result.errors, ...result.warnings]) {
      expect(issue.names.length).toBeGreaterThan(0);
      expect(issue.message.length).toBeGreaterThan(20);
    }
    for (const issue of result.errors) expect(issue.severity).toBe('error');
    for (const issue of result.warnings) expect(issue.severity).toBe('warning');
  });

  it('exercises every rule in VALIDATION_RULES', () => {
    const fired = new Set(CASES.flatMap((c) => [...c.errors, ...c.warnings]));
    expect([...fired].sort()).toEqual(VALIDATION_RULES.map((r) => r.id).sort());
  });

  it('issues carry the code and severity their rule declares', () => {
    for (const c of CASES) {
      const r = validateMigrationConfig(c.input);
      for (const issue of [...r.errors, ...r.warnings]) {
        const rule = VALIDATION_RULES.find((x) => x.id === issue.rule);
        expect(rule).toBeDefined();
        expect(issue.code).toBe(rule?.code);
        expect(issue.severity).toBe(rule?.severity);
      }
    }
  });

  it('says what to do', () => {
    const [err] = validateMigrationConfig(CASES[5]?.input).errors;
    expect(err?.message).toBe(
      'postcopy-ram needs return-path: the target requests missing pages over it. Turn return-path on (the default) or turn postcopy-ram off.',
    );
    const [warn] = validateMigrationConfig({
      capabilities: { 'auto-converge': false },
      parameters: { 'cpu-throttle-initial': 30, 'cpu-throttle-increment': 5 },
    }).warnings;
    expect(warn?.message).toBe(
      'cpu-throttle-initial and cpu-throttle-increment have no effect while auto-converge is off. Turn auto-converge on, or drop them.',
    );
    expect(warn?.names).toEqual([
      'cpu-throttle-initial',
      'cpu-throttle-increment',
      'auto-converge',
    ]);
  });

  it('resolves the configuration, leaving invalid entries at their defaults', () => {
    const r = validateMigrationConfig({
      capabilities: { 'postcopy-ram': true, events: 'yes' } as never,
      parameters: { 'downtime-limit': 20, 'max-iterations': 0 },
    });
    expect(r.capabilities).toEqual({ ...defaultCapabilities(), 'postcopy-ram': true });
    expect(r.parameters).toEqual({ ...defaultParameters(), 'downtime-limit': 20 });
  });

  it('ignores undefined entries', () => {
    const r = validateMigrationConfig({
      capabilities: { events: undefined },
      parameters: { 'downtime-limit': undefined },
    });
    expect(r.ok).toBe(true);
    expect(r.warnings).toEqual([]);
  });
});

describe('assertValidMigrationConfig', () => {
  it('returns the resolved configuration and its warnings', () => {
    const out = assertValidMigrationConfig({
      capabilities: { 'postcopy-ram': true, 'bypass-shared-memory': true, 'auto-converge': false },
      parameters: { 'downtime-limit': 50, 'cpu-throttle-initial': 40 },
    });
    expect(out.capabilities['postcopy-ram']).toBe(true);
    expect(out.parameters['downtime-limit']).toBe(50);
    expect(out.warnings.map((w) => w.rule)).toEqual(['throttle-unused']);
  });

  it('throws one QapiError with the first error code and every error', () => {
    let caught: unknown;
    try {
      assertValidMigrationConfig({
        capabilities: { 'postcopy-ram': true, 'return-path': false },
        parameters: { 'downtime-limit': 0 },
      });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(QapiError);
    const err = caught as QapiError;
    expect(err.code).toBe('QAPI_INVALID_PARAMETER');
    expect(err.issues.map((i) => i.rule)).toEqual([
      'parameter-range',
      'postcopy-needs-return-path',
    ]);
    expect(err.message).toMatch(
      /^2 problems: \(1\) 'downtime-limit'.*\(2\) postcopy-ram needs return-path/,
    );
  });

  it('uses QAPI_INCOMPATIBLE for a combination error', () => {
    expect(() =>
      assertValidMigrationConfig({ capabilities: { 'postcopy-ram': true, 'return-path': false } }),
    ).toThrow(expect.objectContaining({ code: 'QAPI_INCOMPATIBLE' }));
  });
});
