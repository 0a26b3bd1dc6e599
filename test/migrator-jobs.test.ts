import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrator } from '@handoff/proto';
import type { RemoteError } from '@handoff/service';
import { createClient, unaryCall } from '@handoff/service';
import { FakeVmm, FakeWorld } from '@handoff/migrator/testing';
import { testMaterial } from '@handoff/service/testing';
import { startService, type TestService } from './helpers/services.js';
import { vmctlRunner, type VmctlResult } from './helpers/vmctl.js';

type Result = VmctlResult;

interface JobJson {
  id: string;
  kind: string;
  vm?: string;
  status: string;
  error?: string;
  'source-vmm': string;
  'target-vmm': string;
  capabilities: string[];
  children?: string[];
  outcome?: { where: string; vmm: string; detail: string };
  info: {
    status: string;
    'total-time'?: number;
    'setup-time'?: number;
    downtime?: number;
    'error-desc'?: string;
    ram?: { transferred: number; remaining: number; total: number; 'zero-pages'?: number };
  };
}

/**
 * The migrator executable coordinating jobs between two in-process fake vmm
 * instances (real gRPC, scripted migrations), driven through vmctl.
 */
describe('migrator jobs through vmctl', () => {
  let stateDir: string;
  let mg: TestService;
  let world: FakeWorld;
  let a: FakeVmm;
  let b: FakeVmm;
  let env: NodeJS.ProcessEnv;

  const { run: vmctl } = vmctlRunner(() => env);
  const jobOf = (r: Result): JobJson => (JSON.parse(r.stdout) as { job: JobJson }).job;

  const startMigrator = async () => {
    // no memstore here: the fakes' leases are not asked (nothing listens on port 9)
    mg = await startService('migrator', [
      '--state-dir',
      stateDir,
      '--poll-interval-ms',
      '20',
      '--memstore',
      '127.0.0.1:9',
    ]);
    env = { ...process.env, HANDOFF_MIGRATOR_ADDR: mg.address, HANDOFF_OUTPUT: 'table' };
    // each fake registers with its VMs and reports every change, as a vmm does
    for (const f of [a, b]) await f.registerWith(mg.address);
  };

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'handoff-migrator-state-'));
    world = new FakeWorld(
      ['vm1', 'vm2', 'vm3', 'vm4', 'vm5', 'lu1', 'lu2', 'lu3'].map((n) => [n, 'vmm-a']),
    );
    const peers = new Map<string, FakeVmm>();
    // The fakes serve and register with the certificates of vmm-a and vmm-b.
    a = await FakeVmm.start(
      'vmm-a',
      world,
      peers,
      await testMaterial({ id: 'vmm-a', role: 'vmm' }),
    );
    b = await FakeVmm.start(
      'vmm-b',
      world,
      peers,
      await testMaterial({ id: 'vmm-b', role: 'vmm' }),
    );
    await startMigrator();
  });

  afterAll(async () => {
    await mg?.stop();
    await Promise.all([a?.stop(), b?.stop()]);
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('migrates a VM and prints one JSON document with QAPI MigrationInfo names', async () => {
    const r = await vmctl(
      'migrate',
      'vm1',
      '--to',
      'vmm-b',
      '--downtime-limit',
      '50',
      '--output',
      'json',
    );
    expect(r.code, r.stderr).toBe(0);
    const job = jobOf(r);
    expect(job).toMatchObject({
      kind: 'migrate',
      vm: 'vm1',
      status: 'completed',
      'source-vmm': 'vmm-a',
      'target-vmm': 'vmm-b',
    });
    expect(job.capabilities).toContain('bypass-shared-memory');
    expect(job.info.status).toBe('completed');
    expect(job.info.downtime).toBe(1.5);
    expect(job.info['setup-time']).toBe(2);
    expect(job.info['total-time']).toBeGreaterThan(0);
    expect(job.info.ram).toMatchObject({ transferred: 4 << 20, remaining: 0, total: 64 << 20 });
    expect(r.stdout.trim().startsWith('{')).toBe(true);
    expect(world.get('vm1')).toBe('vmm-b');
    // the migrator found vm1 and its spec in vmm-a's report: it looked nothing up
    const lookups = [...a.calls, ...b.calls].filter((c) => /^(listVms|getVm|destroyVm):/.test(c));
    expect(lookups).toEqual([]);
    expect(b.prepared.at(-1)).toMatchObject({ name: 'vm1', specName: 'vm1' });
  });

  it('shows plain progress lines off a terminal and a statistics table at the end', async () => {
    const r = await vmctl('migrate', 'vm2', '--to', 'vmm-b', '--no-bypass');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/vm2 \[[#.]+\] +\d+% .* (setup|active|device)/);
    expect(r.stdout).toMatch(/status: +completed/);
    expect(r.stdout).toMatch(/downtime: +1\.500 ms/);
    expect(r.stdout).toMatch(/transferred: +4 MiB/);
  });

  it('exits non-zero with the vmm message on stderr when the migration fails', async () => {
    a.scripts.set('vm3', {
      steps: [{ status: 'active', transferred: 4096, remaining: 4096 }],
      stepMs: 30,
      failWith: 'region vm3-ram epoch 4 is stale: the lease moved',
    });
    const r = await vmctl('migrate', 'vm3', '--to', 'vmm-b', '--output', 'json');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/job mig-[0-9a-f]+ failed: .*epoch 4 is stale/);
    const job = jobOf(r);
    expect(job.status).toBe('failed');
    expect(job.info['error-desc']).toMatch(/epoch 4 is stale/);
    expect(world.get('vm3')).toBe('vmm-a');
  });

  it('refuses bad requests with clear messages and gRPC codes', async () => {
    const missing = await vmctl('migrate', 'nope', '--to', 'vmm-b');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no vmm instance runs a VM named nope/);
    const badVmm = await vmctl('migrate', 'vm4', '--to', 'vmm-z');
    expect(badVmm.stderr).toMatch(/no vmm instance "vmm-z" is registered/);
    const badValue = await vmctl('migrate', 'vm4', '--to', 'vmm-b', '--downtime-limit', 'soon');
    expect(badValue.code).toBe(2);
    const badCap = await vmctl('migrate', 'vm4', '--to', 'vmm-b', '--capability', 'warp=on');
    expect(badCap.code).toBe(2);
    const client = createClient(migrator.MigratorServiceClient, mg.address, mg.credentials);
    try {
      const call = (vm: string, targetVmm: string) =>
        unaryCall(client, 'migrate', {
          vm,
          targetVmm,
          capabilities: [],
          parameters: undefined,
        }).catch((e: unknown) => e as RemoteError);
      expect((await call('vm4', 'vmm-a')) as RemoteError).toMatchObject({
        status: grpc.status.INVALID_ARGUMENT,
        code: 'MIGRATOR_INVALID_ARGUMENT',
      });
      expect(((await call('vm4', 'vmm-a')) as RemoteError).message).toMatch(/same vmm/);
      expect((await call('nope', 'vmm-b')) as RemoteError).toMatchObject({
        status: grpc.status.NOT_FOUND,
        code: 'MIGRATOR_VM_NOT_FOUND',
      });
      expect((await call('vm4', 'vmm-z')) as RemoteError).toMatchObject({
        status: grpc.status.NOT_FOUND,
        code: 'MIGRATOR_VMM_NOT_FOUND',
      });
      const unknownJob = await unaryCall(client, 'getJob', { id: 'mig-none' }).catch(
        (e: unknown) => e,
      );
      expect(unknownJob).toMatchObject({
        status: grpc.status.NOT_FOUND,
        code: 'MIGRATOR_JOB_NOT_FOUND',
      });
    } finally {
      client.close();
    }
  });

  it('cancels a detached job; jobs watch follows another', async () => {
    a.scripts.set('vm4', {
      steps: Array.from({ length: 200 }, (_, i) => ({
        status: 'active' as const,
        transferred: i * 4096,
        remaining: (200 - i) * 4096,
      })),
      stepMs: 20,
    });
    const started = await vmctl('migrate', 'vm4', '--to', 'vmm-b', '--detach', '--output', 'json');
    expect(started.code, started.stderr).toBe(0);
    const id = jobOf(started).id;
    const listed = await vmctl('jobs', 'list');
    expect(listed.stdout).toMatch(new RegExp(`${id} +migrate +vm4 +vmm-a -> vmm-b`));
    const cancelled = await vmctl('jobs', 'cancel', id, '--wait', '--output', 'json');
    expect(cancelled.code, cancelled.stderr).toBe(0);
    expect(jobOf(cancelled).status).toBe('cancelled');
    expect(a.calls).toContain('cancelMigration:vm4');
    expect(world.get('vm4')).toBe('vmm-a');
    const watched = await vmctl('jobs', 'watch', id);
    expect(watched.code).toBe(1);
    expect(watched.stderr).toMatch(/cancelled/);
  });

  it('live-updates every VM of an instance with bypass, bounded concurrency', async () => {
    a.scripts.clear();
    const onA = [...world].filter(([, v]) => v === 'vmm-a').map(([n]) => n);
    a.maxConcurrent = 0;
    const r = await vmctl(
      'live-update',
      '--from',
      'vmm-a',
      '--to',
      'vmm-b',
      '--concurrency',
      '2',
      '--output',
      'json',
    );
    expect(r.code, r.stderr).toBe(0);
    const job = jobOf(r);
    expect(job).toMatchObject({ kind: 'live-update', status: 'completed' });
    expect(job.children).toHaveLength(onA.length);
    expect(a.maxConcurrent).toBe(2);
    expect(onA.every((n) => world.get(n) === 'vmm-b')).toBe(true);
    const all = await vmctl('jobs', 'list', '--all', '--output', 'json');
    const jobs = (JSON.parse(all.stdout) as { jobs: JobJson[] }).jobs;
    expect(jobs.filter((j) => j.kind === 'live-update')).toHaveLength(1);
    expect(
      jobs
        .filter((j) => job.children?.includes(j.id))
        .every((j) => j.capabilities.includes('bypass-shared-memory')),
    ).toBe(true);
  });

  it('resolves in-flight jobs after a migrator restart: cancelled at both ends, where the VM is', async () => {
    world.set('vm5', 'vmm-a');
    a.scripts.set('vm5', {
      steps: Array.from({ length: 300 }, () => ({
        status: 'active' as const,
        transferred: 4096,
        remaining: 4096,
      })),
      stepMs: 20,
    });
    const started = await vmctl('migrate', 'vm5', '--to', 'vmm-b', '--detach', '--output', 'json');
    const id = jobOf(started).id;
    for (let i = 0; i < 100; i++) {
      const s = jobOf(await vmctl('jobs', 'show', id, '--output', 'json')).status;
      if (s === 'active') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const before = a.calls.filter((c) => c === 'cancelMigration:vm5').length;
    await mg.kill9();
    await startMigrator();
    let shown = jobOf(await vmctl('jobs', 'show', id, '--output', 'json'));
    for (let i = 0; i < 200 && !['cancelled', 'failed', 'completed'].includes(shown.status); i++) {
      expect(shown.status).toBe('cancelling'); // being resolved, never re-run
      await new Promise((r) => setTimeout(r, 25));
      shown = jobOf(await vmctl('jobs', 'show', id, '--output', 'json'));
    }
    expect(shown.status).toBe('cancelled');
    expect(shown.outcome).toEqual({
      where: 'source',
      vmm: 'vmm-a',
      detail:
        'the migrator restarted while this job was active: it cancelled the migration at both ' +
        'ends; VM vm5 runs on vmm-a',
    });
    // cancelled at both ends, once each, and nothing left reserved on the target
    expect(a.calls.filter((c) => c === 'cancelMigration:vm5').length).toBe(before + 1);
    expect(b.calls).toContain('cancelIncoming:vm5');
    expect(b.reservedNames()).toEqual([]);
    // the vmm rolled back: the VM is where it was, once
    expect(world.get('vm5')).toBe('vmm-a');
    const table = await vmctl('jobs', 'show', id);
    expect(table.stdout).toMatch(/vm is:\s+on the source: the migrator restarted/);
  }, 30_000);
});
