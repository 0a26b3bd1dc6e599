import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrator } from '@handoff/proto';
import { createClient, unaryCall, type RemoteError } from '@handoff/service';
import { FakeMemstore, FakeVmm, FakeWorld } from '@handoff/migrator/testing';
import { testMaterial } from '@handoff/service/testing';
import { startService, type TestService } from './helpers/services.js';
import { vmctlRunner, type VmctlResult } from './helpers/vmctl.js';

interface JobJson {
  id: string;
  kind: string;
  vm?: string;
  status: string;
  error?: string;
  'snapshot-result'?: {
    snapshot: string;
    vms: string[];
    'pause-us': number;
    'duration-us': number;
    bytes: number;
    'running-after-us': number[];
  };
}

/**
 * The migrator executable running save, restore, template and clone jobs on two in-process
 * fake vmm instances, with a fake memstore holding the snapshots, driven through vmctl.
 */
describe('snapshot jobs through vmctl', () => {
  let stateDir: string;
  let mg: TestService;
  let world: FakeWorld;
  let a: FakeVmm;
  let b: FakeVmm;
  let ms: FakeMemstore;
  let env: NodeJS.ProcessEnv;

  const { run: vmctl, json } = vmctlRunner(() => env);
  const jobOf = (r: VmctlResult): JobJson => (JSON.parse(r.stdout) as { job: JobJson }).job;

  const startMigrator = async () => {
    mg = await startService('migrator', [
      '--state-dir',
      stateDir,
      '--poll-interval-ms',
      '20',
      '--memstore',
      ms.address,
    ]);
    env = {
      ...process.env,
      HANDOFF_MIGRATOR_ADDR: mg.address,
      HANDOFF_MEMSTORE_ADDR: ms.address,
      HANDOFF_OUTPUT: 'table',
    };
    for (const f of [a, b]) await f.registerWith(mg.address);
  };

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'handoff-snapshot-jobs-'));
    world = new FakeWorld(['vm1', 'vm2', 'vm3'].map((n) => [n, 'vmm-a']));
    const peers = new Map<string, FakeVmm>();
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
    for (const f of [a, b]) f.guests.set('kvserver', { readyMs: 50 });
    ms = await FakeMemstore.start(world, await testMaterial({ id: 'memstore', role: 'memstore' }));
    await startMigrator();
  });

  afterAll(async () => {
    await mg?.stop();
    await Promise.all([a?.stop(), b?.stop(), ms?.stop()]);
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('saves a VM: the snapshot, its kind, the pause and the bytes; status lines on stderr', async () => {
    const r = await vmctl('save', 'vm1', '--as', 'vm1-first');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^sav-[0-9a-f]{8} save vm1: active$/m);
    expect(r.stderr).toMatch(/^sav-[0-9a-f]{8} save vm1: completed$/m);
    expect(r.stdout).toMatch(/^snapshot: +vm1-first$/m);
    expect(r.stdout).toMatch(/^kind: +bypass: the VM's regions sealed in place, nothing copied$/m);
    expect(r.stdout).toMatch(/^guest paused: +0\.900 ms$/m);
    expect(r.stdout).toMatch(/^written: +8 KiB/m);
    expect(world.get('vm1')).toBe('vmm-a');
    const doc = await json<{ job: JobJson; snapshot: { name: string; kind: string } }>(
      'save',
      'vm1',
      '--full',
    );
    expect(doc.job).toMatchObject({ kind: 'save', status: 'completed', vm: 'vm1' });
    expect(doc.job['snapshot-result']).toMatchObject({ 'pause-us': 900, 'duration-us': 2100 });
    expect(doc.job['snapshot-result']!.snapshot).toMatch(/^vm1-\d{8}-\d{6}$/);
    expect(doc.snapshot.kind).toBe('full');
  });

  it('restores a snapshot on the instance with the fewest VMs, under a new name', async () => {
    const r = await vmctl('restore', 'vm1-first', '--name', 'vm1-back');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^vm: +vm1-back on vmm-b$/m);
    expect(r.stdout).toMatch(/^running after: +2\.500 ms$/m);
    expect(world.get('vm1-back')).toBe('vmm-b');
    // the name it was saved with is taken: a clear refusal, no job
    const taken = await vmctl('restore', 'vm1-first');
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/a VM named vm1 already exists on vmm-a.*--name/);
    const missing = await vmctl('restore', 'nothing', '--name', 'x');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/memstore has no snapshot named nothing/);
    // vm show: what its RAM costs, and where it came from
    const shown = await vmctl('vm', 'show', 'vm1-back');
    expect(shown.stdout).toMatch(/^memory use: +PSS 3 MiB, private dirty 1 MiB, RSS 12 MiB$/m);
    expect(shown.stdout).toMatch(/^snapshot: +vm1-first \(restored or cloned from it\)$/m);
  });

  it('makes a template from a guest, clones it, and shows what is shared and private', async () => {
    const made = await vmctl('template', 'create', 'kv', '--guest', 'kvserver', '--memory', '64M');
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(/^template: +kv$/m);
    expect(made.stdout).toMatch(/destroyed after the save/);
    expect(world.snapshots.get('kv')).toMatchObject({ template: true });
    const cloned = await vmctl('clone', 'kv', '--count', '3');
    expect(cloned.code, cloned.stderr).toBe(0);
    expect(cloned.stdout).toMatch(/^vms: +3 on vmm-b: kv-1 kv-2 kv-3$/m);
    expect(cloned.stdout).toMatch(/^running after: +p50 1\.100 ms, p99 1\.200 ms$/m);
    const list = await vmctl('template', 'list');
    expect(list.stdout).toMatch(/^kv +bypass +yes +kv@vmm-b +16 MiB +4\.01 MiB +3 /m);
    const show = await vmctl('template', 'show', 'kv');
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toMatch(/^kv-2 +vmm-b +running +3 MiB +1 MiB +12 MiB$/m);
    expect(show.stdout).toMatch(/^total of 3 clone\(s\): PSS 9 MiB, private dirty 3 MiB/m);
    // a snapshot is not a template
    const notOne = await vmctl('template', 'show', 'vm1-first');
    expect(notOne.code).toBe(2);
    expect(notOne.stderr).toMatch(/vm1-first is a snapshot, not a template/);
    // deleting it is refused while clones run from it
    const busy = await vmctl('template', 'delete', 'kv');
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/in use by vmm-b\/kv-1/);
  });

  it('a guest that never rings ready makes no template and says why', async () => {
    const r = await vmctl(
      'template',
      'create',
      'mute',
      '--guest',
      'hello',
      '--memory',
      '16M',
      '--ready-timeout',
      '300ms',
      '--output',
      'json',
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /never rang its ready doorbell within 0\.3 s.*its VM mute was destroyed/,
    );
    expect(jobOf(r)).toMatchObject({ kind: 'template', status: 'failed' });
    expect(world.has('mute')).toBe(false);
  });

  it('snapshot list, show and delete talk to memstore', async () => {
    const list = await vmctl('snapshot', 'list');
    expect(list.stdout).toMatch(/^vm1-first +bypass +no +vm1@vmm-a/m);
    const shown = await json<{ snapshot: { name: string; clones: string[] } }>(
      'snapshot',
      'show',
      'vm1-first',
    );
    // vm1 runs on as a clone of its bypass save, vm1-back was restored from it
    expect(shown.snapshot.name).toBe('vm1-first');
    expect(shown.snapshot.clones.sort()).toEqual(['vmm-a/vm1', 'vmm-b/vm1-back']);
    const table = await vmctl('snapshot', 'show', 'vm1-first');
    expect(table.stdout).toMatch(/^block ram0: +0x80000000 16 MiB, region vm1-ram0 \(owned/m);
    const busy = await vmctl('snapshot', 'delete', 'vm1-first');
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/snapshot vm1-first is in use by .*vmm-b\/vm1-back/);
    for (const vm of ['vm1', 'vm1-back']) expect((await vmctl('vm', 'destroy', vm)).code).toBe(0);
    const gone = await vmctl('snapshot', 'delete', 'vm1-first');
    expect(gone.code, gone.stderr).toBe(0);
    expect(world.snapshots.has('vm1-first')).toBe(false);
  });

  it('refuses bad requests with INVALID_ARGUMENT and a message that says what to do', async () => {
    const client = createClient(migrator.MigratorServiceClient, mg.address, mg.credentials);
    try {
      const clone = (count: number) =>
        unaryCall(client, 'clone', {
          template: 'kv',
          count,
          vmm: '',
          namePrefix: '',
          paused: false,
        }).catch((e: unknown) => e as RemoteError);
      for (const count of [0, 1001]) {
        expect(await clone(count)).toMatchObject({
          status: grpc.status.INVALID_ARGUMENT,
          code: 'MIGRATOR_INVALID_ARGUMENT',
          message: expect.stringMatching(/clone 1 to 1000 VMs at once/),
        });
      }
      const template = await unaryCall(client, 'createTemplate', {
        name: 't',
        source: { $case: 'guest', value: 'kvserver' },
        memory: 0n,
        vmm: '',
        args: {},
        readyTimeoutMs: 0,
      }).catch((e: unknown) => e as RemoteError);
      expect(template).toMatchObject({
        status: grpc.status.INVALID_ARGUMENT,
        message: expect.stringMatching(/--memory is required with --guest/),
      });
      const save = await unaryCall(client, 'save', {
        vm: '',
        snapshot: '',
        full: false,
        stop: false,
      }).catch((e: unknown) => e as RemoteError);
      expect(save).toMatchObject({ status: grpc.status.INVALID_ARGUMENT });
    } finally {
      client.close();
    }
  });

  it('a save in flight when the migrator is killed is completed from what memstore holds', async () => {
    a.snapshotScripts.set('save:vm2', { delayMs: 600 });
    const started = jobOf(
      await vmctl('save', 'vm2', '--as', 'vm2-late', '--detach', '--output', 'json'),
    );
    expect(started.status).toBe('active');
    await mg.kill9();
    await startMigrator();
    let shown = jobOf(await vmctl('jobs', 'show', started.id, '--output', 'json'));
    for (let i = 0; i < 200 && shown.status === 'active'; i++) {
      await new Promise((r) => setTimeout(r, 25));
      shown = jobOf(await vmctl('jobs', 'show', started.id, '--output', 'json'));
    }
    expect(shown.status, shown.error).toBe('completed');
    expect(shown['snapshot-result']).toMatchObject({ snapshot: 'vm2-late', 'pause-us': 0 });
    expect(a.calls.filter((c) => c === 'saveVm:vm2')).toHaveLength(1); // never re-run
    const table = await vmctl('jobs', 'list', '--all');
    expect(table.stdout).toMatch(new RegExp(`^${started.id} +save +vm2 +vmm-a +completed`, 'm'));
  }, 30_000);
});
