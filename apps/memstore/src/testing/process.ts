import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SERVICE_MALLOC_ENV } from '@handoff/service';
import type { TempDirs } from './fixtures.js';

const here = dirname(fileURLToPath(import.meta.url));

/** The compiled memstore executable, from sources (tests) or from dist (benchmarks). */
export const MEMSTORE_MAIN = here.endsWith(join('dist', 'testing'))
  ? join(here, '..', 'main.js')
  : join(here, '..', '..', 'dist', 'main.js');

/** A memstore process started from dist, as the local cluster starts it. */
export interface MemstoreProcess {
  readonly child: ChildProcess;
  readonly address: string;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** SIGKILL (a crash); resolves once it exited. */
  kill9(): Promise<void>;
  /** SIGTERM (graceful); resolves once it exited. */
  stop(): Promise<void>;
}

/**
 * Starts `dist/main.js` on a free port over `dirs` (ready file, JSON logs collected) and
 * resolves once it serves. Needs the build.
 *
 * @throws Error with its output when it exits or is not ready within 20 s
 */
export async function startMemstoreProcess(
  dirs: TempDirs,
  opts: { env?: NodeJS.ProcessEnv; logLevel?: string } = {},
): Promise<MemstoreProcess> {
  const ready = join(dirs.stateDir, 'ready.json');
  rmSync(ready, { force: true });
  const child = spawn(
    process.execPath,
    [
      MEMSTORE_MAIN,
      '--port',
      '0',
      '--ready-file',
      ready,
      '--log-format',
      'json',
      ...(opts.logLevel !== undefined ? ['--log-level', opts.logLevel] : []),
      '--state-dir',
      dirs.stateDir,
      '--volatile-dir',
      dirs.volatileDir,
      '--persistent-dir',
      dirs.persistentDir,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...SERVICE_MALLOC_ENV, ...process.env, ...opts.env },
    },
  );
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 20_000;
  while (!existsSync(ready)) {
    if (child.exitCode !== null) throw new Error(`memstore exited during start:\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`memstore not ready in time:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const { address } = JSON.parse(readFileSync(ready, 'utf8')) as { address: string };
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  const end = async (signal: NodeJS.Signals): Promise<void> => {
    if (alive()) child.kill(signal);
    await exited;
  };
  return {
    child,
    address,
    output: () => out,
    kill9: () => end('SIGKILL'),
    stop: () => end('SIGTERM'),
  };
}
