#!/usr/bin/env node
import { serviceMain } from '@handoff/service';
import { migratorOptions } from './config.js';
import { startMigrator } from './migrator.js';

await serviceMain({
  name: 'migrator',
  prefix: 'MIGRATOR',
  title:
    'migrator — coordinates migration, live-update, save/restore and clone jobs between vmm instances',
  spec: migratorOptions,
  start: (config, logger) => startMigrator(config, logger),
});
