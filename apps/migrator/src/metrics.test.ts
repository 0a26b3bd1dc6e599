import { describe, expect, it } from 'vitest';
import {
  defaultCapabilities,
  emptyMigrationInfo,
  type MigrationInfo,
  type MigrationStatus,
} from '@handoff/qapi';
import { parseExposition, sampleValue, ServiceMetrics } from '@handoff/service';
import type { Job, JobKind } from './jobs/job.js';
import { migrationMode, MigratorMetrics } from './metrics.js';

/** A job as the metrics read it: kind, status, capabilities and what the migration reported. */
function job(
  kind: JobKind,
  status: MigrationStatus,
  info: Partial<MigrationInfo> = {},
  bypass = true,
): Job {
  return {
    kind,
    capabilities: { ...defaultCapabilities(), 'bypass-shared-memory': bypass },
    info: { ...emptyMigrationInfo(status), ...info },
  } as unknown as Job;
}

const ram = (bypassedBytes: number) => ({ ...emptyMigrationInfo().ram, bypassedBytes });

describe('migrator metrics', () => {
  it('tells a bypass from a copy by what travelled, else by what was asked', () => {
    const leaseMoved = { transport: 'switchover-slot', leaseMove: 'armed', targetPrebuilt: true };
    const nothingShared = { transport: 'grpc', leaseMove: 'none', targetPrebuilt: false };
    expect(migrationMode(job('migrate', 'completed', { route: leaseMoved } as never))).toBe(
      'bypass',
    );
    expect(migrationMode(job('migrate', 'completed', { ram: ram(4096) }))).toBe('bypass');
    expect(migrationMode(job('migrate', 'completed', { route: nothingShared } as never))).toBe(
      'copy',
    );
    expect(migrationMode(job('migrate', 'failed', {}, false))).toBe('copy');
    expect(migrationMode(job('migrate', 'failed', {}, true))).toBe('bypass');
  });

  it('counts ended jobs and migrations, observes downtime of completed ones, and reads running jobs and vmms when scraped', async () => {
    const running = [job('clone', 'active'), job('migrate', 'active')];
    const metrics = new ServiceMetrics('migrator', { processMetrics: false });
    const m = new MigratorMetrics(metrics.registry, {
      unfinishedJobs: () => running,
      vmms: () => [{ alive: true }, { alive: false }, { alive: true }] as never,
    });
    m.jobEnded(job('migrate', 'completed', { downtimeUs: 1200, ram: ram(1 << 20) }));
    m.jobEnded(job('migrate', 'failed', {}, false));
    m.jobEnded(job('save', 'cancelled'));
    m.jobEnded(job('migrate', 'active')); // not ended: ignored
    const s = parseExposition(await metrics.scrape());
    const v = (name: string, labels: Record<string, string> = {}) => sampleValue(s, name, labels);
    expect(v('handoff_migrations_total', { mode: 'bypass', outcome: 'completed' })).toBe(1);
    expect(v('handoff_migrations_total', { mode: 'copy', outcome: 'failed' })).toBe(1);
    expect(v('handoff_migrations_total')).toBe(2);
    expect(v('handoff_migration_downtime_seconds_count', { mode: 'bypass' })).toBe(1);
    expect(v('handoff_migration_downtime_seconds_sum', { mode: 'bypass' })).toBeCloseTo(0.0012);
    expect(v('handoff_migration_downtime_seconds_bucket', { le: '0.001' })).toBe(0);
    expect(v('handoff_migration_downtime_seconds_bucket', { le: '0.0025' })).toBe(1);
    expect(v('handoff_jobs_total', { kind: 'save', outcome: 'cancelled' })).toBe(1);
    expect(v('handoff_jobs_total')).toBe(3);
    expect(v('handoff_jobs_running', { kind: 'clone' })).toBe(1);
    expect(v('handoff_jobs_running', { kind: 'restore' })).toBe(0);
    expect(v('handoff_registered_vmms', { state: 'alive' })).toBe(2);
    expect(v('handoff_registered_vmms', { state: 'expired' })).toBe(1);
  });
});
