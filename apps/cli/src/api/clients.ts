import { memstore, migrator, vmm } from '@handoff/proto';
import { createClient } from '@handoff/service';

/** Where the cluster's services are. */
export interface Endpoints {
  memstore: string;
  migrator: string;
  /** Deadline of each call, in milliseconds. */
  timeoutMs: number;
}

/** Default addresses of a local cluster started by `npm start`. */
export const DEFAULT_ENDPOINTS: Endpoints = {
  memstore: '127.0.0.1:7100',
  migrator: '127.0.0.1:7000',
  timeoutMs: 5000,
};

/** Lazily created clients of one vmctl invocation; close() releases them all. */
export class Clients {
  private ms?: memstore.MemstoreServiceClient;
  private mg?: migrator.MigratorServiceClient;
  private readonly vmms = new Map<string, vmm.VmmServiceClient>();

  constructor(readonly endpoints: Endpoints) {}

  get memstore(): memstore.MemstoreServiceClient {
    return (this.ms ??= createClient(memstore.MemstoreServiceClient, this.endpoints.memstore));
  }

  get migrator(): migrator.MigratorServiceClient {
    return (this.mg ??= createClient(migrator.MigratorServiceClient, this.endpoints.migrator));
  }

  vmm(address: string): vmm.VmmServiceClient {
    let c = this.vmms.get(address);
    if (c === undefined) {
      c = createClient(vmm.VmmServiceClient, address);
      this.vmms.set(address, c);
    }
    return c;
  }

  close(): void {
    this.ms?.close();
    this.mg?.close();
    for (const c of this.vmms.values()) c.close();
  }
}
