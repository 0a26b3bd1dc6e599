import { commonOptions, type ConfigOf, type ConfigSpec } from '@handoff/service';

/** Default port of the migrator. */
export const MIGRATOR_DEFAULT_PORT = 7000;

/** Flags (`--name`) and variables (`HANDOFF_MIGRATOR_NAME`) of the migrator. */
export const migratorOptions = {
  ...commonOptions(MIGRATOR_DEFAULT_PORT),
  'heartbeat-interval-ms': {
    type: 'number',
    default: 2000,
    min: 100,
    description: 'how often vmm instances are asked to re-register',
  },
  'vmm-expiry-ms': {
    type: 'number',
    default: 6000,
    min: 200,
    description: 'a vmm instance not heard from for this long is reported not alive',
  },
  'state-dir': {
    type: 'string',
    description:
      'directory of the job journal (jobs.jsonl); without it jobs live in memory and a restart forgets them',
  },
  'poll-interval-ms': {
    type: 'number',
    default: 100,
    min: 10,
    description:
      'after a restart: how often the source of a job failed by it is asked whether its migration ended (GetMigration)',
  },
  'migration-timeout-ms': {
    type: 'number',
    default: 600000,
    min: 1000,
    description:
      'deadline of one migration (MigrateVm); when it passes the job fails and the source cancels the migration',
  },
  memstore: {
    type: 'string',
    default: '127.0.0.1:7100',
    env: 'HANDOFF_MEMSTORE_ADDR',
    description:
      'memstore address (host:port): after a migration ended uncertainly (a dropped connection, ' +
      "a restart), who holds the VM's lease there says where it runs; snapshot jobs ask it what " +
      'a snapshot is and whether a save made it; empty: not asked',
  },
  'live-update-concurrency': {
    type: 'number',
    default: 2,
    min: 1,
    description: 'VMs a live update migrates at once when the request does not say',
  },
} as const satisfies ConfigSpec;

export type MigratorConfig = ConfigOf<typeof migratorOptions>;
