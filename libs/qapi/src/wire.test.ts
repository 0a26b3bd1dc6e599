import { migration, migrator } from '@handoff/proto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { MIGRATION_CAPABILITIES, type MigrationCapabilities } from './capabilities.js';
import { QapiError } from './errors.js';
import { emptyMigrationInfo, type MigrationInfo } from './info.js';
import {
  MIGRATION_PARAMETERS,
  PARAMETER_REGISTRY,
  defaultParameters,
  type MigrationParameterOverrides,
} from './parameters.js';
import { MIGRATION_STATUSES } from './status.js';
import {
  CAPABILITY_TO_WIRE,
  STATUS_TO_WIRE,
  capabilitiesFromWire,
  capabilitiesToWire,
  capabilityFromWire,
  capabilityToWire,
  migrationInfoFromWire,
  migrationInfoToWire,
  parametersFromWire,
  parametersToWire,
  ramStatsFromWire,
  statusFromWire,
  statusToWire,
  type WireMigrationInfo,
  type WireMigrationParameters,
} from './wire.js';

function qapiErrorOf(fn: () => unknown): QapiError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(QapiError);
    return err as QapiError;
  }
  throw new Error('expected a QapiError, nothing was thrown');
}

/** Numeric members of a ts-proto enum, minus UNSPECIFIED (0) and UNRECOGNIZED (-1). */
function meaningfulValues(e: Record<string, string | number>): number[] {
  return Object.values(e).filter((v): v is number => typeof v === 'number' && v > 0);
}

/** Encodes and decodes through protobuf bytes, as a real peer would. */
function overTheWire<T>(
  fns: { encode(m: T): { finish(): Uint8Array }; decode(b: Uint8Array): T },
  m: T,
): T {
  return fns.decode(fns.encode(m).finish());
}

describe('capabilities on the wire', () => {
  it.each(MIGRATION_CAPABILITIES)('%s round-trips', (name) => {
    expect(capabilityFromWire(capabilityToWire(name))).toBe(name);
  });

  it('maps every meaningful wire value to a distinct name', () => {
    const values = meaningfulValues(migration.MigrationCapability);
    expect(values.map(capabilityFromWire).sort()).toEqual([...MIGRATION_CAPABILITIES].sort());
    expect(Object.values(CAPABILITY_TO_WIRE).sort()).toEqual(values.sort());
  });

  it('uses the wire names that match the kebab names', () => {
    for (const name of MIGRATION_CAPABILITIES) {
      expect(migration.migrationCapabilityToJSON(capabilityToWire(name))).toBe(
        `MIGRATION_CAPABILITY_${name.toUpperCase().replace(/-/g, '_')}`,
      );
    }
  });

  it.each([
    [0, /0 \(MIGRATION_CAPABILITY_UNSPECIFIED\) has no meaning/],
    [-1, /capability -1 has no meaning/],
    [99, /capability 99 has no meaning.*If the peer is newer, upgrade this side/],
  ])('rejects wire value %d', (value, message) => {
    const err = qapiErrorOf(() => capabilityFromWire(value));
    expect(err.code).toBe('QAPI_INVALID_WIRE_VALUE');
    expect(err.message).toMatch(message);
  });

  it('rejects encoding an unknown name', () => {
    expect(qapiErrorOf(() => capabilityToWire('postcopy' as never)).code).toBe(
      'QAPI_INVALID_CAPABILITY',
    );
  });

  it('round-trips all 128 capability sets through protobuf bytes', () => {
    for (let mask = 0; mask < 1 << MIGRATION_CAPABILITIES.length; mask++) {
      const caps = Object.fromEntries(
        MIGRATION_CAPABILITIES.map((name, i) => [name, (mask & (1 << i)) !== 0]),
      ) as MigrationCapabilities;
      const wire = capabilitiesToWire(caps);
      expect(wire).toHaveLength(MIGRATION_CAPABILITIES.filter((n) => caps[n]).length);
      // Carried as the repeated field of a real request (packed enum on the wire).
      const request = overTheWire(
        migrator.MigrateRequest,
        migrator.MigrateRequest.fromPartial({ vm: 'vm1', capabilities: wire }),
      );
      expect(capabilitiesFromWire(request.capabilities)).toEqual(caps);
    }
  });

  it('reads an empty list as everything off and tolerates repeats', () => {
    expect(Object.values(capabilitiesFromWire([])).every((v) => v === false)).toBe(true);
    const events = migration.MigrationCapability.MIGRATION_CAPABILITY_EVENTS;
    expect(capabilitiesFromWire([events, events]).events).toBe(true);
    expect(qapiErrorOf(() => capabilitiesFromWire([events, 0])).code).toBe(
      'QAPI_INVALID_WIRE_VALUE',
    );
  });
});

