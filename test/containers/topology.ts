import { chmodSync, chownSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GenericContainer, StartedTestContainer } from 'testcontainers';
import { removeLabelled, TEST_IMAGE } from './images.js';

// No image registry is reachable: testcontainers must not start its reaper (an image it would
// pull). The suite removes its containers itself (stop(), then the label sweep).
process.env['TESTCONTAINERS_RYUK_DISABLED'] = 'true';
const { GenericContainer: Container, Wait } = await import('testcontainers');

/** The label every container of one suite run carries, for the sweep after it. */
export const RUN_LABEL = 'dev.handoff.test-run';

/** One service container: its addresses on loopback (host networking) and the container. */
export interface ServiceContainer {
  readonly name: string;
  readonly address: string;
  /** host:port of its Prometheus metrics (`--metrics-port`). */
  readonly metrics: string;
  readonly container: StartedTestContainer;
}

/** The one-host topology of docker-compose.yml, started by the suite on free ports. */
export interface ContainerCluster {
  readonly memstore: ServiceContainer;
  readonly migrator: ServiceContainer;
  readonly vmms: Record<'vmm-a' | 'vmm-b', ServiceContainer>;
  /** The host folder of the whole PKI: vmctl on the host uses its operator certificate. */
  readonly tlsDir: string;
  /** The host folder mounted at /dev/shm in memstore and the vmms (their shared memory). */
  readonly shmDir: string;
  /** The uid:gid the services run as. */
  readonly user: string;
  /** A container of the image with the suite's label, started by the caller. */
  container(): GenericContainer;
  /** Stops and removes every container of the run and deletes its folders; never throws. */
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (asked of the kernel, then released). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts the topology of docker-compose.yml from {@link TEST_IMAGE}: the init step (the PKI and
 * each service's key folder, as the services' user), memstore, migrator, vmm-a and vmm-b, each
 * on a free 127.0.0.1 port with host networking, memstore and the vmms sharing one host tmpfs
 * folder at /dev/shm. Every start waits for the container's health check (handoff-health-probe
 * through grpc.health.v1), not for a port. The services run as the image's user (10001) when the
 * suite runs as root, else as the suite's own user (so it can read the operator's key).
 * On failure whatever started is removed before the error is thrown.
 */
export async function startContainerCluster(runId: string): Promise<ContainerCluster> {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const [runUid, runGid] = uid === 0 ? [10001, 10001] : [uid, gid];
  const user = `${runUid}:${runGid}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'handoff-containers-'));
  // Entered (not listed) by the services' user, as a folder docker creates for a bind is.
  chmodSync(stateDir, 0o711);
  const shmDir = mkdtempSync('/dev/shm/handoff-containers-');
  chmodSync(shmDir, 0o700);
  if (uid === 0) chownSync(shmDir, runUid, runGid);
  const started: StartedTestContainer[] = [];

  const container = (): GenericContainer =>
    new Container(TEST_IMAGE).withLabels({ [RUN_LABEL]: runId }).withNetworkMode('host');

  const stop = async (): Promise<void> => {
    for (const c of started.reverse()) {
      await c.stop({ timeout: 5_000 }).catch(() => undefined);
    }
    await removeLabelled(RUN_LABEL, runId).catch(() => undefined);
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(shmDir, { recursive: true, force: true });
  };

  const service = async (
    name: string,
    command: string[],
    mounts: { source: string; target: string; mode?: 'ro' | 'rw' }[],
  ): Promise<ServiceContainer> => {
    const port = await freePort();
    const metricsPort = await freePort();
    const address = `127.0.0.1:${port}`;
    const c = await container()
      .withName(`handoff-test-${runId}-${name}`)
      .withUser(user)
      .withCommand([
        ...command,
        `--port=${port}`,
        `--metrics-port=${metricsPort}`,
        '--tls-dir=/etc/handoff/tls',
      ])
      .withBindMounts([
        ...mounts,
        { source: join(stateDir, 'keys', name), target: '/etc/handoff/tls', mode: 'ro' },
      ])
      .withHealthCheck({
        test: ['CMD', 'handoff-health-probe', '--ca=/etc/handoff/tls/ca.pem', address],
        interval: 500,
        timeout: 3_000,
        retries: 60,
      })
      .withWaitStrategy(Wait.forHealthCheck())
      .withStartupTimeout(60_000)
      .start();
    started.push(c);
    return { name, address, metrics: `127.0.0.1:${metricsPort}`, container: c };
  };

  try {
    started.push(
      await container()
        .withName(`handoff-test-${runId}-init`)
        .withUser('0:0')
        .withNetworkMode('none')
        .withEnvironment({ HANDOFF_UID: String(runUid), HANDOFF_GID: String(runGid) })
        .withCommand(['handoff-init', '/var/lib/handoff'])
        .withBindMounts([{ source: stateDir, target: '/var/lib/handoff', mode: 'rw' }])
        .withWaitStrategy(Wait.forOneShotStartup())
        .start(),
    );
    const shm = { source: shmDir, target: '/dev/shm', mode: 'rw' as const };
    const memstore = await service(
      'memstore',
      ['memstore', '--state-dir=/var/lib/handoff/memstore'],
      [shm, { source: join(stateDir, 'memstore'), target: '/var/lib/handoff/memstore' }],
    );
    const migrator = await service(
      'migrator',
      ['migrator', '--state-dir=/var/lib/handoff/migrator', `--memstore=${memstore.address}`],
      [{ source: join(stateDir, 'migrator'), target: '/var/lib/handoff/migrator' }],
    );
    const vmm = (id: 'vmm-a' | 'vmm-b'): Promise<ServiceContainer> =>
      service(
        id,
        ['vmm', `--id=${id}`, `--memstore=${memstore.address}`, `--migrator=${migrator.address}`],
        [shm],
      );
    const [a, b] = await Promise.all([vmm('vmm-a'), vmm('vmm-b')]);
    return {
      memstore,
      migrator,
      vmms: { 'vmm-a': a!, 'vmm-b': b! },
      tlsDir: join(stateDir, 'tls'),
      shmDir,
      user,
      container,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
