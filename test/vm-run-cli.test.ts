import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '@handoff/cluster';
import { crashGuestElf, echoGuestElf, idleGuestElf } from './helpers/guest-elf.js';
import { repoRoot } from './helpers/services.js';
import { vmctlBin, vmctlRunner, waitForVmms, type VmctlResult } from './helpers/vmctl.js';

/**
 * `vmctl vm run`, `vm create` and `template create` with guests that are files on vmctl's side.
 * The cluster's vmm has no guest folder: every guest that is not built in travels as bytes.
 */

const kvserverElf = join(repoRoot, 'guests/kvserver/kvserver.elf');

describe('vmctl vm run and guests sent from vmctl', () => {
  let cluster: Cluster;
  let stateDir: string;
  let volatileDir: string;
  /** vmctl's own folder of guest files (the vmm never sees it). */
  let local: string;
  let env: NodeJS.ProcessEnv;
  const { run: vmctl, json } = vmctlRunner(() => env);

  /**
   * `vmctl ...args` with `input` on stdin (left open when undefined); `onStdout` sees its output
   * as it comes and may signal the child.
   */
  const spawnVmctl = (
    args: string[],
    input?: string,
    onStdout?: (soFar: string, child: ReturnType<typeof spawn>) => void,
  ): Promise<VmctlResult> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [vmctlBin, ...args], {
        env,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        stdout += d;
        onStdout?.(stdout, child);
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('exit', (code, signal) =>
        resolve({ code: code ?? (signal !== null ? -1 : -2), stdout, stderr }),
      );
      if (input !== undefined) child.stdin.end(input);
    });

  const vmNames = async (): Promise<string[]> =>
    (await json<{ vms: { name: string }[] }>('vm', 'list')).vms.map((v) => v.name);

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'handoff-vm-run-'));
    volatileDir = mkdtempSync('/dev/shm/handoff-vm-run-');
    local = mkdtempSync(join(tmpdir(), 'handoff-vmctl-guests-'));
    writeFileSync(join(local, 'echo.elf'), echoGuestElf());
    writeFileSync(join(local, 'idle.elf'), idleGuestElf());
    writeFileSync(join(local, 'crash.elf'), crashGuestElf());
    cluster = await startCluster({
      stateDir,
      volatileDir,
      ports: { memstore: 0, migrator: 0, vmms: { 'vmm-a': 0 } },
    });
    env = {
      ...process.env,
      HANDOFF_MEMSTORE_ADDR: cluster.memstore,
      HANDOFF_MIGRATOR_ADDR: cluster.migrator,
      HANDOFF_TLS_DIR: cluster.tlsDir!,
    };
    await waitForVmms(vmctl, 1);
  });

  afterAll(async () => {
    await cluster?.stop();
    for (const dir of [stateDir, volatileDir, local]) {
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs hello to its end: all of its output, exit code 0, the VM removed', async () => {
    const r = await spawnVmctl(['vm', 'run', 'hi', '--guest', 'hello', '--memory', '32M'], '');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^hello from a Handoff guest/);
    expect(r.stdout).toMatch(/bye\n$/); // the last line before the power-off
    expect(await vmNames()).toEqual([]);
  });

  it("sends a local ELF, forwards stdin, and exits with the guest's non-zero code", async () => {
    const r = await spawnVmctl(
      ['vm', 'run', 'echo', '--guest', join(local, 'echo.elf'), '--memory', '16M'],
      'abcq', // echoed; `q` powers the guest off with exit code 5
    );
    expect(r.code, r.stderr).toBe(5);
    expect(r.stdout).toBe('echo ready\nabcq');
    expect(await vmNames()).toEqual([]);
  });

  it('--timeout destroys the VM and exits 124 with a message', async () => {
    const r = await spawnVmctl(
      ['vm', 'run', 'slow', '--guest', join(local, 'idle.elf'), '--timeout', '1s'],
      undefined,
    );
    expect(r.code).toBe(124);
    expect(r.stdout).toBe('idle\n');
    expect(r.stderr).toContain('VM slow did not power off within --timeout; destroyed it');
    expect(await vmNames()).toEqual([]);
  });

  it('SIGTERM and SIGINT destroy the VM and exit 143 and 130', async () => {
    for (const [signal, code] of [
      ['SIGTERM', 143],
      ['SIGINT', 130],
    ] as const) {
      let sent = false;
      const r = await spawnVmctl(
        ['vm', 'run', 'sig', '--guest', join(local, 'idle.elf')],
        undefined,
        (out, child) => {
          if (!sent && out.includes('idle\n')) {
            sent = true;
            child.kill(signal);
          }
        },
      );
      expect(r.code, `${signal}: ${r.stderr}`).toBe(code);
      expect(r.stderr).toContain(`${signal}: destroyed VM sig`);
      expect(await vmNames()).toEqual([]);
    }
  });

  it('a guest that crashes: exit 1 and the error on stderr', async () => {
    const r = await spawnVmctl(['vm', 'run', 'boom', '--guest', join(local, 'crash.elf')], 'x');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('armed\n');
    expect(r.stderr).toMatch(/VM boom on vmm-a: the guest crashed: /);
    expect(await vmNames()).toEqual([]);
  });

  it('--output json: one document with the state, the exit code and the output', async () => {
    const r = await spawnVmctl(['vm', 'run', 'js', '--guest', 'hello', '-o', 'json'], '');
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { run: Record<string, unknown> };
    expect(doc.run).toMatchObject({
      name: 'js',
      vmm: 'vmm-a',
      guest: 'hello',
      state: 'powered-off',
      'exit-code': 0,
    });
    expect(doc.run.output).toMatch(/bye\n$/);
  });

  it('--help explains the exit statuses, stdin and the guest rule', async () => {
    const help = await vmctl('vm', 'run', '--help');
    expect(help.code).toBe(0);
    for (const text of ['--timeout', '124', '130', '143', 'Standard input', 'a built-in name']) {
      expect(help.stdout).toContain(text);
    }
  });

  it('vm create sends a local file and prints the state the vmm reports', async () => {
    const created = await vmctl('vm', 'create', 'e1', '--guest', join(local, 'echo.elf'));
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toBe('created VM e1 on vmm-a (128 MiB private): running\n');
    const shown = await json<{ vm: { guest: string; state: string } }>('vm', 'show', 'e1');
    expect(shown.vm).toMatchObject({ guest: 'echo.elf', state: 'running' });
    expect((await vmctl('vm', 'destroy', 'e1')).code).toBe(0);

    const idle = await json<{ vm: { state: string } }>(
      'vm',
      'create',
      'e2',
      '--guest',
      join(local, 'idle.elf'),
      '--no-start',
    );
    expect(idle.vm.state).toBe('created');
    expect((await vmctl('vm', 'destroy', 'e2')).code).toBe(0);

    // hello powers off within microseconds of its start: whatever create prints is what GetVm
    // answered, with the exit code once powered off.
    const hello = await json<{ vm: { state: string; 'exit-code'?: number } }>(
      'vm',
      'create',
      'h1',
      '--guest',
      'hello',
    );
    if (hello.vm.state === 'powered-off') expect(hello.vm['exit-code']).toBe(0);
    else expect(hello.vm.state).toBe('running');
    expect((await vmctl('vm', 'destroy', 'h1')).code).toBe(0);
  });

  it('refuses a file over 16 MiB and a missing ./path before asking the vmm', async () => {
    const big = join(local, 'big.elf');
    writeFileSync(big, new Uint8Array(16 * 1024 * 1024 + 1));
    const r = await vmctl('vm', 'create', 'big', '--guest', big);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('is 16777217 bytes, over the 16 MiB');
    expect(r.stderr).toContain('--guest-dir');
    const missing = await vmctl('vm', 'run', 'm', '--guest', './no-such-guest.elf');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no such file here');
    // not a path and not here: a name for the vmm, which has no guest folder
    const named = await vmctl('vm', 'create', 'n', '--guest', 'elsewhere.elf', '-o', 'json');
    expect(named.code).toBe(1);
    expect(JSON.parse(named.stdout).error.code).toBe('VMM_GUEST_NOT_FOUND');
    expect(await vmNames()).toEqual([]);
  });

  it('template create sends a local ELF through the migrator to the vmm', async () => {
    const copy = join(local, 'my-kv.elf');
    copyFileSync(kvserverElf, copy);
    const made = await json<{ job: { status: string } }>(
      'template',
      'create',
      'kvt',
      '--guest',
      copy,
      '--memory',
      '64M',
      '--arg',
      'kv.slots_log2=12',
      '--arg',
      'kv.work=4',
      '--ready-timeout',
      '60s',
    );
    expect(made.job.status).toBe('completed');
    const shown = await json<{ template: { name: string } }>('template', 'show', 'kvt');
    expect(shown.template.name).toBe('kvt');
    expect((await vmctl('template', 'delete', 'kvt')).code).toBe(0);
  });
});
