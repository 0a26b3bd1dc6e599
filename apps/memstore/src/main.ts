#!/usr/bin/env node
import { serviceMain } from '@handoff/service';
import { memstoreOptions } from './config.js';
import { startMemstore } from './start.js';

await serviceMain({
  name: 'memstore',
  prefix: 'MEMSTORE',
  title:
    'memstore — owns the memory files behind guest RAM: regions, templates, leases, the catalog',
  spec: memstoreOptions,
  start: (config, logger) => startMemstore(config, logger),
});
