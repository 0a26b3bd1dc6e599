import type { ChannelCredentials } from '@grpc/grpc-js';
import { memstore, migrator, vmm } from '@handoff/proto';
import { channelCredentials, createClient, type Role, type TlsMaterial } from '@handoff/service';

/** Where the cluster's services are, and how vmctl proves who it is. */
export interface Endpoints {
  memstore: string;
  migrator: string;
  /** Deadline of each call, in milliseconds. */
  timeoutMs: number;
  /**
   * The operator's TLS material (credentials.ts finds it), or null for a cluster that runs
   * `--insecure`.
   */
  tls: TlsMaterial | null;
}

/** Default addresses of a local cluster started by `npm start`. */
export const DEFAULT_ENDPOINTS: Omit<Endpoints, 'tls'> = {
  memstore: '127.0.0.1:7100',
  migrator: '127.0.0.1:7000',
  timeoutMs: 5000,
};

/** Lazily created clients of one vmctl invocation; close() releases them all. */
export class Clients {
  private ms?: memstore.MemstoreServiceClient;
  private mg?: migrator.MigratorServiceClient;
  private readonly vmms = new Map<string, vmm.VmmServiceClient>();
  private readonly memstores = new Map<string, memstore.MemstoreServiceClient>();

  constructor(readonly endpoints: Endpoints) {}

  /** Credentials for a server of `role` (health checks use them too). */
  credentials(role: Role): ChannelCredentials {
    return channelCredentials(this.endpoints.tls, { serverRole: role });
  }

  get memstore(): memstore.MemstoreServiceClient {
    return (this.ms ??= createClient(
      memstore.MemstoreServiceClient,
      this.endpoints.memstore,
      this.credentials('memstore'),
    ));
  }

  get migrator(): migrator.MigratorServiceClient {
    return (this.mg ??= createClient(
      migrator.MigratorServiceClient,
      this.endpoints.migrator,
      this.credentials('migrator'),
    ));
  }

  /**
   * The memstore at `address` (another host's, as a vmm registration names it); the configured
   * one's client for its address.
   */
  memstoreAt(address: string): memstore.MemstoreServiceClient {
    if (address === this.endpoints.memstore) return this.memstore;
    let c = this.memstores.get(address);
    if (c === undefined) {
      c = createClient(memstore.MemstoreServiceClient, address, this.credentials('memstore'));
      this.memstores.set(address, c);
    }
    return c;
  }

  vmm(address: string): vmm.VmmServiceClient {
    let c = this.vmms.get(address);
    if (c === undefined) {
      c = createClient(vmm.VmmServiceClient, address, this.credentials('vmm'));
      this.vmms.set(address, c);
    }
    return c;
  }

  close(): void {
    this.ms?.close();
    this.mg?.close();
    for (const c of this.vmms.values()) c.close();
    for (const c of this.memstores.values()) c.close();
  }
}
