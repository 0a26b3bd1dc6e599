import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { QapiError } from './errors.js';
import {
  MIGRATION_PARAMETERS,
  PARAMETER_REGISTRY,
  checkParameterValue,
  defaultParameters,
  formatParameterValue,
  parseParameterName,
  parseParameterValue,
  parseParameters,
  resolveParameters,
  type MigrationParameterName,
} from './parameters.js';

function qapiErrorOf(fn: () => unknown): QapiError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(QapiError);
    return err as QapiError;
  }
  throw new Error('expected a QapiError, nothing was thrown');
}

const KiB = 1024;
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const TiB = 1024 ** 4;

describe('parameter registry', () => {
  it('lists the names in the same order as the registry keys', () => {
    expect(Object.keys(PARAMETER_REGISTRY)).toEqual([...MIGRATION_PARAMETERS]);
  });

  it.each(MIGRATION_PARAMETERS)('%s is complete and its default is in range', (name) => {
    const info = PARAMETER_REGISTRY[name];
    expect(info.name).toBe(name);
    expect(info.description).toMatch(/^[A-Z].*\.$/);
    expect(info.description).not.toContain('\n');
    expect(info.since).toBe('0.1');
    expect(Number.isSafeInteger(info.min) && Number.isSafeInteger(info.max)).toBe(true);
    expect(info.min).toBeLessThanOrEqual(info.default);
    expect(info.default).toBeLessThanOrEqual(info.max);
    expect(checkParameterValue(name, info.default)).toBeUndefined();
  });

  it('has the documented defaults', () => {
    expect(defaultParameters()).toEqual({
      'downtime-limit': 100,
      'max-bandwidth': 0,
      'max-postcopy-bandwidth': 0,
      'max-iterations': 30,
      'cpu-throttle-initial': 20,
      'cpu-throttle-increment': 10,
    });
  });
});

describe('parseParameterName', () => {
  it('accepts names and CLI flags', () => {
    expect(parseParameterName('downtime-limit')).toBe('downtime-limit');
    expect(parseParameterName('--max-bandwidth')).toBe('max-bandwidth');
  });

  it.each([
    ['downtime_limit', 'downtime-limit'],
    ['downtimeLimit', 'downtime-limit'],
    ['max-bandwith', 'max-bandwidth'],
    ['cpu-throttle-inital', 'cpu-throttle-initial'],
  ])('rejects %s and suggests %s', (input, hint) => {
    const err = qapiErrorOf(() => parseParameterName(input));
    expect(err.code).toBe('QAPI_INVALID_PARAMETER');
    expect(err.message).toContain(`Did you mean '${hint}'?`);
  });
});

describe('parseParameterValue accepts', () => {
  it.each<[MigrationParameterName, string, number]>([
    // milliseconds: bare number is ms
    ['downtime-limit', '50', 50],
    ['downtime-limit', '50ms', 50],
    ['downtime-limit', ' 50 ms ', 50],
    ['downtime-limit', '2s', 2000],
    ['downtime-limit', '0.5s', 500],
    ['downtime-limit', '0.05s', 50],
    ['downtime-limit', '1.000', 1],
    ['downtime-limit', '2000000', 2_000_000],
    // bytes per second: binary single letters and IEC, decimal SI, optional /s
    ['max-bandwidth', '0', 0],
    ['max-bandwidth', 'unlimited', 0],
    ['max-bandwidth', 'Unlimited', 0],
    ['max-bandwidth', '4096', 4096],
    ['max-bandwidth', '4096B', 4096],
    ['max-bandwidth', '4096B/s', 4096],
    ['max-bandwidth', '100M', 100 * MiB],
    ['max-bandwidth', '100m', 100 * MiB],
    ['max-bandwidth', '100 M', 100 * MiB],
    ['max-bandwidth', '100M/s', 100 * MiB],
    ['max-bandwidth', '1G', GiB],
    ['max-bandwidth', '1g', GiB],
    ['max-bandwidth', '2T', 2 * TiB],
    ['max-bandwidth', '8k', 8 * KiB],
    ['max-bandwidth', '8K', 8 * KiB],
    ['max-bandwidth', '512KiB/s', 512 * KiB],
    ['max-bandwidth', '512kib', 512 * KiB],
    ['max-bandwidth', '3MiB', 3 * MiB],
    ['max-bandwidth', '3GiB/s', 3 * GiB],
    ['max-bandwidth', '1TiB', TiB],
    ['max-bandwidth', '1.5G', 1.5 * GiB],
    ['max-bandwidth', '0.1K', 102],
    ['max-bandwidth', '125MB', 125_000_000],
    ['max-bandwidth', '125MB/s', 125_000_000],
    ['max-bandwidth', '1kB', 1000],
    ['max-bandwidth', '1KB', 1000],
    ['max-bandwidth', '2GB', 2_000_000_000],
    ['max-bandwidth', '1TB', 1e12],
    ['max-postcopy-bandwidth', '64M', 64 * MiB],
    ['max-postcopy-bandwidth', 'unlimited', 0],
    // counts and percentages
    ['max-iterations', '30', 30],
    ['max-iterations', '1', 1],
    ['cpu-throttle-initial', '20', 20],
    ['cpu-throttle-initial', '20%', 20],
    ['cpu-throttle-increment', '99 %', 99],
  ])('%s %j = %d', (name, input, expected) => {
    expect(parseParameterValue(name, input)).toBe(expected);
  });

  it('accepts JS numbers already in the unit', () => {
    expect(parseParameterValue('downtime-limit', 50)).toBe(50);
    expect(parseParameterValue('max-bandwidth', 0)).toBe(0);
  });
});

