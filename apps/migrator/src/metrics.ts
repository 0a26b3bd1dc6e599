import { Counter, Gauge, Histogram, type Registry } from '@handoff/service';
import { isFinished, type Job, type JobKind } from './jobs/job.js';
import type { VmmRecord } from './registry/vmm-registry.js';

/** Buckets of the migration downtime histogram, in seconds: 100 µs to 10 s. */
export const DOWNTIME_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/**
 * How a migration moved the VM's RAM: `bypass` when memory went by reference (shared regions'
 * leases moved, or shared/template pages were not sent), `copy` when every page travelled.
 * A migration that ended before it decided is labelled by what was asked
 * (`bypass-shared-memory` on or off).
 */
export type MigrationMode = 'bypass' | 'copy';

/** The mode of an ended migrate job ({@link MigrationMode}). */
export function migrationMode(job: Job): MigrationMode {
  const route = job.info.route;
  if (route !== undefined || job.info.ram.bypassedBytes > 0) {
    const byReference =
      job.info.ram.bypassedBytes > 0 || (route !== undefined && route.leaseMove !== 'none');
    return byReference ? 'bypass' : 'copy';
  }
  return job.capabilities['bypass-shared-memory'] ? 'bypass' : 'copy';
}

/** Every job kind, so `handoff_jobs_running` reports 0 for kinds with no job running. */
const JOB_KINDS: readonly JobKind[] = [
  'migrate',
  'live-update',
  'save',
  'restore',
  'template',
  'clone',
];

/** What the migrator's metrics read at scrape time. */
export interface MigratorMetricSources {
  /** Jobs not finished yet. */
  unfinishedJobs(): readonly Job[];
  /** The vmm instances the registry knows. */
  vmms(): readonly VmmRecord[];
}

/**
 * The migrator's own metrics: jobs and migrations as they end ({@link MigratorMetrics.jobEnded},
 * called once per job by the job manager), and at scrape time the running jobs and the
 * registered vmm instances.
 */
export class MigratorMetrics {
  private readonly migrations: Counter<'mode' | 'outcome'>;
  private readonly downtime: Histogram<'mode'>;
  private readonly jobs: Counter<'kind' | 'outcome'>;

  constructor(registry: Registry, sources: MigratorMetricSources) {
    this.migrations = new Counter({
      name: 'handoff_migrations_total',
      help: 'migrations (migrate jobs, live-update ones included) that ended, by mode and outcome',
      labelNames: ['mode', 'outcome'],
      registers: [registry],
    });
    this.downtime = new Histogram({
      name: 'handoff_migration_downtime_seconds',
      help: 'guest pause of completed migrations, source vCPU stop to target vCPU resume',
      labelNames: ['mode'],
      buckets: [...DOWNTIME_BUCKETS],
      registers: [registry],
    });
    this.jobs = new Counter({
      name: 'handoff_jobs_total',
      help: 'jobs that ended, by kind and outcome (completed, failed, cancelled)',
      labelNames: ['kind', 'outcome'],
      registers: [registry],
    });
    new Gauge({
      name: 'handoff_jobs_running',
      help: 'jobs not ended yet, by kind',
      labelNames: ['kind'],
      registers: [registry],
      collect() {
        const counts = new Map<JobKind, number>(JOB_KINDS.map((k) => [k, 0]));
        for (const job of sources.unfinishedJobs()) {
          counts.set(job.kind, (counts.get(job.kind) ?? 0) + 1);
        }
        for (const [kind, n] of counts) this.set({ kind }, n);
      },
    });
    new Gauge({
      name: 'handoff_registered_vmms',
      help: 'vmm instances the registry knows, by state (alive: heard from within --vmm-expiry-ms)',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        let alive = 0;
        let expired = 0;
        for (const vmm of sources.vmms()) {
          if (vmm.alive) alive++;
          else expired++;
        }
        this.set({ state: 'alive' }, alive);
        this.set({ state: 'expired' }, expired);
      },
    });
  }

  /** Counts a job that just ended (and, for a migration, its mode and downtime). */
  jobEnded(job: Job): void {
    if (!isFinished(job)) return;
    const outcome = job.info.status;
    this.jobs.inc({ kind: job.kind, outcome });
    if (job.kind !== 'migrate') return;
    const mode = migrationMode(job);
    this.migrations.inc({ mode, outcome });
    if (outcome === 'completed' && job.info.downtimeUs > 0) {
      this.downtime.observe({ mode }, job.info.downtimeUs / 1e6);
    }
  }
}
