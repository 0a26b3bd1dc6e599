import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServiceProcess, type ServiceProcess } from '@handoff/service';
import { ensurePki } from '@handoff/service/pki';
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

/** What {@link startCluster} starts and how. */
export interface ClusterOptions {
  /** Directory for the memstore catalog, persistent regions and ready files. */
  stateDir: string;
  /** tmpfs directory for volatile regions (default: memstore's own default). */
  volatileDir?: string;
  /** Fixed ports, or 0 everywhere to pick free ones (tests). */
  ports: { memstore: number; migrator: number; vmms: Record<string, number> };
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
  memstore: string;
  migrator: string;
  vmms: Record<string, string>;
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
  if (tlsDir !== null) await ensurePki(tlsDir);
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
    // memstore first: the migrator asks it about leases, so it needs memstore's bound address
    // (a free port is known only once memstore serves; restarts keep the port).
    const [memstore] = await allStarted([
      start(
        {
          name: 'memstore',
          app: 'memstore',
          args: [
            '--state-dir',
            join(opts.stateDir, 'memstore'),
            '--persistent-dir',
            join(opts.stateDir, 'memstore', 'regions'),
            ...(opts.volatileDir !== undefined ? ['--volatile-dir', opts.volatileDir] : []),
            ...(await metricsArgs(opts.metricsPorts?.memstore)),
          ],
        },
        opts.ports.memstore,
      ),
    ]);
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
    const vmmMetrics = await Promise.all(
      Object.keys(opts.ports.vmms).map((id) => metricsArgs(opts.metricsPorts?.vmms[id])),
    );
    const vmmList = await allStarted(
      Object.entries(opts.ports.vmms).map(([id, port], i) =>
        start(
          {
            name: id,
            app: 'vmm',
            args: [
              '--id',
              id,
              '--migrator',
              migrator!.address,
              '--memstore',
              memstore!.address,
              ...(opts.guestDir !== undefined ? ['--guest-dir', opts.guestDir] : []),
              ...vmmMetrics[i]!,
            ],
          },
          port,
        ),
      ),
    );
    const vmms = Object.fromEntries(vmmList.map((v) => [v.name, v.address]));
    const metrics = Object.fromEntries(
      [memstore!, migrator!, ...vmmList].flatMap((p) =>
        p.metricsAddress === null ? [] : [[p.name, p.metricsAddress]],
      ),
    );
    return {
      memstore: memstore!.address,
      migrator: migrator!.address,
      vmms,
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