describe('status on the wire', () => {
  it.each(MIGRATION_STATUSES)('%s round-trips', (status) => {
    expect(statusFromWire(statusToWire(status))).toBe(status);
    expect(migration.migrationStatusToJSON(statusToWire(status))).toBe(
      `MIGRATION_STATUS_${status.toUpperCase().replace(/-/g, '_')}`,
    );
  });

  it('maps every meaningful wire value to a distinct name', () => {
    const values = meaningfulValues(migration.MigrationStatus);
    expect(values.map(statusFromWire).sort()).toEqual([...MIGRATION_STATUSES].sort());
    expect(Object.values(STATUS_TO_WIRE).sort((a, b) => a - b)).toEqual(
      values.sort((a, b) => a - b),
    );
  });

  it.each([0, -1, 13, 1.5])('rejects wire value %d', (value) => {
    const err = qapiErrorOf(() => statusFromWire(value));
    expect(err.code).toBe('QAPI_INVALID_WIRE_VALUE');
    expect(err.message).toContain('has no meaning');
  });

  it('rejects encoding an unknown name', () => {
    expect(qapiErrorOf(() => statusToWire('running' as never)).code).toBe('QAPI_INVALID_STATUS');
  });
});

const overridesArb: fc.Arbitrary<MigrationParameterOverrides> = fc.record(
  Object.fromEntries(
    MIGRATION_PARAMETERS.map((name) => {
      const { min, max } = PARAMETER_REGISTRY[name];
      // 0 on the wire means "default", so a set value of 0 reads back as unset.
      return [name, fc.integer({ min: Math.max(min, 1), max })];
    }),
  ) as Record<string, fc.Arbitrary<number>>,
  { requiredKeys: [] },
);

describe('parameters on the wire', () => {
  it('round-trips any set of overrides through protobuf bytes', () => {
    fc.assert(
      fc.property(overridesArb, (overrides) => {
        const wire = overTheWire(migration.MigrationParameters, parametersToWire(overrides));
        expect(parametersFromWire(wire)).toEqual(overrides);
      }),
      { numRuns: 300 },
    );
  });

  it('carries ms and bytes as bigint, the rest as numbers, and unset as 0', () => {
    expect(
      parametersToWire({ 'downtime-limit': 50, 'max-bandwidth': 2 ** 40, 'max-iterations': 5 }),
    ).toEqual({
      downtimeLimitMs: 50n,
      maxBandwidth: 2n ** 40n,
      maxPostcopyBandwidth: 0n,
      maxIterations: 5,
      cpuThrottleInitial: 0,
      cpuThrottleIncrement: 0,
    });
  });

  it('pins every value when given a resolved set', () => {
    const wire = parametersToWire(defaultParameters());
    expect(wire.downtimeLimitMs).toBe(100n);
    expect(wire.cpuThrottleInitial).toBe(20);
    // Bandwidth defaults are 0 = unlimited, which is also "unset": same meaning.
    expect(parametersFromWire(wire)).toEqual({
      'downtime-limit': 100,
      'max-iterations': 30,
      'cpu-throttle-initial': 20,
      'cpu-throttle-increment': 10,
    });
  });

  it('reads an all-zero message as no overrides', () => {
    expect(parametersFromWire(migration.MigrationParameters.fromPartial({}))).toEqual({});
  });

  it('rejects out-of-range values in both directions', () => {
    expect(qapiErrorOf(() => parametersToWire({ 'cpu-throttle-initial': 100 })).code).toBe(
      'QAPI_INVALID_PARAMETER',
    );
    const hostile: WireMigrationParameters = {
      ...migration.MigrationParameters.fromPartial({}),
      cpuThrottleInitial: 150,
    };
    const err = qapiErrorOf(() => parametersFromWire(hostile));
    expect(err.code).toBe('QAPI_INVALID_PARAMETER');
    expect(err.message).toContain("'cpu-throttle-initial' must be a whole number from 1 to 99");
  });

  it('rejects a uint64 beyond 2^53 - 1', () => {
    const hostile: WireMigrationParameters = {
      ...migration.MigrationParameters.fromPartial({}),
      maxBandwidth: 2n ** 63n,
    };
    const err = qapiErrorOf(() =>
      parametersFromWire(overTheWire(migration.MigrationParameters, hostile)),
    );
    expect(err.code).toBe('QAPI_INVALID_WIRE_VALUE');
    expect(err.message).toContain('MigrationParameters.maxBandwidth = 9223372036854775808');
  });
});

