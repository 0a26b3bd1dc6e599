import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServiceProcess, type ServiceProcess } from '@handoff/service';
import { CLUSTER_IDENTITIES, ensurePki } from '@handoff/service/pki';
import type { PeerIdentity } from '@handoff/service';
import { DEFAULT_RESTART_POLICY, type RestartPolicy } from './restart-policy.js';
import { SupervisedService, type SupervisionEvent } from './supervisor.js';

/** One service of the local cluster. */
export interface ServiceSpec {
  /** Label in logs and the summary (memstore, migrator, vmm-a, ...). */
  name: string;
  /** Workspace package whose dist/main.js is the executable. */
  app: 'memstore' | 'migrator' | 'vmm';
  args: string[];
}

/** The host id of the cluster's first host (memstore, vmm-a, vmm-b). */
export const FIRST_HOST_ID = 'host-1';

/**
 * A host beyond the first (host-2, host-3, ...): its own memstore (`memstore-<n>`, with its own
 * state, persistent and volatile folders and port) and vmm instances that register with its
 * host id and use only that memstore.
 */
export interface ExtraHostOptions {
  /** Its memstore's port (0: a free one). */
  memstorePort: number;
  /** Its vmm instances by id, with their ports (0: free ones). */
  vmms: Record<string, number>;
  /** Metrics ports of its memstore and vmm instances (0: free); absent: none serve metrics. */
  metricsPorts?: { memstore: number; vmms: Record<string, number> };
  /**
   * tmpfs folder of its memstore's volatile regions (and lease socket). Default: the first
   * host's volatile folder (or memstore's default, /dev/shm/handoff-<uid>) with `-host-<n>`.
   */
  volatileDir?: string;
}

/** One host of a started cluster: its memstore and the vmm instances that use it. */
export interface ClusterHost {
  /** host-1, host-2, ... (the vmm instances' --host-id). */
  id: string;
  /** Its memstore's service name (memstore, memstore-2, ...). */
  memstoreName: string;
  /** Its memstore's address. */
  memstore: string;
  /** The ids of its vmm instances. */
  vmms: string[];
  /** Its memstore's --state-dir (catalog). */
  stateDir: string;
  /** Its memstore's --persistent-dir. */
  persistentDir: string;
  /** Its memstore's --volatile-dir; null: memstore's default. */
  volatileDir: string | null;
}

/** What {@link startCluster} starts and how. */
export interface ClusterOptions {
  /** Directory for the memstore catalog, persistent regions and ready files. */
  stateDir: string;
  /** tmpfs directory for volatile regions (default: memstore's own default). */
  volatileDir?: string;
  /** Fixed ports of the first host's services and the migrator, or 0 to pick free ones (tests). */
  ports: { memstore: number; migrator: number; vmms: Record<string, number> };
  /**
   * Hosts beyond the first ({@link FIRST_HOST_ID}): host-2 is the first of them, and so on.
   * Their certificates are issued with the cluster's PKI. Default: none.
   */
  extraHosts?: ExtraHostOptions[];
  /**
   * Metrics ports (`--metrics-port`) by service, the same shape as `ports`; 0 picks a free port
   * once, kept across restarts. Absent: no service serves metrics.
   */
  metricsPorts?: { memstore: number; migrator: number; vmms: Record<string, number> };
  host?: string;
  logFormat?: 'json' | 'pretty';
  logLevel?: string;
  /** The vmm instances' guest folder (`--guest-dir`); default: none, built-in guests only. */
  guestDir?: string;
  /** Receives every output line of every service, already prefixed. */
  onLine?: (service: string, line: string, stream: 'stdout' | 'stderr') => void;
  /**
   * How a service that dies while the cluster is up is restarted (same port and flags); null:
   * it stays down. Default {@link DEFAULT_RESTART_POLICY}.
   */
  restart?: RestartPolicy | null;
  /** Called for every death, restart and give-up of a service while the cluster is up. */
  onEvent?: (event: SupervisionEvent) => void;
  /** How long to wait for each service to become ready. */
  readyTimeoutMs?: number;
  /**
   * Run every service plaintext (`--insecure`). Default: mutual TLS with the PKI in
   * `<stateDir>/tls`, created on the first start (a CA and a certificate per service and for
   * the operator).
   */
  insecure?: boolean;
}