describe('parseParameterValue rejects', () => {
  it.each<[MigrationParameterName, string | number, RegExp]>([
    ['downtime-limit', '', /expects milliseconds such as '50', '50ms' or '0.5s'; got ''/],
    ['downtime-limit', 'fast', /expects milliseconds/],
    ['downtime-limit', '-5', /expects milliseconds/],
    ['downtime-limit', '1e3', /unknown unit 'e3'/],
    ['downtime-limit', '0', /from 1 to 2000000 ms; got 0\. Default: 100ms/],
    ['downtime-limit', '0ms', /from 1 to 2000000 ms; got '0ms' = 0/],
    ['downtime-limit', '2000001', /from 1 to 2000000 ms/],
    [
      'downtime-limit',
      '1.5',
      /resolution of 1 ms; '1\.5' is not a whole number of ms\. Give e\.g\. '1' or '2'/,
    ],
    ['downtime-limit', '0.0015s', /resolution of 1 ms/],
    ['downtime-limit', '5min', /unknown unit 'min'.*use ms \(the default\) or s/],
    ['downtime-limit', '50us', /unknown unit 'us'/],
    ['max-bandwidth', '100Mb', /unknown unit 'Mb'.*bytes, not bits/],
    ['max-bandwidth', '100mb', /bytes, not bits/],
    ['max-bandwidth', '1Gbit/s', /unknown unit 'Gbit'.*bytes, not bits/],
    ['max-bandwidth', '100b', /bytes, not bits/],
    ['max-bandwidth', '100X', /unknown unit 'X'.*Use B, K, M, G, T or KiB/],
    ['max-bandwidth', '100MiBps', /unknown unit 'MiBps'/],
    ['max-bandwidth', '-1', /expects bytes per second/],
    [
      'max-bandwidth',
      '9999999T',
      /from 0 to 9007199254740991 bytes\/s \(0 = unlimited\); got '9999999T'/,
    ],
    ['max-bandwidth', 'lots', /expects bytes per second/],
    ['max-iterations', 'unlimited', /expects a whole number such as '30'/],
    ['max-iterations', '0', /from 1 to 1000000; got 0\. Default: 30\./],
    ['max-iterations', '2.5', /expects a whole number/],
    ['max-iterations', '10x', /expects a whole number/],
    ['cpu-throttle-initial', '0', /from 1 to 99 %; got 0\. Default: 20%/],
    ['cpu-throttle-initial', '100%', /from 1 to 99 %/],
    ['cpu-throttle-initial', '12.5%', /expects a whole percentage/],
    ['cpu-throttle-increment', '5 percent', /expects a whole percentage/],
    ['downtime-limit', 1.5, /whole number from 1 to 2000000 ms; got 1\.5/],
    ['max-bandwidth', -1, /got -1/],
    ['max-bandwidth', Number.NaN, /got NaN/],
  ])('%s %j', (name, input, message) => {
    const err = qapiErrorOf(() => parseParameterValue(name, input));
    expect(err.code).toBe('QAPI_INVALID_PARAMETER');
    expect(err.message).toMatch(message);
    expect(err.message).toContain(`'${name}'`);
  });
});

