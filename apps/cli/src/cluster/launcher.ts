import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SERVICE_MALLOC_ENV } from '@handoff/service';
import { CliError } from '../errors.js';

/** One service of the local cluster. */
export interface ServiceSpec {
  /** Label in logs and the summary (memstore, migrator, vmm-a, ...). */
  name: string;
  /** Workspace package whose dist/main.js is the executable. */
  app: 'memstore' | 'migrator' | 'vmm';
  args: string[];
}

export interface ClusterOptions {
  /** Directory for the memstore catalog, persistent regions and ready files. */
  stateDir: string;
  /** tmpfs directory for volatile regions (default: memstore's own default). */
  volatileDir?: string;
  /** Fixed ports, or 0 everywhere to pick free ones (tests). */
  ports: { memstore: number; migrator: number; vmms: Record<string, number> };
  host?: string;
  logFormat?: 'json' | 'pretty';
  logLevel?: string;
  /** Receives every output line of every service, already prefixed. */
  onLine?: (service: string, line: string, stream: 'stdout' | 'stderr') => void;
  /** Called if a service exits while the cluster is up (not during stop()). */
  onExit?: (service: string, code: number | null, signal: NodeJS.Signals | null) => void;
  /** How long to wait for each service to become ready. */
  readyTimeoutMs?: number;
}

export interface RunningService {
  name: string;
  address: string;
  pid: number;
  child: ChildProcess;
}

export interface Cluster {
  memstore: string;
  migrator: string;
  vmms: Record<string, string>;
  services: RunningService[];
  /** Stops vmm instances first, then migrator and memstore; SIGKILL after timeoutMs. */
  stop(timeoutMs?: number): Promise<void>;
}

const appsDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Path of an app's compiled executable; tells the user to build when missing. */
export function serviceEntry(app: ServiceSpec['app']): string {
  const entry = join(appsDir, app, 'dist', 'main.js');
  if (!existsSync(entry)) {
    throw new CliError('CLI_FAILED', `${entry} is missing: build first with \`npm run build\``);
  }
  return entry;
}

function waitForReady(
  file: string,
  child: ChildProcess,
  name: string,
  timeoutMs: number,
): Promise<{ address: string; pid: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = (): void => {
      if (child.exitCode !== null || child.signalCode !== null) {
        reject(
          new CliError(
            'CLI_FAILED',
            `${name} exited during start-up (code ${child.exitCode}); see its log above`,
          ),
        );
        return;
      }
      if (existsSync(file)) {
        try {
          const info = JSON.parse(readFileSync(file, 'utf8')) as { address: string; pid: number };
          resolve(info);
          return;
        } catch {
          // written atomically; a parse error means a foreign file: keep polling until timeout
        }
      }
      if (Date.now() - started > timeoutMs) {
        reject(
          new CliError(
            'CLI_FAILED',
            `${name} was not ready after ${timeoutMs} ms; see its log above`,
          ),
        );
        return;
      }
      setTimeout(poll, 25);
    };
    poll();
  });
}

function pipeLines(child: ChildProcess, name: string, opts: ClusterOptions): void {
  for (const stream of ['stdout', 'stderr'] as const) {
    let buffered = '';
    child[stream]?.setEncoding('utf8');
    child[stream]?.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        opts.onLine?.(name, buffered.slice(0, nl), stream);
        buffered = buffered.slice(nl + 1);
      }
    });
    child[stream]?.on('end', () => {
      if (buffered !== '') opts.onLine?.(name, buffered, stream);
      buffered = '';
    });
  }
}

/**
 * Starts memstore, migrator and the vmm instances as child processes on
 * loopback and resolves once every one has written its ready file. Children
 * run in their own process group (a terminal's Ctrl-C reaches only the
 * launcher, which stops them in order) and stop by themselves if the
 * launcher's pipe to their stdin closes.
 */
export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const host = opts.host ?? '127.0.0.1';
  const runDir = join(opts.stateDir, 'run');
  mkdirSync(runDir, { recursive: true });
  const common = (name: string, port: number) => {
    const ready = join(runDir, `${name}.ready.json`);
    rmSync(ready, { force: true });
    return {
      ready,
      args: [
        '--host',
        host,
        '--port',
        String(port),
        '--ready-file',
        ready,
        '--log-format',
        opts.logFormat ?? 'json',
        '--log-level',
        opts.logLevel ?? 'info',
        '--stop-on-stdin-close',
      ],
    };
  };
  const services: RunningService[] = [];
  let stopping = false;

  const launch = async (spec: ServiceSpec, port: number): Promise<RunningService> => {
    const c = common(spec.name, port);
    const child = spawn(process.execPath, [serviceEntry(spec.app), ...c.args, ...spec.args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
      env: {
        ...SERVICE_MALLOC_ENV,
        ...process.env,
        FORCE_COLOR: opts.logFormat === 'pretty' ? '1' : '0',
      },
    });
    pipeLines(child, spec.name, opts);
    child.on('exit', (code, signal) => {
      if (!stopping) opts.onExit?.(spec.name, code, signal);
    });
    const info = await waitForReady(c.ready, child, spec.name, opts.readyTimeoutMs ?? 30_000);
    const svc = { name: spec.name, address: info.address, pid: info.pid, child };
    services.push(svc);
    return svc;
  };

  const stop = async (timeoutMs = 10_000): Promise<void> => {
    stopping = true;
    const order = [
      services.filter((s) => s.name.startsWith('vmm')),
      services.filter((s) => !s.name.startsWith('vmm')),
    ];
    for (const group of order) await Promise.all(group.map((s) => stopChild(s.child, timeoutMs)));
  };

  try {
    const [memstore, migrator] = await Promise.all([
      launch(
        {
          name: 'memstore',
          app: 'memstore',
          args: [
            '--state-dir',
            join(opts.stateDir, 'memstore'),
            '--persistent-dir',
            join(opts.stateDir, 'memstore', 'regions'),
            ...(opts.volatileDir !== undefined ? ['--volatile-dir', opts.volatileDir] : []),
          ],
        },
        opts.ports.memstore,
      ),
      launch(
        {
          name: 'migrator',
          app: 'migrator',
          args: ['--state-dir', join(opts.stateDir, 'migrator')],
        },
        opts.ports.migrator,
      ),
    ]);
    const vmms: Record<string, string> = {};
    await Promise.all(
      Object.entries(opts.ports.vmms).map(async ([id, port]) => {
        const v = await launch(
          {
            name: id,
            app: 'vmm',
            args: ['--id', id, '--migrator', migrator.address, '--memstore', memstore.address],
          },
          port,
        );
        vmms[id] = v.address;
      }),
    );
    return { memstore: memstore.address, migrator: migrator.address, vmms, services, stop };
  } catch (err) {
    await stop(3000);
    for (const s of [...services]) stopChild(s.child, 0).catch(() => undefined);
    throw err;
  }
}

/** SIGTERM, then SIGKILL after timeoutMs; resolves when the process is gone. */
export function stopChild(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
