#!/usr/bin/env node
import { serviceMain } from '@handoff/service';
import { vmmOptions } from './config.js';
import { startVmm } from './vmm.js';

await serviceMain({
  name: 'vmm',
  prefix: 'VMM',
  title: 'vmm — a Handoff VMM instance: runs RV32 guests whose RAM lives in memstore regions',
  spec: vmmOptions,
  start: (config, logger) => startVmm(config, logger),
});