/** A started local cluster: the services' addresses and a way to stop them all. */
export interface Cluster {
  /** The first host's memstore. */
  memstore: string;
  migrator: string;
  /** Every vmm instance of every host, by id. */
  vmms: Record<string, string>;
  /** Every host in order (host-1 first), with its memstore and vmm instances. */
  hosts: ClusterHost[];
  /**
   * Where to scrape each service's Prometheus metrics (`http://<address>/metrics`), by name
   * (memstore, migrator, vmm-a, ...); empty without {@link ClusterOptions.metricsPorts}.
   */
  metrics: Record<string, string>;
  /** The PKI folder (`ca.pem`, `operator.pem`, ...), or null for an `insecure` cluster. */
  tlsDir: string | null;
  /** The processes serving now (a service being restarted is missing until it serves again). */
  readonly services: ServiceProcess[];
  /**
   * Stops vmm instances first, then migrator and memstore, with their pending restarts;
   * SIGKILL after timeoutMs.
   */
  stop(timeoutMs?: number): Promise<void>;
}

/** Thrown when the cluster cannot start; the message names the service and what it printed. */
export class ClusterError extends Error {
  override readonly name = 'ClusterError';
}

/** The repository root (this file is tools/cluster/{src,dist}/launcher.*). */
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/**
 * Path of a service's compiled executable. The launcher starts services as processes and never
 * imports them: a tool holds no service code (eslint.config.js, module boundaries).
 */
export function serviceEntry(app: ServiceSpec['app']): string {
  return join(repoRoot, 'apps', app, 'dist', 'main.js');
}

/** The port of a `host:port` address (an IPv6 host in brackets). */
function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

/**
 * Starts memstore, migrator and the vmm instances as child processes on
 * loopback and resolves once every one has written its ready file. Children
 * run in their own process group (a terminal's Ctrl-C reaches only the
 * launcher, which stops them in order) and stop by themselves if the
 * launcher's pipe to their stdin closes. A service that dies while the cluster
 * is up is started again on the same port (see {@link ClusterOptions.restart}).
 *
 * @throws ClusterError when a service exits during start-up or is not ready in time (the ones
 *   already started are stopped first)
 */
