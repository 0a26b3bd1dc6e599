/**
 * The `memstore` namespace of `@handoff/proto`: the MemstoreService contract
 * (memstore.proto) plus the envelopes of its raw lease channel
 * (lease_channel.proto), both package handoff.memstore.v1.
 */
export * from './gen/handoff/memstore/v1/memstore.js';
export {
  LeaseChannelError,
  LeaseChannelHello,
  LeaseChannelRequest,
  LeaseChannelResponse,
  LeaseChannelWelcome,
} from './gen/handoff/memstore/v1/lease_channel.js';
