/**
 * Wire types of every Handoff contract, generated from `/proto` by buf +
 * ts-proto (see README.md). This is the only package that exposes generated
 * types; services convert them to domain types at their edge.
 *
 * @packageDocumentation
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export * as memstore from './memstore.js';
export * as vmm from './gen/handoff/vmm/v1/vmm.js';
export * as vmmStream from './gen/handoff/vmm/v1/stream.js';
export * as migrator from './gen/handoff/migrator/v1/migrator.js';
export * as migration from './gen/handoff/migration/v1/migration.js';
export { Timestamp } from './gen/google/protobuf/timestamp.js';
export { dateToTimestamp, timestampToDate } from './time.js';

/**
 * Absolute path of the binary FileDescriptorSet of all contracts (what server
 * reflection serves). Resolved from the package root, so it works from `src/`
 * and from `dist/`.
 */
export const descriptorSetPath: string = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  const path = join(here, '..', 'descriptors.binpb');
  if (!existsSync(path)) {
    throw new Error(
      `descriptor set missing at ${path}: run \`npm run generate\` in the repository`,
    );
  }
  return path;
})();

/** Fully-qualified names of the services Handoff serves, by area. */
export const serviceNames = {
  memstore: 'handoff.memstore.v1.MemstoreService',
  vmm: 'handoff.vmm.v1.VmmService',
  migration: 'handoff.vmm.v1.MigrationService',
  migrator: 'handoff.migrator.v1.MigratorService',
} as const;
