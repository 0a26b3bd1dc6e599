import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { testPkiDir } from '@handoff/service/testing';
import { expect } from 'vitest';
import { repoRoot } from './services.js';

const execFileAsync = promisify(execFile);

/** The vmctl executable users run (`npx vmctl`). */
export const vmctlBin = join(repoRoot, 'apps/cli/bin/vmctl.js');

/** What one vmctl invocation printed and returned. */
export interface VmctlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the real vmctl executable as a child process. `env` is read at each
 * call (tests fill in cluster addresses in beforeAll); vmctl's operator certificate comes from
 * the run's test PKI (`HANDOFF_TLS_DIR`) unless `env` says otherwise. `json` adds
 * `--output json`, expects exit 0 and parses the one document printed.
 */
export function vmctlRunner(env: () => NodeJS.ProcessEnv) {
  const run = async (...args: string[]): Promise<VmctlResult> => {
    try {
      const r = await execFileAsync(process.execPath, [vmctlBin, ...args], {
        env: { HANDOFF_TLS_DIR: await testPkiDir(), ...env() },
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await run(...args, '--output', 'json');
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as T;
  };
  return { run, json };
}

/**
 * Waits (up to 10 s) until `vmctl status` lists `count` vmm instances registered with the
 * migrator; `run` is any vmctl runner returning a {@link VmctlResult}.
 */
export async function waitForVmms(
  run: (...args: string[]) => Promise<Pick<VmctlResult, 'code' | 'stdout'>>,
  count: number,
): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await run('status', '--output', 'json');
    if (r.code === 0 && (JSON.parse(r.stdout) as { vmms: unknown[] }).vmms.length === count) return;
    await new Promise((res) => setTimeout(res, 100));
  }
}