const counter = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const infoArb: fc.Arbitrary<MigrationInfo> = fc
  .record({
    status: fc.constantFrom(...MIGRATION_STATUSES),
    ram: fc.record({
      transferred: counter,
      remaining: counter,
      total: counter,
      duplicate: counter,
      zeroPages: counter,
      normal: counter,
      normalBytes: counter,
      dirtyPagesRate: counter,
      // mbps travels as mbps × 1000: generate values on that grid.
      mbps: fc.integer({ min: 0, max: 10_000_000_000 }).map((x) => x / 1000),
      dirtySyncCount: counter,
      bypassedBytes: counter,
    }),
    totalTimeMs: counter,
    setupTimeMs: counter,
    expectedDowntimeMs: counter,
    downtimeUs: counter,
    iteration: fc.integer({ min: 0, max: 0xffff_ffff }),
    deviceBytes: counter,
    cpuThrottlePercentage: fc.integer({ min: 0, max: 9999 }).map((x) => x / 100),
    errorDesc: fc.option(fc.string({ minLength: 1 }), { nil: undefined }),
  })
  .map(({ errorDesc, ...rest }) => (errorDesc === undefined ? rest : { ...rest, errorDesc }));

describe('MigrationInfo on the wire', () => {
  it('round-trips any info through protobuf bytes', () => {
    fc.assert(
      fc.property(infoArb, (info) => {
        const wire = overTheWire(migration.MigrationInfo, migrationInfoToWire(info));
        expect(migrationInfoFromWire(wire)).toEqual(info);
      }),
      { numRuns: 300 },
    );
  });

  it('round-trips every status', () => {
    for (const status of MIGRATION_STATUSES) {
      const info = emptyMigrationInfo(status);
      expect(migrationInfoFromWire(migrationInfoToWire(info))).toEqual(info);
    }
  });

  it('maps fields by meaning: downtime in µs, mbps as fixed point, error-desc as a string', () => {
    const wire = migrationInfoToWire({
      ...emptyMigrationInfo('failed'),
      downtimeUs: 3412,
      ram: { ...emptyMigrationInfo().ram, mbps: 812.5004, bypassedBytes: 2 ** 31 },
      errorDesc: 'stream closed: retry',
    });
    expect(wire.status).toBe(migration.MigrationStatus.MIGRATION_STATUS_FAILED);
    expect(wire.downtimeUs).toBe(3412n);
    expect(wire.ram?.mbpsX1000).toBe(812500n);
    expect(wire.ram?.bypassedBytes).toBe(2n ** 31n);
    expect(wire.errorDesc).toBe('stream closed: retry');
    expect(migrationInfoToWire(emptyMigrationInfo()).errorDesc).toBe('');
  });

  it('reads a missing ram message as zeros and an empty error-desc as none', () => {
    const wire: WireMigrationInfo = {
      ...migration.MigrationInfo.fromPartial({}),
      status: migration.MigrationStatus.MIGRATION_STATUS_SETUP,
      ram: undefined,
    };
    const info = migrationInfoFromWire(wire);
    expect(info).toEqual(emptyMigrationInfo('setup'));
    expect('errorDesc' in info).toBe(false);
    expect(ramStatsFromWire(undefined)).toEqual(emptyMigrationInfo().ram);
  });

  it('rejects an UNSPECIFIED status and oversized counters', () => {
    const unspecified = migration.MigrationInfo.fromPartial({});
    expect(qapiErrorOf(() => migrationInfoFromWire(unspecified)).code).toBe(
      'QAPI_INVALID_WIRE_VALUE',
    );
    const huge = migration.MigrationInfo.fromPartial({
      status: migration.MigrationStatus.MIGRATION_STATUS_ACTIVE,
      ram: { transferred: 2n ** 60n },
    });
    const err = qapiErrorOf(() =>
      migrationInfoFromWire(overTheWire(migration.MigrationInfo, huge)),
    );
    expect(err.code).toBe('QAPI_INVALID_WIRE_VALUE');
    expect(err.message).toContain('RamStats.transferred');
  });

  it.each<[string, Partial<MigrationInfo>]>([
    ['a negative counter', { totalTimeMs: -1 }],
    ['a fractional counter', { deviceBytes: 1.5 }],
    ['an unsafe counter', { downtimeUs: 2 ** 60 }],
    ['a too-large iteration', { iteration: 2 ** 32 }],
    ['a NaN rate', { ram: { ...emptyMigrationInfo().ram, mbps: Number.NaN } }],
    ['a negative rate', { ram: { ...emptyMigrationInfo().ram, mbps: -1 } }],
  ])('refuses to encode %s', (_label, patch) => {
    const err = qapiErrorOf(() =>
      migrationInfoToWire({ ...emptyMigrationInfo('active'), ...patch }),
    );
    expect(err.code).toBe('QAPI_INVALID_WIRE_VALUE');
    expect(err.message).toContain('Fix the code that produced it');
  });

  it('refuses to encode an unknown status', () => {
    expect(
      qapiErrorOf(() => migrationInfoToWire({ ...emptyMigrationInfo(), status: 'paused' as never }))
        .code,
    ).toBe('QAPI_INVALID_STATUS');
  });
});
