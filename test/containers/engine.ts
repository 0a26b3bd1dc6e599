import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Whether a Docker engine answers here, and if not, why (printed when the suite is skipped). */
export type EngineCheck = { ok: true; version: string } | { ok: false; reason: string };

/**
 * Asks the Docker engine for its version (`docker info`), within a few seconds. The container
 * suite runs only when one answers: a laptop without Docker skips it, saying why.
 */
export async function checkDockerEngine(): Promise<EngineCheck> {
  try {
    const { stdout } = await execFileAsync('docker', ['info', '--format', '{{.ServerVersion}}'], {
      timeout: 15_000,
    });
    const version = stdout.trim();
    if (version === '') return { ok: false, reason: 'docker info printed no server version' };
    return { ok: true, version };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') return { ok: false, reason: 'the docker command is not installed' };
    const said = (e.stderr ?? e.message).trim().split('\n')[0] ?? '';
    return { ok: false, reason: `no Docker engine answers (docker info: ${said})` };
  }
}
