/** vmm-to-vmm migration: stream framing, sender, receiver, the instance's registry. */
export {
  MIGRATION_ERROR_CODES,
  MigrationError,
  type MigrationErrorCode,
} from '../model/migration-error.js';
export { MigrationManager, type MigrateRequest } from './manager.js';
export { IncomingTokens, receiveMigration, TOKEN_TTL_MS, type IncomingHint } from './incoming.js';
export { OutgoingMigration, type OutgoingOptions } from './outgoing.js';
export { STREAM_FORMAT, MAX_FRAME_DATA, checkFrame, FrameBuilder } from './pages/frames.js';
export {
  grpcIncoming,
  grpcOutgoing,
  type IncomingChannel,
  type OutgoingChannel,
} from './transport/channel.js';
export {
  startDataChannel,
  connectDataChannel,
  type DataChannelServer,
} from './transport/data-channel.js';