describe('formatParameterValue', () => {
  it.each<[MigrationParameterName, number, string]>([
    ['downtime-limit', 100, '100ms'],
    ['max-bandwidth', 0, 'unlimited'],
    ['max-bandwidth', 100 * MiB, '100MiB/s'],
    ['max-bandwidth', 1536, '1536B/s'],
    ['max-bandwidth', 2 * TiB, '2TiB/s'],
    ['max-bandwidth', 125_000_000, '125000000B/s'],
    ['max-bandwidth', 3 * GiB, '3GiB/s'],
    ['max-iterations', 30, '30'],
    ['cpu-throttle-initial', 20, '20%'],
  ])('%s %d → %s', (name, value, text) => {
    expect(formatParameterValue(name, value)).toBe(text);
  });

  it('is read back by parseParameterValue to the same value (every parameter, whole range)', () => {
    const arb = fc.constantFrom(...MIGRATION_PARAMETERS).chain((name) => {
      const { min, max } = PARAMETER_REGISTRY[name];
      const plain = fc.integer({ min, max });
      // Exact multiples of binary units (formatted as e.g. 3GiB/s), clamped into range.
      const scaled = fc
        .tuple(fc.integer({ min: 1, max: 4096 }), fc.constantFrom(KiB, MiB, GiB, TiB))
        .map(([n, unit]) => Math.min(max, Math.max(min, n * unit)));
      return fc.tuple(fc.constant(name), fc.oneof(plain, scaled));
    });
    fc.assert(
      fc.property(arb, ([name, value]) => {
        expect(parseParameterValue(name, formatParameterValue(name, value))).toBe(value);
      }),
    );
  });
});

describe('parseParameters', () => {
  it('parses a set of named values, skipping undefined', () => {
    expect(
      parseParameters({
        '--downtime-limit': '50',
        'max-bandwidth': '1G',
        'max-iterations': 10,
        'cpu-throttle-initial': undefined,
      }),
    ).toEqual({ 'downtime-limit': 50, 'max-bandwidth': GiB, 'max-iterations': 10 });
  });

  it('reports every problem at once', () => {
    const err = qapiErrorOf(() =>
      parseParameters({ 'downtime-limit': '0', bogus: '1', 'max-bandwidth': '100Mb' }),
    );
    expect(err.code).toBe('QAPI_INVALID_PARAMETER');
    expect(err.issues.map((i) => i.names[0])).toEqual(['downtime-limit', 'bogus', 'max-bandwidth']);
    expect(err.message).toMatch(
      /^3 problems: \(1\) 'downtime-limit'.*\(2\) unknown migration parameter 'bogus'.*\(3\) 'max-bandwidth'/,
    );
  });

  it('rejects one parameter given under two spellings', () => {
    const err = qapiErrorOf(() =>
      parseParameters({ 'downtime-limit': '50', '--downtime-limit': '60' }),
    );
    expect(err.message).toContain("'downtime-limit' is given twice (as '--downtime-limit')");
  });
});

describe('resolveParameters', () => {
  it('fills defaults and keeps overrides', () => {
    expect(resolveParameters()).toEqual(defaultParameters());
    expect(resolveParameters({ 'downtime-limit': 20 })['downtime-limit']).toBe(20);
    expect(resolveParameters({ 'downtime-limit': undefined })).toEqual(defaultParameters());
  });

  it('rejects unknown names and out-of-range values, all at once', () => {
    const err = qapiErrorOf(() =>
      resolveParameters({ nope: 1, 'cpu-throttle-initial': 100, 'max-iterations': 0.5 } as never),
    );
    expect(err.code).toBe('QAPI_INVALID_PARAMETER');
    expect(err.issues.map((i) => i.rule)).toEqual([
      'parameter-name',
      'parameter-range',
      'parameter-range',
    ]);
  });

  it('rejects values that are not numbers', () => {
    const err = qapiErrorOf(() => resolveParameters({ 'downtime-limit': '50' } as never));
    expect(err.message).toContain(`got "50"`);
  });
});
