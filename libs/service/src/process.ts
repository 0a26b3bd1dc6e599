import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SERVICE_MALLOC_ENV } from './main.js';
import type { ReadyInfo } from './ready.js';

/**
 * The one way to start a Handoff service executable as a child process and wait until it
 * serves: the launcher of the local cluster, the cross-process tests and the benches all go
 * through {@link startServiceProcess}. Readiness is the service's `--ready-file` (written
 * atomically by `serviceMain` once the gRPC server listens), so no port has to be known ahead
 * and no health call races the bind.
 */

/** How to start one service process. */
export interface ServiceProcessOptions {
  /** Label in error messages (memstore, vmm-a, ...). */
  readonly name: string;
  /** The compiled executable, e.g. `apps/memstore/dist/main.js`; run with this Node. */
  readonly entry: string;
  /** The service's flags; `--ready-file` is added here, everything else is the caller's. */
  readonly args?: readonly string[];
  /** Where the ready file goes (default: a fresh temporary directory, removed once read). */
  readonly readyFile?: string;
  /** Extra environment, over {@link SERVICE_MALLOC_ENV} and this process's environment. */
  readonly env?: NodeJS.ProcessEnv;
  /** How long to wait for the ready file (default 20 s); the process is killed after it. */
  readonly readyTimeoutMs?: number;
  /**
   * `pipe` keeps a pipe to the child's standard input open: with the service's
   * `--stop-on-stdin-close`, the child stops when its parent dies. Default `ignore`.
   */
  readonly stdin?: 'ignore' | 'pipe';
  /** Run the child in its own process group (a terminal's Ctrl-C then reaches only the parent). */
  readonly detached?: boolean;
  /** Keep everything the child prints for {@link ServiceProcess.output} (default true). */
  readonly collectOutput?: boolean;
  /** Receives every complete output line, as it arrives (the last one also when unterminated). */
  readonly onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /**
   * Aborting it during start-up kills the child (SIGKILL) and rejects with ServiceStartError:
   * whoever gave up on the start (a launcher told to stop) leaves no process behind.
   */
  readonly signal?: AbortSignal;
}

/** A started service process. */
export interface ServiceProcess {
  readonly name: string;
  /** host:port its gRPC server listens on, from the ready file. */
  readonly address: string;
  /** host:port of its metrics endpoint (`GET /metrics`), or null when it serves none. */
  readonly metricsAddress: string | null;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves with the exit code (null when a signal ended it) once the process is gone. */
  readonly exited: Promise<number | null>;
  /** Everything it printed so far, stdout and stderr interleaved ('' without collectOutput). */
  output(): string;
  /**
   * SIGTERM, then SIGKILL after `killAfterMs` (default 10 s); resolves with the exit code once
   * the process is gone. Safe to call when it already exited.
   */
  stop(killAfterMs?: number): Promise<number | null>;
  /** SIGKILL (a crash); resolves once the process is gone. */
  kill9(): Promise<void>;
}

/** Thrown when a service exits or stays unready during start-up; the message carries its output. */
export class ServiceStartError extends Error {
  override readonly name = 'ServiceStartError';
}

/**
 * Spawns `node entry --ready-file F ...args` and resolves once F holds the service's
 * {@link ReadyInfo}.
 *
 * @throws ServiceStartError when the entry is missing (build first), the process exits during
 *   start-up, the ready file does not appear within `readyTimeoutMs`, or `signal` aborts the
 *   start (the process is killed in the last two cases)
 */
export async function startServiceProcess(opts: ServiceProcessOptions): Promise<ServiceProcess> {
  if (!existsSync(opts.entry)) {
    throw new ServiceStartError(`${opts.entry} is missing: build first with \`npm run build\``);
  }
  const tempDir =
    opts.readyFile === undefined ? mkdtempSync(join(tmpdir(), `handoff-${opts.name}-`)) : null;
  const readyFile = opts.readyFile ?? join(tempDir!, 'ready.json');
  rmSync(readyFile, { force: true });
  const child = spawn(
    process.execPath,
    [opts.entry, '--ready-file', readyFile, ...(opts.args ?? [])],
    {
      stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
      detached: opts.detached ?? false,
      env: { ...SERVICE_MALLOC_ENV, ...process.env, ...opts.env },
    },
  );
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  let out = '';
  const collect = opts.collectOutput ?? true;
  for (const stream of ['stdout', 'stderr'] as const) {
    let partial = '';
    child[stream]!.setEncoding('utf8');
    child[stream]!.on('data', (chunk: string) => {
      if (collect) out += chunk;
      if (opts.onLine === undefined) return;
      partial += chunk;
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        opts.onLine(partial.slice(0, nl), stream);
        partial = partial.slice(nl + 1);
      }
    });
    child[stream]!.on('end', () => {
      if (partial !== '') opts.onLine?.(partial, stream);
      partial = '';
    });
  }
  const gone = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const stop = async (killAfterMs = 10_000): Promise<number | null> => {
    if (!gone()) {
      const kill = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      child.kill('SIGTERM');
      await exited;
      clearTimeout(kill);
    }
    return exited;
  };
  try {
    const info = await waitForReadyFile(readyFile, opts, gone, () => out);
    return {
      name: opts.name,
      address: info.address,
      metricsAddress: info.metrics ?? null,
      pid: info.pid,
      child,
      exited,
      output: () => out,
      stop,
      kill9: async () => {
        if (!gone()) child.kill('SIGKILL');
        await exited;
      },
    };
  } catch (err) {
    if (!gone()) child.kill('SIGKILL');
    await exited;
    throw err;
  } finally {
    if (tempDir !== null) rmSync(tempDir, { recursive: true, force: true });
  }
}

/**
 * Polls for the ready file every 20 ms until it parses, the process exits, time runs out, or the
 * start is aborted.
 */
async function waitForReadyFile(
  file: string,
  opts: ServiceProcessOptions,
  gone: () => boolean,
  output: () => string,
): Promise<ReadyInfo> {
  const timeoutMs = opts.readyTimeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  const printed = (): string => (output() === '' ? '' : `:\n${output()}`);
  for (;;) {
    if (existsSync(file)) {
      try {
        return JSON.parse(readFileSync(file, 'utf8')) as ReadyInfo;
      } catch {
        // The service renames a complete file into place, so this is someone else's file:
        // keep waiting for ours until the deadline.
      }
    }
    if (gone()) {
      throw new ServiceStartError(`${opts.name} exited during start-up${printed()}`);
    }
    if (opts.signal?.aborted === true) {
      throw new ServiceStartError(`the start of ${opts.name} was aborted`);
    }
    if (Date.now() > deadline) {
      throw new ServiceStartError(`${opts.name} was not ready after ${timeoutMs} ms${printed()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
