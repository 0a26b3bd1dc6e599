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
  /** The host it registered on (host-1 for an instance that named none). */
  hostId: string;
  /** Its host's memstore, as it registered; '' when it did not say. */
  memstoreAddress: string;
}

export interface MemstoreUsage {
  regions: number;
  totalSize: bigint;
  allocated: bigint;
  volatileDir: string;
  persistentDir: string;
}

/** A memstore as `vmctl status` saw it: reachability, and its usage when it answered. */
export interface MemstoreStatus extends ServiceStatus {
  usage: MemstoreUsage | null;
}

/** One host: the memstore(s) its vmm instances named and the instances themselves. */
export interface HostStatus {
  id: string;
  /** Normally one; more when the host's instances disagree on their memstore. */
  memstores: MemstoreStatus[];
  /** The ids of its vmm instances (details in {@link ClusterStatus.vmms}). */
  vmms: string[];
}

export interface ClusterStatus {
  services: ServiceStatus[];
  vmms: VmmStatus[];
  /** The usage of the memstore vmctl is configured with (HANDOFF_MEMSTORE_ADDR). */
  memstore: MemstoreUsage | null;
  /** The hosts the vmm instances registered on, sorted by id. */
  hosts: HostStatus[];
  /** True when every service, every memstore a host names and every vmm instance is SERVING. */
  healthy: boolean;
}

/** The host of an instance that names none (an instance older than host ids). */
const DEFAULT_HOST_ID = 'host-1';

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

/** Health, version and usage of the memstore at `address`; never throws. */
async function probeMemstore(
  c: Clients,
  name: string,
  address: string,
  deadlineMs: number,
): Promise<MemstoreStatus> {
  let usage: MemstoreUsage | null = null;
  const s = await probe(
    name,
    address,
    c.credentials('memstore'),
    async () => {
      const info = await unaryCall(c.memstoreAt(address), 'getInfo', {}, { deadlineMs });
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
  );
  return { ...s, usage };
}

/**
 * Gathers the health, versions, vmm instances and memstore usage of the cluster, grouped by
 * host: every memstore a vmm registration names is asked once (one that cannot be reached is
 * reported so, and makes the cluster not healthy).
 */
export async function clusterStatus(c: Clients): Promise<ClusterStatus> {
  const deadlineMs = c.endpoints.timeoutMs;
  const [memstore, migrator] = await Promise.all([
    probeMemstore(c, 'memstore', c.endpoints.memstore, deadlineMs),
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
          hostId: v.hostId === '' ? DEFAULT_HOST_ID : v.hostId,
          memstoreAddress: v.memstoreAddress,
        };
      }),
    );
  }
  const hosts = await hostsOf(c, vmms, memstore, deadlineMs);
  const services: ServiceStatus[] = [withoutUsage(memstore), migrator];
  const memstores = hosts.flatMap((h) => h.memstores);
  const healthy = [...services, ...memstores, ...vmms].every((s) => s.health === 'SERVING');
  return { services, vmms, memstore: memstore.usage, hosts, healthy };
}

/** The hosts of `vmms`, each with the memstores its instances named, asked once per address. */
async function hostsOf(
  c: Clients,
  vmms: readonly VmmStatus[],
  configured: MemstoreStatus,
  deadlineMs: number,
): Promise<HostStatus[]> {
  const byHost = new Map<string, VmmStatus[]>();
  for (const v of vmms) byHost.set(v.hostId, [...(byHost.get(v.hostId) ?? []), v]);
  const addresses = new Set(vmms.map((v) => v.memstoreAddress).filter((a) => a !== ''));
  addresses.delete(configured.address);
  const asked = new Map<string, MemstoreStatus>([[configured.address, configured]]);
  await Promise.all(
    [...addresses].map(async (a) => {
      asked.set(a, await probeMemstore(c, 'memstore', a, deadlineMs));
    }),
  );
  return [...byHost]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([id, members]) => ({
      id,
      memstores: [...new Set(members.map((v) => v.memstoreAddress).filter((a) => a !== ''))]
        .sort()
        .map((a) => asked.get(a)!),
      vmms: members.map((v) => v.id),
    }));
}

function withoutUsage(m: MemstoreStatus): ServiceStatus {
  const { usage: _usage, ...s } = m;
  return s;
}
