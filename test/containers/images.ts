import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../helpers/services.js';

/** The tag the container suite builds and runs (the compose file runs `handoff:local`). */
export const TEST_IMAGE = 'handoff:test';

/**
 * Runs a command to its end with its output kept (printed only when it fails, so a broken build
 * says why).
 *
 * @throws Error naming the command, its exit status and the last lines it printed
 */
async function run(command: string, args: string[]): Promise<void> {
  const child = spawn(command, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (b: Buffer): void => {
    output = (output + b.toString()).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  if (code !== 0) {
    const tail = output.trim().split('\n').slice(-30).join('\n');
    throw new Error(`${command} ${args.join(' ')} exited with ${code}:\n${tail}`);
  }
}

/**
 * Builds the service image from this checkout: the base image first when it is missing
 * (docker/base-image keeps one that exists), then docker/Dockerfile with the layer cache (a
 * code change rebuilds only the layers after `npm ci`). Host networking for the build's apt and
 * npm downloads, as CI does.
 */
export async function buildServiceImage(tag = TEST_IMAGE): Promise<void> {
  await run(join(repoRoot, 'docker', 'base-image'), []);
  await run('docker', ['build', '--network', 'host', '-f', 'docker/Dockerfile', '-t', tag, '.']);
}

/** Sends SIGKILL to a container (`docker kill`): its processes die at once, nothing is removed. */
export async function killContainer(id: string): Promise<void> {
  await run('docker', ['kill', id]);
}

/** Removes every container labelled `key=value`, running or not (the suite's safety net). */
export async function removeLabelled(key: string, value: string): Promise<void> {
  await run('sh', [
    '-c',
    `ids=$(docker ps -aq --filter label=${key}=${value}); [ -z "$ids" ] || docker rm -f $ids >/dev/null`,
  ]);
}
