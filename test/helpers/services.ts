import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SERVICE_MALLOC_ENV } from '@handoff/service';

/** Repository root (test/helpers/../..). */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A built service process started by a test. */
export interface ServiceProcess {
  address: string;
  pid: number;
  child: ChildProcess;
  /** Everything the process printed so far (stdout and stderr). */
  output(): string;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait. */
  kill9(): Promise<void>;
}

/**
 * Starts `node apps/<app>/dist/main.js --port 0 --ready-file F ...args` and
 * resolves once it is serving. Requires a build (`npm test` builds first).
 */
export async function startService(
  app: 'memstore' | 'migrator' | 'vmm',
  args: string[] = [],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<ServiceProcess> {
  const entry = join(repoRoot, 'apps', app, 'dist', 'main.js');
  if (!existsSync(entry)) throw new Error(`${entry} missing: run \`npm run build\` first`);
  const dir = mkdtempSync(join(tmpdir(), `handoff-${app}-`));
  const ready = join(dir, 'ready.json');
  const child = spawn(
    process.execPath,
    [entry, '--port', '0', '--ready-file', ready, '--log-format', 'json', ...args],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...SERVICE_MALLOC_ENV, ...process.env, ...opts.env },
    },
  );
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  while (!existsSync(ready)) {
    if (child.exitCode !== null)
      throw new Error(`${app} exited with ${child.exitCode} during start:\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${app} not ready in time:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const info = JSON.parse(readFileSync(ready, 'utf8')) as { address: string; pid: number };
  rmSync(dir, { recursive: true, force: true });
  return {
    address: info.address,
    pid: info.pid,
    child,
    output: () => out,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
    kill9: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
