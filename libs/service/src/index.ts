/**
 * The service runtime shared by memstore, vmm and migrator: configuration,
 * logging, the gRPC server with health and reflection, client helpers with
 * deadlines, the error-to-status table, and graceful shutdown.
 *
 * @packageDocumentation
 */
export * from './errors.js';
export * from './config.js';
export * from './logger.js';
export * from './server.js';
export * from './client.js';
export * from './lifecycle.js';
export * from './version.js';
export * from './ready.js';
export * from './main.js';
export * from './units.js';
export * from './frames.js';
export * from './events.js';
export * from './process.js';
export * from './metrics/index.js';
export * from './trust/identity.js';
export * from './trust/access.js';
export * from './trust/credentials.js';
export * from './trust/material.js';
export * from './trust/private-dir.js';
export * from './trust/side-channel.js';
