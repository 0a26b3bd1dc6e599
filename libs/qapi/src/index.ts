/**
 * `@handoff/qapi` — the migration vocabulary of Handoff, shaped like QEMU's
 * `qapi/migration.json`: capabilities and parameters (with a registry of
 * descriptions, `since` versions and defaults), a parser for human input, the
 * `MigrationStatus` state machine, `MigrationInfo` and its QAPI JSON form,
 * and validation of capability/parameter combinations.
 *
 * This entry point has no gRPC or protobuf imports. The mapping to and from
 * the generated wire types lives in `@handoff/qapi/wire`.
 *
 * @packageDocumentation
 */
export {
  QAPI_ERROR_CODES,
  QapiError,
  isQapiError,
  type QapiErrorCode,
  type QapiErrorOptions,
  type QapiIssue,
} from './errors.js';
export {
  CAPABILITY_REGISTRY,
  MIGRATION_CAPABILITIES,
  capabilitiesToQapi,
  defaultCapabilities,
  enabledCapabilities,
  isMigrationCapability,
  parseCapability,
  parseCapabilitySettings,
  resolveCapabilities,
  type CapabilityInfo,
  type MigrationCapabilities,
  type MigrationCapability,
  type MigrationCapabilityOverrides,
  type QapiCapabilityStatus,
} from './capabilities.js';
export {
  MIGRATION_PARAMETERS,
  PARAMETER_REGISTRY,
  checkParameterValue,
  defaultParameters,
  formatParameterValue,
  isMigrationParameterName,
  parseParameterName,
  parseParameterValue,
  parseParameters,
  resolveParameters,
  unitLabel,
  type MigrationParameterName,
  type MigrationParameterOverrides,
  type MigrationParameters,
  type ParameterInfo,
  type ParameterUnit,
} from './parameters.js';
export {
  LEGAL_TRANSITIONS,
  MIGRATION_STATUSES,
  MigrationStateMachine,
  STATUS_DESCRIPTIONS,
  TERMINAL_STATUSES,
  assertTransition,
  canTransition,
  isActive,
  isMigrationStatus,
  isTerminal,
  nextStatuses,
  parseMigrationStatus,
  type MigrationStateMachineOptions,
  type MigrationStatus,
  type StatusChange,
  type StatusListener,
} from './status.js';
export {
  emptyMigrationInfo,
  emptyRamStats,
  migrationInfoToQapi,
  ramStatsToQapi,
  type LeaseMove,
  type MigrationInfo,
  type MigrationRoute,
  type MigrationTimeline,
  type MigrationTransport,
  type PostcopyStats,
  type QapiMigrationInfo,
  type StateEncoding,
  type QapiRamStats,
  type RamStats,
} from './info.js';
export {
  VALIDATION_RULES,
  assertValidMigrationConfig,
  validateMigrationConfig,
  type MigrationConfig,
  type MigrationConfigInput,
  type ValidatedMigrationConfig,
  type ValidationResult,
  type ValidationRule,
} from './validate.js';
