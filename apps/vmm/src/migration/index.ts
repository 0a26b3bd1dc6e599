/** vmm-to-vmm migration: stream framing, sender, receiver, the instance's registry. */
export { MIGRATION_ERROR_CODES, MigrationError, type MigrationErrorCode } from './errors.js';
export { MigrationManager, type MigrateRequest } from './manager.js';
export { IncomingTokens, receiveMigration, TOKEN_TTL_MS, type IncomingHint } from './receiver.js';
export { OutgoingMigration, type OutgoingOptions } from './sender.js';
export { STREAM_FORMAT, MAX_FRAME_DATA, checkFrame, FrameBuilder } from './stream.js';
export {
  grpcIncoming,
  grpcOutgoing,
  type IncomingChannel,
  type OutgoingChannel,
} from './channel.js';
export { startDataChannel, connectDataChannel, type DataChannelServer } from './data-channel.js';
