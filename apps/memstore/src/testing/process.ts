import type * as grpc from '@grpc/grpc-js';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { channelCredentials, startServiceProcess, type ServiceProcess } from '@handoff/service';
import { testCredentials, testTlsArgs } from '@handoff/service/testing';
import type { TempDirs } from './fixtures.js';

const here = dirname(fileURLToPath(import.meta.url));

/** The compiled memstore executable, from sources (tests) or from dist (benchmarks). */
export const MEMSTORE_MAIN = here.endsWith(join('dist', 'testing'))
  ? join(here, '..', 'main.js')
  : join(here, '..', '..', 'dist', 'main.js');

/** A memstore process started from dist (see `startServiceProcess` of @handoff/service). */
export type MemstoreProcess = ServiceProcess & {
  /**
   * Credentials of a client that may make every memstore call a test makes: the certificate of
   * `test-vmm` (role vmm) from the run's test PKI, or plaintext for an `--insecure` process.
   */
  readonly credentials: grpc.ChannelCredentials;
};

/**
 * Starts `dist/main.js` on a free port over `dirs` (JSON logs collected) and resolves once its
 * ready file says it serves. It serves mutual TLS with the run's test PKI (`insecure`: plaintext).
 * Needs the build.
 *
 * @throws ServiceStartError with its output when it exits or is not ready within 20 s
 */
export async function startMemstoreProcess(
  dirs: TempDirs,
  opts: { env?: NodeJS.ProcessEnv; logLevel?: string; insecure?: boolean } = {},
): Promise<MemstoreProcess> {
  const insecure = opts.insecure === true;
  const tlsArgs = insecure
    ? ['--insecure']
    : await testTlsArgs({ id: 'memstore', role: 'memstore' });
  const credentials = insecure
    ? channelCredentials(null)
    : await testCredentials({ id: 'test-vmm', role: 'vmm' }, { serverRole: 'memstore' });
  const proc = await startServiceProcess({
    name: 'memstore',
    entry: MEMSTORE_MAIN,
    readyFile: join(dirs.stateDir, 'ready.json'),
    args: [
      '--port',
      '0',
      '--log-format',
      'json',
      ...(opts.logLevel !== undefined ? ['--log-level', opts.logLevel] : []),
      '--state-dir',
      dirs.stateDir,
      '--volatile-dir',
      dirs.volatileDir,
      '--persistent-dir',
      dirs.persistentDir,
      ...tlsArgs,
    ],
    ...(opts.env !== undefined ? { env: opts.env } : {}),
  });
  return Object.assign(proc, { credentials });
}
