import { timestampToDate } from '@handoff/proto';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { checkHealth, unaryCall, type HealthStatus } from '@handoff/service';
import type { Clients } from './clients.js';

/** One service's reachability as `vmctl status` reports it. */
export interface ServiceStatus {
  name: string;
  address: string;
  health: HealthStatus;
  version: string;
  error?: string;
}

/** A vmm instance as registered with the migrator, plus its own health. */
export interface VmmStatus extends ServiceStatus {
  id: string;
  alive: boolean;
  vms: number;
  lastSeen: string | undefined;
}

export interface MemstoreUsage {
  regions: number;
  totalSize: bigint;
  allocated: bigint;
  volatileDir: string;
  persistentDir: string;
}

export interface ClusterStatus {
  services: ServiceStatus[];
  vmms: VmmStatus[];
  memstore: MemstoreUsage | null;
  /** True when every service and every registered vmm instance is SERVING. */
  healthy: boolean;
}

async function probe(
  name: string,
  address: string,
  credentials: ChannelCredentials,
  version: () => Promise<string>,
  deadlineMs: number,
): Promise<ServiceStatus> {
  const h = await checkHealth(address, credentials, '', deadlineMs);
  if (h.status === 'UNREACHABLE') {
    return { name, address, health: h.status, version: '', error: h.error ?? 'unreachable' };
  }
  try {
    return { name, address, health: h.status, version: await version() };
  } catch (err) {
    return { name, address, health: h.status, version: '', error: (err as Error).message };
  }
}

/** Gathers the health, versions, vmm instances and memstore usage of the cluster. */
export async function clusterStatus(c: Clients): Promise<ClusterStatus> {
  const deadlineMs = c.endpoints.timeoutMs;
  let usage: MemstoreUsage | null = null;
  const [memstore, migrator] = await Promise.all([
    probe(
      'memstore',
      c.endpoints.memstore,
      c.credentials('memstore'),
      async () => {
        const info = await unaryCall(c.memstore, 'getInfo', {}, { deadlineMs });
        usage = {
          regions: info.regionCount,
          totalSize: info.totalSize,
          allocated: info.allocatedBytes,
          volatileDir: info.volatileDir,
          persistentDir: info.persistentDir,
        };
        return info.version;
      },
      deadlineMs,
    ),
    probe(
      'migrator',
      c.endpoints.migrator,
      c.credentials('migrator'),
      async () => (await unaryCall(c.migrator, 'getInfo', {}, { deadlineMs })).version,
      deadlineMs,
    ),
  ]);
  let vmms: VmmStatus[] = [];
  if (migrator.health === 'SERVING') {
    const listed = await unaryCall(c.migrator, 'listVmms', {}, { deadlineMs });
    vmms = await Promise.all(
      listed.vmms.map(async (v) => {
        const s = await probe(
          v.id,
          v.address,
          c.credentials('vmm'),
          async () => (await unaryCall(c.vmm(v.address), 'getInfo', {}, { deadlineMs })).version,
          deadlineMs,
        );
        return {
          ...s,
          id: v.id,
          alive: v.alive,
          vms: v.vmCount,
          lastSeen: timestampToDate(v.lastSeen)?.toISOString(),
        };
      }),
    );
  }
  const services = [memstore, migrator];
  const healthy = [...services, ...vmms].every((s) => s.health === 'SERVING');
  return { services, vmms, memstore: usage, healthy };
}
