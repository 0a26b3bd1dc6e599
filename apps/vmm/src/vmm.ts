import { realpathSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import {
  channelCredentials,
  checkPrivateDirectory,
  ensurePrivateDirectory,
  loadTls,
  parseByteSize,
  ServiceMetrics,
  startMetricsServer,
  startServer,
  ServiceError,
  type Logger,
  type MetricsServer,
  type RunningServer,
} from '@handoff/service';
import { vmmServices } from './api/vmm-service.js';
import type { VmmConfig } from './config.js';
import { MigrationManager } from './migration/index.js';
import { sweepLeftovers } from './migration/leftovers.js';
import { startHeartbeat } from './registration/heartbeat.js';
import { hostIdOf } from './registration/host-id.js';
import { VmHost } from './vm/host.js';
import { MAX_BLOCK_SIZE } from './model/limits.js';
import { MAX_CREATE_VM_MESSAGE } from './guests/catalog.js';
import { registerVmmMetrics } from './metrics.js';

/** A running vmm instance. */
export interface Vmm {
  readonly id: string;
  readonly address: string;
  readonly server: RunningServer;
  readonly host: VmHost;
  /** host:port of the metrics endpoint, or null without `--metrics-port`. */
  readonly metricsAddress: string | null;
  stop(reason?: string): Promise<void>;
}

/** `--max-vm-memory` in bytes. @throws ServiceError SERVICE_INVALID_CONFIG */
export function maxVmMemoryOf(config: Pick<VmmConfig, 'max-vm-memory'>): number {
  const bytes = parseByteSize(config['max-vm-memory']);
  if (bytes === undefined || bytes < 4096 || bytes > MAX_BLOCK_SIZE) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `--max-vm-memory ${config['max-vm-memory']} is not a size between 4K and 2G ` +
        '(one RAM block holds at most 2 GiB); write e.g. 512M or 2G',
    );
  }
  return bytes;
}

/**
 * This user's folder for a vmm's side-channel files under `base` (`handoff-vmm-<uid>`, mode
 * 0700): every vmm instance of the user shares it, nobody else can enter it.
 */
export function privateVmmDir(base: string): string {
  return join(base, `handoff-vmm-${process.getuid?.() ?? 0}`);
}

/**
 * `--data-channel` as a listen address, or '' for none. `auto` is a unix socket in this user's
 * private folder of the temp folder ({@link privateVmmDir}), named by instance id and process id.
 */
export function dataChannelOf(config: Pick<VmmConfig, 'data-channel' | 'id'>): string {
  const v = config['data-channel'];
  if (v === 'off') return '';
  if (v === 'auto') {
    return `unix:${join(privateVmmDir(tmpdir()), `handoff-${config.id}-${process.pid}.sock`)}`;
  }
  if (v.startsWith('unix:/') || /^[^/]+:\d+$/.test(v)) return v;
  throw new ServiceError(
    'SERVICE_INVALID_CONFIG',
    `--data-channel ${v} is not auto, off, unix:/absolute/path or host:port`,
  );
}

/**
 * `--switchover-dir` as a folder, or null for none. `auto` is this user's private folder
 * ({@link privateVmmDir}) in /dev/shm when present (tmpfs), else in the temp folder, created
 * when missing. A folder given must be this user's and closed to everyone else (the slots in
 * it are 0600; the folder keeps others from planting or swapping them).
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` for a relative path, a path that is not a
 *   folder, or a folder others can enter
 */
export function switchoverDirOf(config: Pick<VmmConfig, 'switchover-dir'>): string | null {
  const v = config['switchover-dir'];
  if (v === 'off') return null;
  if (v === 'auto') {
    const dir = privateVmmDir(isDirectory('/dev/shm') ? '/dev/shm' : tmpdir());
    ensurePrivateDirectory(dir, 'switchover folder');
    return dir;
  }
  if (!isAbsolute(v) || !isDirectory(v)) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `--switchover-dir ${v} is not auto, off or an absolute path of an existing folder`,
    );
  }
  checkPrivateDirectory(v, 'switchover folder (--switchover-dir)');
  return v;
}

/**
 * `--guest-dir` as the real path of a folder, or null for none.
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` for a relative path or a path that is not a folder
 */
