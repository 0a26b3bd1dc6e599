/**
 * The migrator service: the registry of vmm instances and (in later
 * milestones) the jobs that move VMs between them.
 *
 * @packageDocumentation
 */
export { startMigrator, type Migrator } from './migrator.js';
export { migratorOptions, MIGRATOR_DEFAULT_PORT, type MigratorConfig } from './config.js';
export { VmmRegistry, type VmmRecord } from './registry/vmm-registry.js';
export { MigratorError, type MigratorErrorCode } from './errors.js';