export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const host = opts.host ?? '127.0.0.1';
  const runDir = join(opts.stateDir, 'run');
  mkdirSync(runDir, { recursive: true });
  const tlsDir = opts.insecure === true ? null : join(opts.stateDir, 'tls');
  const extra = opts.extraHosts ?? [];
  if (tlsDir !== null) await ensurePki(tlsDir, clusterIdentities(extra));
  const tlsArgs = tlsDir === null ? ['--insecure'] : ['--tls-dir', tlsDir];
  const supervised: SupervisedService[] = [];
  const policy = opts.restart === undefined ? DEFAULT_RESTART_POLICY : opts.restart;

  /** One start of a service's process; a restart passes the address it had. */
  const launch = async (
    spec: ServiceSpec,
    port: number,
    signal: AbortSignal,
  ): Promise<ServiceProcess> =>
    startServiceProcess({
      name: spec.name,
      entry: serviceEntry(spec.app),
      readyFile: join(runDir, `${spec.name}.ready.json`),
      args: [
        '--host',
        host,
        '--port',
        String(port),
        '--log-format',
        opts.logFormat ?? 'json',
        '--log-level',
        opts.logLevel ?? 'info',
        '--stop-on-stdin-close',
        ...tlsArgs,
        ...spec.args,
      ],
      env: { FORCE_COLOR: opts.logFormat === 'pretty' ? '1' : '0' },
      readyTimeoutMs: opts.readyTimeoutMs ?? 30_000,
      stdin: 'pipe',
      detached: true,
      collectOutput: false,
      onLine: (line, stream) => opts.onLine?.(spec.name, line, stream),
      signal,
    }).catch((err: unknown) => {
      throw new ClusterError(`${(err as Error).message}; see its log above`, { cause: err });
    });

  /** `--metrics-port` for a service, when the cluster serves metrics (a free one for 0). */
  const metricsArgs = async (port: number | undefined): Promise<string[]> =>
    port === undefined ? [] : ['--metrics-port', String(port === 0 ? await freePort(host) : port)];

  /** Starts a service under supervision: restarts bind the port its first start got. */
  const start = (spec: ServiceSpec, port: number): Promise<ServiceProcess> => {
    const svc = new SupervisedService(
      spec.name,
      (signal, address) => launch(spec, address === null ? port : portOf(address), signal),
      policy,
      opts.onEvent,
    );
    supervised.push(svc);
    return svc.begin();
  };

  const stop = async (timeoutMs = 10_000): Promise<void> => {
    const order = [
      supervised.filter((s) => s.name.startsWith('vmm')),
      supervised.filter((s) => !s.name.startsWith('vmm')),
    ];
    for (const group of order) await Promise.all(group.map((s) => s.stop(timeoutMs)));
  };

  try {
    const hosts = hostLayouts(opts, extra);
    // memstores first: the migrator asks the first one about leases, so it needs its bound
    // address (a free port is known only once memstore serves; restarts keep the port).
    const memstoreArgs = await Promise.all(
      hosts.map(async (h) => [
        '--state-dir',
        h.stateDir,
        '--persistent-dir',
        h.persistentDir,
        ...(h.volatileDir !== null ? ['--volatile-dir', h.volatileDir] : []),
        ...identityArgs(tlsDir, h.memstoreName, h.memstoreName !== 'memstore'),
        ...(await metricsArgs(h.metricsPorts?.memstore)),
      ]),
    );
    const memstores = await allStarted(
      hosts.map((h, i) =>
        start({ name: h.memstoreName, app: 'memstore', args: memstoreArgs[i]! }, h.memstorePort),
      ),
    );
    const memstore = memstores[0];
    const [migrator] = await allStarted([
      start(
        {
          name: 'migrator',
          app: 'migrator',
          args: [
            '--state-dir',
            join(opts.stateDir, 'migrator'),
            '--memstore',
            memstore!.address,
            ...(await metricsArgs(opts.metricsPorts?.migrator)),
          ],
        },
        opts.ports.migrator,
      ),
    ]);
    const vmmSpecs = await Promise.all(
      hosts.flatMap((h, hi) =>
        Object.entries(h.vmmPorts).map(async ([id, port]) => ({
          port,
          spec: {
            name: id,
            app: 'vmm' as const,
            args: [
              '--id',
              id,
              '--host-id',
              h.id,
              '--migrator',
              migrator!.address,
              '--memstore',
              memstores[hi]!.address,
              ...(h.switchoverDir !== null ? ['--switchover-dir', h.switchoverDir] : []),
              ...(opts.guestDir !== undefined ? ['--guest-dir', opts.guestDir] : []),
              ...(await metricsArgs(h.metricsPorts?.vmms[id])),
            ],
          },
        })),
      ),
    );
    const vmmList = await allStarted(vmmSpecs.map(({ spec, port }) => start(spec, port)));
    const vmms = Object.fromEntries(vmmList.map((v) => [v.name, v.address]));
    const metrics = Object.fromEntries(
      [...memstores, migrator!, ...vmmList].flatMap((p) =>
        p.metricsAddress === null ? [] : [[p.name, p.metricsAddress]],
      ),
    );
    return {
      memstore: memstore!.address,
      migrator: migrator!.address,
      vmms,
      hosts: hosts.map((h, i) => ({
        id: h.id,
        memstoreName: h.memstoreName,
        memstore: memstores[i]!.address,
        vmms: Object.keys(h.vmmPorts),
        stateDir: h.stateDir,
        persistentDir: h.persistentDir,
        volatileDir: h.volatileDir,
      })),
      metrics,
      tlsDir,
      get services() {
        return supervised.flatMap((s) => (s.current === null ? [] : [s.current]));
      },
      stop,
    };
  } catch (err) {
    await stop(3000);
    throw err;
  }
}

