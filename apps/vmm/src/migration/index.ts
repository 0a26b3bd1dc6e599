/**
 * vmm-to-vmm migration: the instance's registry (manager.ts), the source's phases
 * (outgoing.ts), the target's state machine (incoming.ts) and its preparation (prepare.ts),
 * the page frames (pages/) and what carries them (transport/). PROTOCOL.md describes the stream.
 */
export {
  MIGRATION_ERROR_CODES,
  MigrationError,
  OUTGOING_PHASES,
  type MigrationErrorCode,
  type OutgoingPhase,
} from '../model/migration-error.js';
export { STREAM_FORMAT } from './format.js';
export { IncomingMigration, type IncomingState } from './incoming.js';
export { MigrationManager, type MigrateRequest } from './manager.js';
export { OutgoingMigration, type OutgoingOptions } from './outgoing.js';
export { MAX_FRAME_DATA, checkFrame, FrameBuilder } from './pages/frames.js';
export {
  TOKEN_TTL_MS,
  type CancelIncomingOutcome,
  type IncomingHint,
  type PreparedIncoming,
} from './prepare.js';
export { grpcIncoming, type IncomingChannel, type OutgoingChannel } from './transport/channel.js';
export type { TargetEndpoints } from './transport/to-target.js';