export function guestDirOf(config: Pick<VmmConfig, 'guest-dir'>): string | null {
  const v = config['guest-dir'];
  if (v === undefined || v === '') return null;
  if (!isAbsolute(v) || !isDirectory(v)) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `--guest-dir ${v} is not the absolute path of an existing folder; give the folder guest ` +
        'images are read from, or leave it out for built-in guests only',
    );
  }
  return realpathSync(v);
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Starts a vmm instance: the VM host, its metrics (with `--metrics-port`), its gRPC services,
 * then registration with the migrator.
 * Stopping it destroys its VMs (releasing leases and clone attachments) after the server is down.
 */
export async function startVmm(config: VmmConfig, parentLogger: Logger): Promise<Vmm> {
  const logger = parentLogger.child({ vmm: config.id });
  const hostId = hostIdOf(config);
  // Its certificate must name this instance: --id is the CN.
  const tls = loadTls(config, config.id, { role: 'vmm', id: config.id });
  const switchoverDir = switchoverDirOf(config);
  if (config['data-channel'] === 'auto') {
    ensurePrivateDirectory(privateVmmDir(tmpdir()), 'data-channel folder');
  }
  const host = new VmHost({
    vmmId: config.id,
    logger,
    memstoreAddress: config.memstore,
    memstoreCredentials: channelCredentials(tls, { serverRole: 'memstore' }),
    maxVmMemory: maxVmMemoryOf(config),
    ...(config['built-in-guest-dir'] !== undefined
      ? { builtInGuestDir: config['built-in-guest-dir'] }
      : {}),
    guestDir: guestDirOf(config),
    ...(config['vcpu-threads'] > 0 ? { vcpuThreads: config['vcpu-threads'] } : {}),
    ...(config['max-vcpu-threads'] > 0 ? { maxVcpuThreads: config['max-vcpu-threads'] } : {}),
    spareThreads: config['spare-vcpu-threads'],
  });
  // What a killed predecessor of this instance left: before this process adds its own.
  await sweepLeftovers(
    {
      vmmId: config.id,
      switchoverDir,
      socketDir: config['data-channel'] === 'auto' ? privateVmmDir(tmpdir()) : null,
    },
    logger,
  );
  const migrations = new MigrationManager(host, logger, switchoverDir, tls);
  let advertised = '';
  let server: RunningServer;
  let metricsServer: MetricsServer | null = null;
  const metrics = config['metrics-port'] > 0 ? new ServiceMetrics('vmm') : null;
  try {
    if (metrics !== null) {
      registerVmmMetrics(metrics.registry, host, migrations);
      metricsServer = await startMetricsServer({
        name: `vmm ${config.id}`,
        host: config.host,
        port: config['metrics-port'],
        metrics,
        logger,
      });
    }
    const data = dataChannelOf(config);
    if (data !== '') {
      await migrations.listenData(data, {
        frameTimeoutMs: config['data-channel-frame-timeout-ms'],
      });
    }
    server = await startServer({
      name: 'vmm',
      host: config.host,
      port: config.port,
      logger,
      tls,
      metrics,
      shutdownTimeoutMs: config['shutdown-timeout-ms'],
      services: vmmServices({
        logger,
        id: config.id,
        address: () => advertised,
        host,
        migrations,
      }),
      // Migration targets take page frames of up to 1 MiB on one stream.
      receiveWindowBytes: 8 * 1024 * 1024,
      // CreateVm may carry a guest ELF of up to 16 MiB: the vmm, not gRPC's limit, refuses more.
      maxReceiveMessageBytes: MAX_CREATE_VM_MESSAGE,
    });
  } catch (err) {
    await metricsServer?.close();
    await migrations.close();
    await host.close();
    throw err;
  }
  advertised = config['advertise-address'] ?? server.address;
  const stopHeartbeat = startHeartbeat(
    {
      address: config.migrator,
      credentials: channelCredentials(tls, { serverRole: 'migrator' }),
    },
    {
      id: config.id,
      address: advertised,
      hostId,
      memstoreAddress: config.memstore,
      vmCount: () => host.counts().total,
      vms: () => host.hosted(),
      onVmsChanged: (listener) => host.onVmsChanged(listener),
    },
    logger,
  );
  return {
    id: config.id,
    address: server.address,
    server,
    host,
    metricsAddress: metricsServer?.address ?? null,
    stop: async (reason) => {
      stopHeartbeat();
      // Open consoles and watches end when their VMs are destroyed, so the server can drain.
      const down = server.shutdown(reason);
      await migrations.close();
      await host.close();
      await down;
      await metricsServer?.close();
    },
  };
}
