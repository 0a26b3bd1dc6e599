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
} as const satisfies ConfigSpec;

export type MigratorConfig = ConfigOf<typeof migratorOptions>;
