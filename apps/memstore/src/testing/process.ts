import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServiceProcess, type ServiceProcess } from '@handoff/service';
import type { TempDirs } from './fixtures.js';

const here = dirname(fileURLToPath(import.meta.url));

/** The compiled memstore executable, from sources (tests) or from dist (benchmarks). */
export const MEMSTORE_MAIN = here.endsWith(join('dist', 'testing'))
  ? join(here, '..', 'main.js')
  : join(here, '..', '..', 'dist', 'main.js');

/** A memstore process started from dist (see `startServiceProcess` of @handoff/service). */
export type MemstoreProcess = ServiceProcess;

/**
 * Starts `dist/main.js` on a free port over `dirs` (JSON logs collected) and resolves once its
 * ready file says it serves. Needs the build.
 *
 * @throws ServiceStartError with its output when it exits or is not ready within 20 s
 */
export function startMemstoreProcess(
  dirs: TempDirs,
  opts: { env?: NodeJS.ProcessEnv; logLevel?: string } = {},
): Promise<MemstoreProcess> {
  return startServiceProcess({
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
    ],
    ...(opts.env !== undefined ? { env: opts.env } : {}),
  });
}
