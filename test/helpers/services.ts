import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServiceProcess, type ServiceProcess } from '@handoff/service';

export type { ServiceProcess } from '@handoff/service';

/** Repository root (test/helpers/../..). */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The compiled executable of a service (`npm test` builds first). */
export function serviceMain(app: 'memstore' | 'migrator' | 'vmm'): string {
  return join(repoRoot, 'apps', app, 'dist', 'main.js');
}

/**
 * Starts the built service `app` on a free port with JSON logs (`--port 0 --log-format json
 * ...args`) through `startServiceProcess`, the one way every test, bench and the local cluster
 * start a service, and resolves once its ready file says it serves.
 */
export function startService(
  app: 'memstore' | 'migrator' | 'vmm',
  args: string[] = [],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<ServiceProcess> {
  return startServiceProcess({
    name: app,
    entry: serviceMain(app),
    args: ['--port', '0', '--log-format', 'json', ...args],
    ...(opts.env !== undefined ? { env: opts.env } : {}),
    ...(opts.timeoutMs !== undefined ? { readyTimeoutMs: opts.timeoutMs } : {}),
  });
}

/**
 * Waits until a process's output contains `text` (output arrives through a
 * pipe and may trail the process's exit or its ready file).
 */
export async function waitForOutput(
  proc: ServiceProcess,
  text: string,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!proc.output().includes(text)) {
    if (Date.now() > deadline) {
      throw new Error(`"${text}" never appeared in the output:\n${proc.output()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A TCP port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}
