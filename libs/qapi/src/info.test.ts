import { describe, expect, it } from 'vitest';

import {
  emptyMigrationInfo,
  emptyRamStats,
  migrationInfoToQapi,
  ramStatsToQapi,
  type MigrationInfo,
} from './info.js';
import { MIGRATION_STATUSES, type MigrationStatus } from './status.js';

const sample: MigrationInfo = {
  status: 'completed',
  ram: {
    transferred: 210_000,
    remaining: 0,
    total: 2 * 1024 ** 3,
    duplicate: 12,
    zeroPages: 4096,
    normal: 40,
    normalBytes: 40 * 4096,
    dirtyPagesRate: 150,
    mbps: 812.5,
    dirtySyncCount: 2,
    bypassedBytes: 2 * 1024 ** 3 - 1024 * 1024,
  },
  totalTimeMs: 24,
  setupTimeMs: 3,
  expectedDowntimeMs: 2,
  downtimeUs: 3412,
  iteration: 2,
  deviceBytes: 48_000,
  cpuThrottlePercentage: 0,
};

describe('migrationInfoToQapi', () => {
  it('prints a completed migration with kebab-case names, in a stable order', () => {
    const json = migrationInfoToQapi(sample);
    expect(json).toEqual({
      status: 'completed',
      'total-time': 24,
      'setup-time': 3,
      downtime: 3.412,
      iteration: 2,
      'device-bytes': 48_000,
      ram: {
        transferred: 210_000,
        remaining: 0,
        total: 2147483648,
        duplicate: 12,
        'zero-pages': 4096,
        normal: 40,
        'normal-bytes': 163840,
        'dirty-pages-rate': 150,
        mbps: 812.5,
        'dirty-sync-count': 2,
        'bypassed-bytes': 2146435072,
      },
    });
    expect(Object.keys(json)).toEqual([
      'status',
      'total-time',
      'setup-time',
      'downtime',
      'iteration',
      'device-bytes',
      'ram',
    ]);
    expect(JSON.parse(JSON.stringify(json))).toEqual(json);
  });

  it('shows cpu-throttle-percentage once auto-converge throttled, after device-bytes', () => {
    const json = migrationInfoToQapi({ ...sample, cpuThrottlePercentage: 99.5 });
    expect(json['cpu-throttle-percentage']).toBe(99.5);
    expect(Object.keys(json).slice(4, 8)).toEqual([
      'iteration',
      'device-bytes',
      'cpu-throttle-percentage',
      'ram',
    ]);
    expect(migrationInfoToQapi({ ...sample, status: 'failed' })).not.toHaveProperty(
      'cpu-throttle-percentage',
    );
  });

  const expectedMembers: Record<MigrationStatus, string[]> = {
    none: ['status'],
    setup: ['status'],
    active: [
      'status',
      'total-time',
      'setup-time',
      'expected-downtime',
      'iteration',
      'device-bytes',
      'ram',
    ],
    'postcopy-active': [
      'status',
      'total-time',
      'setup-time',
      'expected-downtime',
      'iteration',
      'device-bytes',
      'ram',
    ],
    'postcopy-paused': [
      'status',
      'total-time',
      'setup-time',
      'expected-downtime',
      'iteration',
      'device-bytes',
      'ram',
    ],
    'postcopy-recover': [
      'status',
      'total-time',
      'setup-time',
      'expected-downtime',
      'iteration',
      'device-bytes',
      'ram',
    ],
    'pre-switchover': [
      'status',
      'total-time',
      'setup-time',
      'expected-downtime',
      'iteration',
      'device-bytes',
      'ram',
    ],
    device: [
      'status',
      'total-time',
      'setup-time',
      'expected-downtime',
      'iteration',
      'device-bytes',
      'ram',
    ],
    completed: [
      'status',
      'total-time',
      'setup-time',
      'downtime',
      'iteration',
      'device-bytes',
      'ram',
    ],
    failed: ['status'],
    cancelling: [
      'status',
      'total-time',
      'setup-time',
      'expected-downtime',
      'iteration',
      'device-bytes',
      'ram',
    ],
    cancelled: ['status'],
  };

  it.each(MIGRATION_STATUSES)('shows the QEMU-style members for %s', (status) => {
    expect(Object.keys(migrationInfoToQapi({ ...sample, status }))).toEqual(
      expectedMembers[status],
    );
  });

  it('adds error-desc whenever there is one, and never an empty one', () => {
    const failed = migrationInfoToQapi({
      ...emptyMigrationInfo('failed'),
      errorDesc: 'lease moved: do not resume the source',
    });
    expect(failed).toEqual({
      status: 'failed',
      'error-desc': 'lease moved: do not resume the source',
    });
    expect(migrationInfoToQapi({ ...emptyMigrationInfo('failed'), errorDesc: '' })).toEqual({
      status: 'failed',
    });
  });

  it('shows expected-downtime in milliseconds while in progress', () => {
    const json = migrationInfoToQapi({ ...sample, status: 'active', expectedDowntimeMs: 17 });
    expect(json['expected-downtime']).toBe(17);
    expect(json.downtime).toBeUndefined();
  });
});

describe('empty values', () => {
  it('start every counter at zero', () => {
    expect(Object.values(emptyRamStats()).every((v) => v === 0)).toBe(true);
    const info = emptyMigrationInfo();
    expect(info.status).toBe('none');
    expect(info.errorDesc).toBeUndefined();
    expect(emptyMigrationInfo('setup').status).toBe('setup');
  });

  it('ramStatsToQapi maps every field', () => {
    expect(Object.keys(ramStatsToQapi(emptyRamStats()))).toHaveLength(
      Object.keys(emptyRamStats()).length,
    );
  });
});
