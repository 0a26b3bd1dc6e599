/**
 * One vmm instance's access to memstore: its gRPC client and its lease-channel client, both
 * created on first use and shared by every VM, and the {@link RamContext} each VM's blocks
 * are opened with.
 *
 * @packageDocumentation
 */
import { memstore } from '@handoff/proto';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { createClient, type Logger } from '@handoff/service';
import { LeaseChannelClient } from '../leases/lease-channel.js';
import type { RamContext } from './backing.js';

/** Options of a {@link MemstoreAccess}. */
export interface MemstoreAccessOptions {
  readonly vmmId: string;
  /** memstore's gRPC address. */
  readonly address: string;
  /** How to reach it: this vmm's certificate (role vmm), or plaintext for `--insecure`. */
  readonly credentials: ChannelCredentials;
  readonly logger: Logger;
  /** Deadline of each memstore call. */
  readonly deadlineMs: number;
}

/**
 * memstore's clients for one vmm instance. The lease-holder session opens at once and is kept
 * (re-opened after a drop), so memstore knows this process before its first lease and fences
 * this vmm's leases if the process dies.
 */
export class MemstoreAccess {
  private client: memstore.MemstoreServiceClient | undefined;
  private leaseClient: LeaseChannelClient | undefined;

  constructor(private readonly opts: MemstoreAccessOptions) {
    this.leases().keepSession();
  }

  /** What opening (and migrating) VM `vmName`'s blocks needs; `logger` is the VM's. */
  context(vmName: string, logger: Logger): RamContext {
    return {
      vmmId: this.opts.vmmId,
      vmName,
      memstore: () => this.memstore(),
      leases: () => this.leases(),
      pages: () => this.leases(),
      leaseChannel: () => this.leases().channelPath(),
      channelHello: () => this.leases().helloRequest({ deadlineMs: this.opts.deadlineMs }),
      memstoreAddress: this.opts.address,
      logger,
      deadlineMs: this.opts.deadlineMs,
    };
  }

  /** Closes both clients. */
  close(): void {
    this.leaseClient?.close();
    this.client?.close();
  }

  private memstore(): memstore.MemstoreServiceClient {
    this.client ??= createClient(
      memstore.MemstoreServiceClient,
      this.opts.address,
      this.opts.credentials,
      { waitForReady: true },
    );
    return this.client;
  }

  /** The lease calls: one lease-channel connection shared by all VMs of the instance. */
  private leases(): LeaseChannelClient {
    this.leaseClient ??= new LeaseChannelClient({
      memstore: () => this.memstore(),
      vmmId: this.opts.vmmId,
      logger: this.opts.logger.child({ component: 'lease-channel' }),
      deadlineMs: this.opts.deadlineMs,
    });
    return this.leaseClient;
  }
}
