import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '@handoff/cluster';
import { TEST_GUEST_DIR, writeEchoGuest } from './helpers/guest-elf.js';
import { repoRoot } from './helpers/services.js';
import { vmctlBin, vmctlRunner, waitForVmms, type VmctlResult } from './helpers/vmctl.js';

const hasKvserver = existsSync(join(repoRoot, 'guests/kvserver/kvserver.elf'));

type Result = VmctlResult;

interface VmJson {
  name: string;
  vmm: string;
  state: string;
  'exit-code'?: number;
  instret: number;
  mips: number;
  ram: { id: string; size: number; backend: string; region?: string }[];
}

describe('vmctl vm', () => {
  let cluster: Cluster;
  let stateDir: string;
  let volatileDir: string;
  let env: NodeJS.ProcessEnv;

  const { run: vmctl, json } = vmctlRunner(() => env);
  /** `vmctl vm console NAME` with `input` piped to its standard input. */
  const pipeConsole = (name: string, input: string): Promise<Result> =>
    new Promise((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [vmctlBin, 'vm', 'console', name, '--drain-ms', '500'],
        {
          env,
          stdio: ['pipe', 'pipe', 'pipe'],
        },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
      child.stdin.end(input);
    });

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'handoff-vmctl-vm-'));
    volatileDir = mkdtempSync('/dev/shm/handoff-vmctl-vm-');
    cluster = await startCluster({
      stateDir,
      volatileDir,
      ports: { memstore: 0, migrator: 0, vmms: { 'vmm-a': 0, 'vmm-b': 0 } },
      guestDir: TEST_GUEST_DIR,
    });
    env = {
      ...process.env,
      HANDOFF_MEMSTORE_ADDR: cluster.memstore,
      HANDOFF_MIGRATOR_ADDR: cluster.migrator,
      HANDOFF_TLS_DIR: cluster.tlsDir!, // the operator certificate of the cluster's own PKI
    };
    await waitForVmms(vmctl, 2);
  });

  afterAll(async () => {
    await cluster?.stop();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(volatileDir, { recursive: true, force: true });
  });

  it('creates a VM, drives it through `vm console` with piped input, pauses, resumes, destroys', async () => {
    const guest = hasKvserver
      ? ['--guest', 'kvserver', '--arg', 'kv.slots_log2=12', '--arg', 'kv.work=4']
      : ['--guest', writeEchoGuest()];
    const created = await json<{ vm: VmJson }>(
      'vm',
      'create',
      'demo',
      ...guest,
      '--memory',
      '128M',
    );
    expect(created.vm).toMatchObject({ name: 'demo', state: 'running' });
    expect(created.vm.ram).toEqual([
      expect.objectContaining({ id: 'ram0', size: 128 * 1024 * 1024, backend: 'private' }),
    ]);

    if (hasKvserver) {
      // kvserver builds its table first; piped input would wait in the UART, but vmctl leaves
      // after --drain-ms of silence, so let the build finish before talking to it.
      for (let i = 0; i < 200; i++) {
        if ((await json<{ vm: VmJson & { ready: boolean } }>('vm', 'show', 'demo')).vm.ready) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const session = hasKvserver
      ? await pipeConsole('demo', 'PING\nPUT color blue\nGET color\nGET nosuchkey\n')
      : await pipeConsole('demo', 'PING\n');
    expect(session.code, session.stderr).toBe(0);
    if (hasKvserver) {
      expect(session.stdout).toContain('kvserver: ready\n');
      expect(session.stdout).toContain('PONG\nOK\nVALUE blue\nNOT_FOUND\n');
    } else {
      expect(session.stdout).toContain('echo ready\nPING\n');
    }

    const list = await json<{ vms: VmJson[] }>('vm', 'list');
    expect(list.vms.map((v) => [v.name, v.state])).toEqual([['demo', 'running']]);
    const table = await vmctl('vm', 'list');
    expect(table.stdout.split('\n')[0]).toMatch(/^NAME\s+VMM\s+STATE\s+MEMORY\s+INSTRET\s+MIPS$/);

    const paused = await json<{ vm: VmJson }>('vm', 'pause', 'demo');
    expect(paused.vm.state).toBe('paused');
    const shown = await json<{ vm: VmJson }>('vm', 'show', 'demo');
    expect(shown.vm).toMatchObject({ name: 'demo', vmm: created.vm.vmm, state: 'paused', mips: 0 });
    expect(shown.vm.instret).toBeGreaterThan(0);
    expect((await json<{ vm: VmJson }>('vm', 'resume', 'demo')).vm.state).toBe('running');

    // Names are unique in the cluster, whichever instance is asked.
    const other = created.vm.vmm === 'vmm-a' ? 'vmm-b' : 'vmm-a';
    const dup = await vmctl(
      'vm',
      'create',
      'demo',
      '--guest',
      'hello',
      '--vmm',
      other,
      '-o',
      'json',
    );
    expect(dup.code).toBe(1);
    expect(JSON.parse(dup.stdout).error.code).toBe('VMM_VM_EXISTS');

    expect((await vmctl('vm', 'destroy', 'demo')).code).toBe(0);
    const gone = await vmctl('vm', 'show', 'demo', '-o', 'json');
    expect(gone.code).toBe(1);
    expect(JSON.parse(gone.stdout).error.code).toBe('VMM_VM_NOT_FOUND');
  });

  it('shows a powered-off VM with its exit code, and a shared block with its region', async () => {
    const created = await json<{ vm: VmJson }>(
      'vm',
      'create',
      'hi',
      '--guest',
      'hello',
      '--memory',
      '32M',
      '--shared',
      '--vmm',
      'vmm-b',
    );
    expect(created.vm.vmm).toBe('vmm-b');
    let vm: VmJson | undefined;
    for (let i = 0; i < 100; i++) {
      vm = (await json<{ vm: VmJson }>('vm', 'show', 'hi')).vm;
      if (vm.state === 'powered-off') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(vm).toMatchObject({ state: 'powered-off', 'exit-code': 0 });
    expect(vm!.ram[0]).toMatchObject({ backend: 'shared', region: 'hi-ram0' });
    const console = await pipeConsole('hi', '');
    expect(console.stdout).toContain('hello from a Handoff guest');
    const regions = await json<{ regions: { name: string; lease: { holder: string } | null }[] }>(
      'region',
      'list',
    );
    expect(regions.regions).toEqual([
      expect.objectContaining({
        name: 'hi-ram0',
        lease: expect.objectContaining({ holder: 'vmm-b/hi' }),
      }),
    ]);
    expect((await vmctl('vm', 'destroy', 'hi')).code).toBe(0);
    expect((await json<{ regions: unknown[] }>('region', 'list')).regions).toEqual([]);
  });

  it('explains bad requests', async () => {
    const r = await vmctl('vm', 'create', 'x', '--guest', 'no-such-guest', '-o', 'json');
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).error).toMatchObject({
      code: 'VMM_GUEST_NOT_FOUND',
      message: expect.stringMatching(
        /guest no-such-guest is not available on vmm-[ab]: name a built-in guest .* or put the ELF in /,
      ),
    });
    const usage = await vmctl('vm', 'create', 'x', '--guest', 'hello', '--memory', 'lots');
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('--memory "lots" is not a size');
    const help = await vmctl('vm', 'console', '--help');
    expect(help.stdout).toContain('Ctrl-]');
  });

  it('kvserver keeps its data and keeps answering across a live update of its vmm instance', async () => {
    const created = await json<{ vm: VmJson }>(
      'vm',
      'create',
      'kv-lu',
      '--guest',
      'kvserver',
      '--shared',
      '--memory',
      '64M',
      '--arg',
      'kv.slots_log2=12',
      '--arg',
      'kv.work=4',
    );
    for (let i = 0; i < 200; i++) {
      if ((await json<{ vm: VmJson & { ready: boolean } }>('vm', 'show', 'kv-lu')).vm.ready) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const before = await pipeConsole('kv-lu', 'PUT across update\n');
    expect(before.stdout).toContain('OK\n');

    const from = created.vm.vmm;
    const to = from === 'vmm-a' ? 'vmm-b' : 'vmm-a';
    const update = await json<{
      job: { status: string; info: { ram: { transferred: number; total: number } } };
    }>('live-update', '--from', from, '--to', to);
    expect(update.job.status).toBe('completed');
    expect(update.job.info.ram.transferred).toBe(0); // RAM stayed in the memstore region

    const shown = await json<{ vm: VmJson }>('vm', 'show', 'kv-lu');
    expect([shown.vm.vmm, shown.vm.state]).toEqual([to, 'running']);
    const after = await pipeConsole('kv-lu', 'GET across\nPING\n');
    expect(after.stdout).toContain('VALUE update\nPONG\n');
    expect((await vmctl('vm', 'destroy', 'kv-lu')).code).toBe(0);
  });
});