/** One host as the launcher starts it. */
interface HostLayout {
  id: string;
  memstoreName: string;
  memstorePort: number;
  stateDir: string;
  persistentDir: string;
  volatileDir: string | null;
  /** The vmm instances' --switchover-dir; null: their default (auto). */
  switchoverDir: string | null;
  vmmPorts: Record<string, number>;
  metricsPorts: { memstore: number; vmms: Record<string, number> } | undefined;
}

/**
 * Where each host's services keep their files. The first host keeps the folders a one-host
 * cluster always had (`<state>/memstore`); host n has `<state>/host-<n>/memstore`, its own
 * volatile folder and its vmm instances' own switchover folder, so no file is shared across
 * hosts.
 */
function hostLayouts(opts: ClusterOptions, extra: readonly ExtraHostOptions[]): HostLayout[] {
  const first: HostLayout = {
    id: FIRST_HOST_ID,
    memstoreName: 'memstore',
    memstorePort: opts.ports.memstore,
    stateDir: join(opts.stateDir, 'memstore'),
    persistentDir: join(opts.stateDir, 'memstore', 'regions'),
    volatileDir: opts.volatileDir ?? null,
    switchoverDir: null,
    vmmPorts: opts.ports.vmms,
    metricsPorts:
      opts.metricsPorts === undefined
        ? undefined
        : { memstore: opts.metricsPorts.memstore, vmms: opts.metricsPorts.vmms },
  };
  const volatileBase = opts.volatileDir ?? `/dev/shm/handoff-${process.getuid?.() ?? 0}`;
  return [
    first,
    ...extra.map((h, i): HostLayout => {
      const n = i + 2;
      const dir = join(opts.stateDir, `host-${n}`);
      const switchoverDir = join(dir, 'switchover');
      // vmm refuses a switchover folder others can enter
      mkdirSync(switchoverDir, { recursive: true, mode: 0o700 });
      return {
        id: `host-${n}`,
        memstoreName: `memstore-${n}`,
        memstorePort: h.memstorePort,
        stateDir: join(dir, 'memstore'),
        persistentDir: join(dir, 'memstore', 'regions'),
        volatileDir: h.volatileDir ?? `${volatileBase}-host-${n}`,
        switchoverDir,
        vmmPorts: h.vmms,
        metricsPorts: h.metricsPorts,
      };
    }),
  ];
}

/** The PKI of a cluster: the one-host identities plus each extra host's memstore and vmms. */
function clusterIdentities(extra: readonly ExtraHostOptions[]): PeerIdentity[] {
  return [
    ...CLUSTER_IDENTITIES,
    ...extra.flatMap((h, i): PeerIdentity[] => [
      { id: `memstore-${i + 2}`, role: 'memstore' },
      ...Object.keys(h.vmms).map((id): PeerIdentity => ({ id, role: 'vmm' })),
    ]),
  ];
}

/**
 * The certificate of a memstore that is not the first (`memstore-2.pem`): memstore reads
 * `memstore.pem` from --tls-dir unless --tls-cert and --tls-key name others.
 */
function identityArgs(tlsDir: string | null, name: string, own: boolean): string[] {
  if (tlsDir === null || !own) return [];
  return ['--tls-cert', join(tlsDir, `${name}.pem`), '--tls-key', join(tlsDir, `${name}.key`)];
}

/**
 * Waits for every start to settle (so none is still starting when the caller cleans up), then
 * rejects with the first failure or resolves with all of them.
 */
async function allStarted(starts: Promise<ServiceProcess>[]): Promise<ServiceProcess[]> {
  const settled = await Promise.allSettled(starts);
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<ServiceProcess>).value);
}

/**
 * A TCP port free on `host` now (the kernel picks it; closed again before it is returned, so
 * another process could take it first — the service's start then fails and says so).
 */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const a = server.address();
      server.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}
