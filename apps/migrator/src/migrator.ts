import {
  channelCredentials,
  loadTls,
  ServiceMetrics,
  startMetricsServer,
  startServer,
  type Logger,
  type MetricsServer,
  type RunningServer,
} from '@handoff/service';
import { migratorService } from './api/migrator-service.js';
import type { MigratorConfig } from './config.js';
import { JobManager } from './jobs/job-manager.js';
import { JobJournal } from './jobs/journal.js';
import { MAX_CREATE_TEMPLATE_MESSAGE } from './jobs/snapshot-plans.js';
import type { Job } from './jobs/job.js';
import { MigratorMetrics } from './metrics.js';
import { VmmRegistry } from './registry/vmm-registry.js';
import type { HostOwnership } from './hosts/host-ownership.js';
import { LocalHostOwnership } from './hosts/local-ownership.js';

/** A running migrator. */
export interface Migrator {
  readonly address: string;
  readonly server: RunningServer;
  readonly registry: VmmRegistry;
  readonly jobs: JobManager;
  /**
   * Which host owns each VM and its fencing epoch: the local backend, in `--state-dir` beside
   * the job journal (in memory without one).
   */
  readonly hostOwnership: HostOwnership;
  /** The metrics endpoint, or null without `--metrics-port`. */
  readonly metricsServer: MetricsServer | null;
  /** host:port of the metrics endpoint, or null. */
  readonly metricsAddress: string | null;
  stop(reason?: string): Promise<void>;
}

/**
 * Starts the migrator: reads its TLS material (or `--insecure`), opens the job journal (when
 * `--state-dir` is set), starts resolving the jobs a previous run left in flight (cancelled at
 * both ends, then ended with where the VM really is), then serves health, reflection and
 * MigratorService, and its metrics when `--metrics-port` is set.
 */
export async function startMigrator(config: MigratorConfig, logger: Logger): Promise<Migrator> {
  const tls = loadTls(config, 'migrator', { role: 'migrator' });
  const registry = new VmmRegistry(config['vmm-expiry-ms'], Date.now, config.memstore);
  let journal: JobJournal | undefined;
  let restored: Job[] = [];
  let hostOwnership: HostOwnership = LocalHostOwnership.inMemory();
  const stateDir = config['state-dir'];
  if (stateDir !== undefined && stateDir !== '') {
    ({ journal, jobs: restored } = JobJournal.open(stateDir));
    hostOwnership = LocalHostOwnership.open(stateDir);
    logger.info({ stateDir, jobs: restored.length }, 'job journal opened');
  } else {
    logger.warn('no --state-dir: jobs are kept in memory only and a restart forgets them');
  }
  const metrics = config['metrics-port'] > 0 ? new ServiceMetrics('migrator') : null;
  const migratorMetrics =
    metrics &&
    new MigratorMetrics(metrics.registry, {
      unfinishedJobs: () => jobs.list(false),
      vmms: () => registry.list(),
    });
  const jobs: JobManager = new JobManager({
    ...(migratorMetrics ? { onJobEnded: (job: Job) => migratorMetrics.jobEnded(job) } : {}),
    logger,
    registry,
    journal,
    restored,
    pollIntervalMs: config['poll-interval-ms'],
    migrationTimeoutMs: config['migration-timeout-ms'],
    defaultConcurrency: config['live-update-concurrency'],
    vmmCredentials: channelCredentials(tls, { serverRole: 'vmm' }),
    memstoreAddress: config.memstore,
    memstoreCredentials: channelCredentials(tls, { serverRole: 'memstore' }),
    hostOwnership,
  });
  const metricsServer =
    metrics &&
    (await startMetricsServer({
      name: 'migrator',
      host: config.host,
      port: config['metrics-port'],
      metrics,
      logger,
    }).catch(async (err: unknown) => {
      await jobs.close();
      throw err;
    }));
  jobs.recover();
  let server: RunningServer;
  try {
    server = await startServer({
      name: 'migrator',
      host: config.host,
      port: config.port,
      logger,
      tls,
      metrics,
      shutdownTimeoutMs: config['shutdown-timeout-ms'],
      // CreateTemplate may carry a guest ELF of up to 16 MiB (the template job refuses more).
      maxReceiveMessageBytes: MAX_CREATE_TEMPLATE_MESSAGE,
      services: [
        migratorService({
          logger,
          registry,
          jobs,
          heartbeatIntervalMs: config['heartbeat-interval-ms'],
        }),
      ],
    });
  } catch (err) {
    await metricsServer?.close();
    throw err;
  }
  return {
    address: server.address,
    server,
    registry,
    jobs,
    hostOwnership,
    metricsServer,
    metricsAddress: metricsServer?.address ?? null,
    stop: async (reason) => {
      await server.shutdown(reason);
      await jobs.close();
      await metricsServer?.close();
    },
  };
}
