import * as grpc from '@grpc/grpc-js';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  channelCredentials,
  startServiceProcess,
  type PeerIdentity,
  type RemoteError,
  type ServiceProcess,
} from '@handoff/service';
import { testCredentials, testTlsArgs } from '@handoff/service/testing';

export type { ServiceProcess } from '@handoff/service';

/** A service process started for a test, with the credentials of a typical client of it. */
export type TestService = ServiceProcess & {
  /** False when it runs `--insecure` (plaintext). */
  readonly tls: boolean;
  /**
   * Credentials of a client that plays the role tests usually play against this service
   * ({@link TEST_CLIENTS}), from the run's test PKI; plaintext for an `--insecure` service.
   */
  readonly credentials: grpc.ChannelCredentials;
};

type App = 'memstore' | 'migrator' | 'vmm';

/**
 * Who a test's client is, per service: a vmm for memstore (it takes leases, and may create and
 * read regions), the migrator for a vmm (it runs VMs and drives migrations), the operator for
 * the migrator (jobs, the vmm list).
 */
export const TEST_CLIENTS: Record<App, PeerIdentity> = {
  memstore: { id: 'test-vmm', role: 'vmm' },
  vmm: { id: 'test-migrator', role: 'migrator' },
  migrator: { id: 'operator', role: 'operator' },
};

/** The identity a service started with `args` proves: its name, or a vmm's `--id`. */
export function serviceIdentity(app: App, args: readonly string[]): PeerIdentity {
  if (app !== 'vmm') return { id: app, role: app };
  const at = args.lastIndexOf('--id');
  return { id: at >= 0 && at + 1 < args.length ? args[at + 1]! : 'vmm-a', role: 'vmm' };
}

/** Client credentials for a service of `app` (plaintext when `tls` is false). */
export async function credentialsFor(app: App, tls: boolean): Promise<grpc.ChannelCredentials> {
  return tls ? testCredentials(TEST_CLIENTS[app], { serverRole: app }) : channelCredentials(null);
}

/** Repository root (test/helpers/../..). */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The compiled executable of a service (`npm test` builds first). */
export function serviceMain(app: 'memstore' | 'migrator' | 'vmm'): string {
  return join(repoRoot, 'apps', app, 'dist', 'main.js');
}

/**
 * Starts the built service `app` on a free port with JSON logs (`--port 0 --log-format json
 * ...args`) through `startServiceProcess`, the one way every test, bench and the local cluster
 * start a service, and resolves once its ready file says it serves. It serves mutual TLS with
 * the certificate the run's test PKI has for it (its name, or a vmm's `--id`), unless `args`
 * hold `--insecure` or TLS flags of their own.
 */
export async function startService(
  app: App,
  args: string[] = [],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<TestService> {
  const own = args.some((a) => a === '--insecure' || a.startsWith('--tls-'));
  const tls = !args.includes('--insecure');
  const tlsArgs = own ? [] : await testTlsArgs(serviceIdentity(app, args));
  const proc = await startServiceProcess({
    name: app,
    entry: serviceMain(app),
    args: ['--port', '0', '--log-format', 'json', ...tlsArgs, ...args],
    ...(opts.env !== undefined ? { env: opts.env } : {}),
    ...(opts.timeoutMs !== undefined ? { readyTimeoutMs: opts.timeoutMs } : {}),
  });
  return Object.assign(proc, { tls, credentials: await credentialsFor(app, tls) });
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

/**
 * The gRPC status name, Handoff code and message a call was refused with.
 * @throws when the call succeeded
 */
export async function refusal(
  p: Promise<unknown>,
): Promise<{ status: string; code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as RemoteError;
    return { status: grpc.status[e.status] ?? String(e.status), code: e.code, message: e.message };
  }
  throw new Error('the call succeeded but should have been refused');
}
