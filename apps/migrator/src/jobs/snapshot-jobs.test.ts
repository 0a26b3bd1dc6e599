import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { resolveCapabilities } from '@handoff/qapi';
import { createLogger } from '@handoff/service';
import { jobToWire } from '../api/migrator-service.js';
import { hostedVmsFromWire } from '../clients/vm-wire.js';
import { VmmRegistry } from '../registry/vmm-registry.js';
import { FakeLeases, FakeSnapshotCatalog, FakeVmm, FakeWorld } from '../testing/fake-vmm.js';
import { copyNeeded } from './snapshot-plans.js';
import { JobManager, type JobSink } from './job-manager.js';
import type { Job } from './job.js';
import { JobJournal } from './journal.js';

const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });

/** The test's start: snapshots of it were made by the test's jobs. */
const epoch = new Date();

describe('save, restore, template and clone jobs against fake vmm instances', () => {
  let world: FakeWorld;
  let a: FakeVmm;
  let b: FakeVmm;
  let registry: VmmRegistry;
  let jobs: JobManager;
  let dir: string;
  /** Set to simulate a crash: the running manager writes nothing more. */
  let crashed: boolean;
  let catalog: FakeSnapshotCatalog;
  const others: JobManager[] = [];

  const manager = (journal?: JobSink, restored: Job[] = []) => {
    const m = new JobManager({
      logger,
      registry,
      journal,
      restored,
      pollIntervalMs: 10,
      recoveryRetryMs: 600,
      leases: new FakeLeases(world),
      snapshots: catalog,
    });
    others.push(m);
    return m;
  };

  beforeEach(async () => {
    world = new FakeWorld([
      ['vm1', 'vmm-a'],
      ['vm2', 'vmm-a'],
      ['vm3', 'vmm-a'],
    ]);
    const peers = new Map<string, FakeVmm>();
    a = await FakeVmm.start('vmm-a', world, peers);
    b = await FakeVmm.start('vmm-b', world, peers);
    registry = new VmmRegistry(60_000);
    for (const f of [a, b]) {
      registry.register({ id: f.id, address: f.address, version: 't', vmCount: 0, vmsVersion: 0 });
      f.reportTo((vms) => registry.reportVms(f.id, hostedVmsFromWire(vms)));
    }
    dir = mkdtempSync(join(tmpdir(), 'handoff-snapjobs-'));
    crashed = false;
    catalog = new FakeSnapshotCatalog(world.snapshots);
    const journal = JobJournal.open(dir).journal;
    jobs = manager({
      append: (j, d) => (crashed ? undefined : journal.append(j, d)),
      sync: () => journal.sync(),
    });
  });

  afterEach(async () => {
    for (const m of others.splice(0)) {
      await m.idle();
      await m.close();
    }
    await Promise.all([a.stop(), b.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  /** The migrator restarts: a new manager over the journal, resolving what was in flight. */
  const restart = (expected: string) => {
    crashed = true;
    const { journal, jobs: restored } = JobJournal.open(dir);
    expect(restored.find((j) => j.id === expected)?.info.status).toBe('active');
    const next = manager(journal, restored);
    expect(next.recover()).toEqual([expected]);
    return next;
  };

  const waitUntil = async (what: string, ok: () => boolean) => {
    for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(ok(), what).toBe(true);
  };

  describe('save', () => {
    it('saves a VM on the vmm that runs it, under a default name, and reports the pause', async () => {
      const job = await jobs.save({ vm: 'vm1', snapshot: '', full: false, stop: false });
      expect(job).toMatchObject({ kind: 'save', vm: 'vm1', sourceVmm: 'vmm-a', targetVmm: '' });
      expect(job.id).toMatch(/^sav-[0-9a-f]{8}$/);
      const name = job.snapshot!.snapshot;
      expect(name).toMatch(/^vm1-\d{8}-\d{6}$/);
      // active before the vmm is asked (a restart then knows the vmm may have done it)
      expect(job.info.status).toBe('active');
      const done = await jobs.waitFor(job.id);
      expect(done.info.status, done.info.errorDesc).toBe('completed');
      expect(done.info.totalTimeMs).toBeGreaterThan(0);
      // what WatchJob sends
      expect(jobToWire(done).snapshotResult).toMatchObject({ pauseUs: 900n, bytes: 8192n });
      expect(done.snapshotResult).toEqual({
        snapshot: name,
        vms: [],
        pauseUs: 900,
        durationUs: 2100,
        bytes: 8192,
        runningAfterUs: [],
      });
      expect(a.calls).toEqual(['saveVm:vm1']);
      expect(b.calls).toEqual([]);
      expect(world.snapshots.get(name)).toMatchObject({ vmName: 'vm1', kind: 'bypass' });
      expect(world.get('vm1')).toBe('vmm-a');
    });

    it('with stop and full: the VM is gone afterwards and the bytes are the copy', async () => {
      a.setReporting(false); // vmm-a's report of the destroy is late
      const job = await jobs.save({ vm: 'vm2', snapshot: 'keep', full: true, stop: true });
      const done = await jobs.waitFor(job.id);
      expect(done.info.status, done.info.errorDesc).toBe('completed');
      expect(done.snapshotResult).toMatchObject({ snapshot: 'keep', pauseUs: 0 });
      expect(done.snapshotResult!.bytes).toBeGreaterThan(16 << 20);
      expect(world.has('vm2')).toBe(false);
      // the name is free for a restore at once, before vmm-a's report says so
      expect(registry.locate('vm2')).toBeUndefined();
      const back = await jobs.restore({ snapshot: 'keep', name: '', vmm: 'vmm-a', paused: false });
      expect((await jobs.waitFor(back.id)).snapshotResult?.vms).toEqual(['vm2']);
      expect(world.snapshots.get('keep')?.kind).toBe('full');
    });

    it('fails with the vmm message when the vmm refuses, and makes nothing', async () => {
      a.snapshotScripts.set('save:vm1', {
        failWith: 'block ram0 is private RAM: save it with --full',
      });
      const done = await jobs.waitFor(
        (await jobs.save({ vm: 'vm1', snapshot: 's1', full: false, stop: false })).id,
      );
      expect(done.info.status).toBe('failed');
      expect(done.info.errorDesc).toBe(
        'save of VM vm1 on vmm-a as s1 failed: block ram0 is private RAM: save it with --full',
      );
      expect(done.snapshotResult).toBeUndefined();
      expect(world.snapshots.size).toBe(0);
      // a vmm's own answer needs no looking: memstore was not asked
      expect(catalog.asked).toEqual([]);
    });

    it('a connection that drops after the save: memstore has the snapshot, so it completed', async () => {
      a.snapshotScripts.set('save:vm1', { drop: 'after' });
      const done = await jobs.waitFor(
        (await jobs.save({ vm: 'vm1', snapshot: 's1', full: false, stop: false })).id,
      );
      expect(done.info.status, done.info.errorDesc).toBe('completed');
      expect(catalog.asked).toEqual(['s1']);
      // what the migrator did not see is not made up
      expect(done.snapshotResult).toEqual({
        snapshot: 's1',
        vms: [],
        pauseUs: 0,
        durationUs: 0,
        bytes: 0,
        runningAfterUs: [],
      });
    });

    it('a dropped save whose snapshot memstore lacks fails, saying where the VM is', async () => {
      a.snapshotScripts.set('save:vm1', { drop: 'before' });
      const done = await jobs.waitFor(
        (await jobs.save({ vm: 'vm1', snapshot: 's1', full: false, stop: false })).id,
      );
      expect(done.info.status).toBe('failed');
      expect(done.info.errorDesc).toMatch(
        /^save of VM vm1 on vmm-a as s1 failed: Connection dropped; memstore has no snapshot s1 of VM vm1 \(looked for 0\.6 s\): the save did not complete; VM vm1 runs on vmm-a$/,
      );
    });

    it('after a restart: completed when memstore has the snapshot, failed when not', async () => {
      a.snapshotScripts.set('save:vm1', { delayMs: 150 });
      a.snapshotScripts.set('save:vm2', { delayMs: 150, failWith: 'the lease of vm2-ram0 moved' });
      const ok = await jobs.save({ vm: 'vm1', snapshot: 's1', full: false, stop: false });
      const bad = await jobs.save({ vm: 'vm2', snapshot: 's2', full: false, stop: false });
      await waitUntil('both saves reached the vmm', () => a.calls.length === 2);
      crashed = true;
      const { journal, jobs: restored } = JobJournal.open(dir);
      const next = manager(journal, restored);
      expect(next.recover().sort()).toEqual([ok.id, bad.id].sort());
      const [good, failed] = [await next.waitFor(ok.id), await next.waitFor(bad.id)];
      expect(good.info.status, good.info.errorDesc).toBe('completed');
      expect(good.snapshotResult?.snapshot).toBe('s1');
      expect(failed.info.status).toBe('failed');
      expect(failed.info.errorDesc).toMatch(
        /^the migrator restarted while this job was active; memstore has no snapshot s2 of VM vm2 .*: the save did not complete; VM vm2 runs on vmm-a$/,
      );
      // both ends are in the journal
      const again = JobJournal.open(dir).jobs;
      expect(again.find((j) => j.id === ok.id)).toMatchObject({
        info: { status: 'completed' },
        snapshotResult: { snapshot: 's1' },
      });
    });

    it('does not take a same-named snapshot made before the job for its own', async () => {
      world.snapshots.set('old', {
        name: 'old',
        vmName: 'vm1',
        vmmId: 'vmm-a',
        template: false,
        kind: 'bypass',
        createdAt: new Date(epoch.getTime() - 60_000),
      });
      a.snapshotScripts.set('save:vm1', { delayMs: 100 });
      const job = await jobs.save({ vm: 'vm1', snapshot: 'old', full: false, stop: false });
      await waitUntil('the save reached the vmm', () => a.calls.length === 1);
      const next = restart(job.id);
      const done = await next.waitFor(job.id);
      expect(done.info.status).toBe('failed');
      expect(done.info.errorDesc).toMatch(/memstore has no snapshot old of VM vm1/);
    });

    it('refuses bad requests before a job exists', async () => {
      const attempt = (vm: string, snapshot = '') =>
        jobs.save({ vm, snapshot, full: false, stop: false }).catch((e: unknown) => e);
      expect(await attempt('')).toMatchObject({
        code: 'MIGRATOR_INVALID_ARGUMENT',
        message: expect.stringMatching(/a VM name is required \(vmctl save VM/),
      });
      expect(await attempt('vm1', 'no spaces')).toMatchObject({
        code: 'MIGRATOR_INVALID_ARGUMENT',
        message: expect.stringMatching(/"no spaces" is not a valid name: use 1 to 63 letters/),
      });
      expect(await attempt('nope')).toMatchObject({ code: 'MIGRATOR_VM_NOT_FOUND' });
      a.scripts.set('vm3', {
        steps: Array.from({ length: 20 }, () => ({
          status: 'active',
          transferred: 1,
          remaining: 1,
        })),
        stepMs: 20,
      });
      const mig = await jobs.migrate({
        vm: 'vm3',
        targetVmm: 'vmm-b',
        capabilities: resolveCapabilities({ 'bypass-shared-memory': true }),
        parameters: {},
      });
      expect(await attempt('vm3')).toMatchObject({
        code: 'MIGRATOR_VM_BUSY',
        message: expect.stringContaining(`being migrated by job ${mig.id}`),
      });
      const saving = await jobs.save({ vm: 'vm1', snapshot: 'busy', full: false, stop: false });
      expect(await attempt('vm1')).toMatchObject({
        code: 'MIGRATOR_VM_BUSY',
        message: expect.stringContaining(`being saved by job ${saving.id}`),
      });
      expect(
        jobs
          .list(true)
          .map((j) => j.id)
          .sort(),
      ).toEqual([mig.id, saving.id].sort());
      await expect(jobs.cancel(saving.id)).rejects.toMatchObject({
        code: 'MIGRATOR_INVALID_ARGUMENT',
        message: expect.stringMatching(/cannot be cancelled: the vmm finishes it by itself/),
      });
    });
  });

  describe('restore', () => {
    const snapshot = (name: string, vmName: string) =>
      world.snapshots.set(name, {
        name,
        vmName,
        vmmId: 'vmm-a',
        template: false,
        kind: 'bypass',
        createdAt: epoch,
      });

    it('restores under the saved name on the instance with the fewest VMs', async () => {
      snapshot('s1', 'old');
      const job = await jobs.restore({ snapshot: 's1', name: '', vmm: '', paused: false });
      expect(job).toMatchObject({ kind: 'restore', vm: 'old', sourceVmm: '', targetVmm: 'vmm-b' });
      const done = await jobs.waitFor(job.id);
      expect(done.info.status, done.info.errorDesc).toBe('completed');
      expect(done.snapshotResult).toEqual({
        snapshot: 's1',
        vms: ['old'],
        pauseUs: 0,
        durationUs: 2500,
        bytes: 0,
        runningAfterUs: [2500],
      });
      expect(b.calls).toEqual(['restoreVm:s1']);
      expect(world.get('old')).toBe('vmm-b');
      // placed at once: a job right after finds it without asking around
      expect(registry.locate('old')?.vmm.id).toBe('vmm-b');
    });

    it('takes --name and --vmm, and fails with the vmm message', async () => {
      snapshot('s1', 'vm1');
      b.snapshotScripts.set('restore:s1', { failWith: 'snapshot s1 failed its CRC check' });
      const bad = await jobs.waitFor(
        (await jobs.restore({ snapshot: 's1', name: 'copy', vmm: 'vmm-b', paused: false })).id,
      );
      expect(bad.info.errorDesc).toBe(
        'restore of s1 as VM copy on vmm-b failed: snapshot s1 failed its CRC check',
      );
      const good = await jobs.waitFor(
        (await jobs.restore({ snapshot: 's1', name: 'copy', vmm: 'vmm-a', paused: true })).id,
      );
      expect(good.info.status, good.info.errorDesc).toBe('completed');
      expect(world.get('copy')).toBe('vmm-a');
      expect(world.facts.get('copy')?.paused).toBe(true);
    });

    it('refuses a name in use, a snapshot memstore lacks, and an unknown vmm', async () => {
      snapshot('s1', 'vm1');
      const attempt = (req: Partial<Parameters<JobManager['restore']>[0]>) =>
        jobs
          .restore({ snapshot: 's1', name: '', vmm: '', paused: false, ...req })
          .catch((e: unknown) => e);
      expect(await attempt({})).toMatchObject({
        code: 'MIGRATOR_INVALID_ARGUMENT',
        message: expect.stringMatching(/a VM named vm1 already exists on vmm-a.*--name/),
      });
      expect(await attempt({ snapshot: 'gone', name: 'x' })).toMatchObject({
        code: 'SNAPSHOT_NOT_FOUND',
        message: expect.stringMatching(/vmctl snapshot list/),
      });
      expect(await attempt({ snapshot: '' })).toMatchObject({ code: 'MIGRATOR_INVALID_ARGUMENT' });
      expect(await attempt({ name: 'Bad_Name' })).toMatchObject({
        code: 'MIGRATOR_INVALID_ARGUMENT',
      });
      expect(await attempt({ name: 'x', vmm: 'vmm-z' })).toMatchObject({
        code: 'MIGRATOR_VMM_NOT_FOUND',
      });
      expect(jobs.list(true)).toEqual([]);
    });

    it('after a restart: completed once the VM runs from the snapshot', async () => {
      snapshot('s1', 'vm1');
      b.snapshotScripts.set('restore:s1', { delayMs: 150 });
      const job = await jobs.restore({ snapshot: 's1', name: 'back', vmm: '', paused: false });
      await waitUntil('the restore reached the vmm', () => b.calls.length === 1);
      const next = restart(job.id);
      const done = await next.waitFor(job.id);
      expect(done.info.status, done.info.errorDesc).toBe('completed');
      expect(done.snapshotResult).toMatchObject({ vms: ['back'], runningAfterUs: [] });
    });
  });

  describe('template', () => {
    it('boots a guest on a shared region, waits for ready, saves it with stop', async () => {
      b.guests.set('kvserver', { readyMs: 60 });
      const job = await jobs.createTemplate({
        name: 'kv',
        source: { guest: 'kvserver' },
        memory: 64 << 20,
        vmm: '',
        args: { 'kv.size': '1000' },
        readyTimeoutMs: 0,
      });
      expect(job).toMatchObject({ kind: 'template', vm: 'kv', targetVmm: 'vmm-b' });
      expect(job.snapshot).toMatchObject({ guest: 'kvserver', readyTimeoutMs: 30_000 });
      const done = await jobs.waitFor(job.id);
      expect(done.info.status, done.info.errorDesc).toBe('completed');
      expect(b.calls).toEqual(['createVm:kv', 'watchVm:kv', 'saveVm:kv']);
      expect(world.snapshots.get('kv')).toMatchObject({ vmName: 'kv', template: true });
      expect(world.has('kv')).toBe(false); // the stop freed it
      expect(done.snapshotResult).toMatchObject({ snapshot: 'kv', pauseUs: 0 });
    });

    it('passes a guest image the client sent to CreateVm, and journals only its name', async () => {
      b.guests.set('mine.elf', { readyMs: 20 });
      const job = await jobs.createTemplate({
        name: 'sent',
        source: { guest: 'mine.elf', image: new Uint8Array(4321) },
        memory: 16 << 20,
        vmm: 'vmm-b',
        args: {},
        readyTimeoutMs: 0,
      });
      const done = await jobs.waitFor(job.id);
      expect(done.info.status, done.info.errorDesc).toBe('completed');
      expect(b.calls).toEqual(['createVm:sent:image(4321)', 'watchVm:sent', 'saveVm:sent']);
      expect(done.snapshot).toMatchObject({ guest: 'mine.elf' });
      expect(JSON.stringify(done)).not.toContain('4321');
      expect(Object.keys(done.snapshot!)).not.toContain('guestImage');

      const refused = await jobs
        .createTemplate({
          name: 'huge',
          source: { guest: 'huge.elf', image: new Uint8Array(16 * 1024 * 1024 + 1) },
          memory: 16 << 20,
          vmm: '',
          args: {},
          readyTimeoutMs: 0,
        })
        .catch((err: unknown) => err);
      expect(refused).toMatchObject({
        code: 'MIGRATOR_INVALID_ARGUMENT',
        message: expect.stringContaining('over the 16 MiB a client may send'),
      });
    });

    it('a guest that never rings ready: its VM is destroyed and the job says why', async () => {
      const job = await jobs.createTemplate({
        name: 'silent',
        source: { guest: 'hello' },
        memory: 16 << 20,
        vmm: 'vmm-a',
        args: {},
        readyTimeoutMs: 200,
      });
      const done = await jobs.waitFor(job.id);
      expect(done.info.status).toBe('failed');
      expect(done.info.errorDesc).toBe(
        'guest hello on vmm-a never rang its ready doorbell within 0.2 s. A template needs a ' +
          'guest that rings READY once it is set up (kvserver does); if it is only slow, raise ' +
          '--ready-timeout; its VM silent was destroyed',
      );
      expect(a.calls).toEqual(['createVm:silent', 'watchVm:silent', 'destroyVm:silent']);
      expect(world.has('silent')).toBe(false);
      expect(world.snapshots.size).toBe(0);
    });

    it('a guest that powers off before ready fails at once', async () => {
      a.guests.set('hello', { powerOffMs: 30 });
      const done = await jobs.waitFor(
        (
          await jobs.createTemplate({
            name: 'hi',
            source: { guest: 'hello' },
            memory: 16 << 20,
            vmm: 'vmm-a',
            args: {},
            readyTimeoutMs: 20_000,
          })
        ).id,
        5000,
      );
      expect(done.info.errorDesc).toMatch(
        /^guest hello on vmm-a never rang its ready doorbell: the guest powered off \(exit code 0\)\./,
      );
      expect(world.has('hi')).toBe(false);
    });

    it('saves a running VM as a template where it runs; it keeps running', async () => {
      const done = await jobs.waitFor(
        (
          await jobs.createTemplate({
            name: 'from1',
            source: { fromVm: 'vm1' },
            memory: 0,
            vmm: '',
            args: {},
            readyTimeoutMs: 0,
          })
        ).id,
      );
      expect(done.info.status, done.info.errorDesc).toBe('completed');
      expect(done).toMatchObject({ vm: 'vm1', sourceVmm: 'vmm-a' });
      expect(world.snapshots.get('from1')).toMatchObject({ template: true, vmName: 'vm1' });
      expect(world.get('vm1')).toBe('vmm-a');
      expect(done.snapshotResult?.pauseUs).toBe(900);
    });

    it('makes a layer of a VM that runs as a clone now: the vmm says what its RAM is', async () => {
      a.setReporting(false); // the registry still holds vm2's first report: shared RAM
      const first = await jobs.save({ vm: 'vm2', snapshot: 'first', full: false, stop: false });
      expect((await jobs.waitFor(first.id)).info.status).toBe('completed');
      // vm2 runs on as a clone of `first` now: a template of it is a layer (a bypass save)
      const t = await jobs.createTemplate({
        name: 'golden',
        source: { fromVm: 'vm2' },
        memory: 0,
        vmm: '',
        args: {},
        readyTimeoutMs: 0,
      });
      expect((await jobs.waitFor(t.id)).info.status).toBe('completed');
      expect(world.snapshots.get('golden')).toMatchObject({ kind: 'bypass', template: true });
      expect(a.calls.slice(-2)).toEqual(['getVm:vm2', 'saveVm:vm2']);
    });

    it('copies the RAM of a VM with private memory or shared and clone RAM mixed', () => {
      expect(copyNeeded([{ backend: 'shared' }, { backend: 'shared' }])).toBe(false);
      expect(copyNeeded([{ backend: 'clone' }, { backend: 'clone' }])).toBe(false);
      expect(copyNeeded([{ backend: 'shared' }, { backend: 'clone' }])).toBe(true);
      expect(copyNeeded([{ backend: 'clone' }, { backend: 'private' }])).toBe(true);
      expect(copyNeeded([{ backend: 'private' }])).toBe(true);
    });

    it('can be cancelled while the guest boots: its VM is destroyed', async () => {
      const job = await jobs.createTemplate({
        name: 'slow',
        source: { guest: 'kvserver' },
        memory: 16 << 20,
        vmm: 'vmm-a',
        args: {},
        readyTimeoutMs: 20_000,
      });
      await waitUntil('the guest boots', () => a.calls.includes('watchVm:slow'));
      expect((await jobs.cancel(job.id)).info.status).toBe('cancelling');
      const done = await jobs.waitFor(job.id);
      expect(done.info.status).toBe('cancelled');
      expect(world.has('slow')).toBe(false);
    });

    it('after a restart while the guest booted: no template, the boot VM is destroyed', async () => {
      const job = await jobs.createTemplate({
        name: 'slow',
        source: { guest: 'kvserver' },
        memory: 16 << 20,
        vmm: 'vmm-a',
        args: {},
        readyTimeoutMs: 20_000,
      });
      await waitUntil('the guest boots', () => a.calls.includes('watchVm:slow'));
      const next = restart(job.id);
      const done = await next.waitFor(job.id);
      expect(done.info.status).toBe('failed');
      expect(done.info.errorDesc).toMatch(
        /^the migrator restarted while this job was active; memstore has no snapshot slow of VM slow .*: the save did not complete; its VM slow was destroyed$/,
      );
      expect(world.has('slow')).toBe(false);
      // the old manager's wait ends with the VM it watched
      await jobs.idle();
    });

    it('refuses requests without a source, without memory, or with a taken name', async () => {
      const attempt = (req: Partial<Parameters<JobManager['createTemplate']>[0]>) =>
        jobs
          .createTemplate({
            name: 't',
            source: { guest: 'kvserver' },
            memory: 64 << 20,
            vmm: '',
            args: {},
            readyTimeoutMs: 0,
            ...req,
          })
          .catch((e: unknown) => e);
      expect(await attempt({ source: undefined })).toMatchObject({
        code: 'MIGRATOR_INVALID_ARGUMENT',
        message: expect.stringMatching(/--guest G --memory 256M\) or a running VM \(--from-vm/),
      });
      expect(await attempt({ memory: 0 })).toMatchObject({
        message: expect.stringMatching(/--memory is required with --guest/),
      });
      expect(await attempt({ memory: 1000 })).toMatchObject({
        message: expect.stringMatching(/not a multiple of 4 KiB/),
      });
      expect(await attempt({ name: 'vm1' })).toMatchObject({
        message: expect.stringMatching(/a VM named vm1 already exists on vmm-a/),
      });
      expect(await attempt({ name: '' })).toMatchObject({ code: 'MIGRATOR_INVALID_ARGUMENT' });
      expect(await attempt({ source: { fromVm: 'vm1' }, memory: 0, vmm: 'vmm-b' })).toMatchObject({
        message: expect.stringMatching(/VM vm1 runs on vmm-a, not vmm-b/),
      });
      // memory and args would be ignored for a running VM: refused, not dropped
      expect(await attempt({ source: { fromVm: 'vm1' } })).toMatchObject({
        code: 'MIGRATOR_INVALID_ARGUMENT',
        message: expect.stringMatching(/memory and args are for a booted guest/),
      });
      expect(
        await attempt({ source: { fromVm: 'vm1' }, memory: 0, args: { k: 'v' } }),
      ).toMatchObject({ code: 'MIGRATOR_INVALID_ARGUMENT' });
      expect(jobs.list(true)).toEqual([]);
    });
  });

  describe('clone', () => {
    beforeEach(() => {
      world.snapshots.set('kv', {
        name: 'kv',
        vmName: 'kv',
        vmmId: 'vmm-a',
        template: true,
        kind: 'bypass',
        createdAt: epoch,
      });
    });

    it('starts clones named after the template, after the numbers already in use', async () => {
      world.set('kv-2', 'vmm-a');
      const job = await jobs.clone({
        template: 'kv',
        count: 3,
        vmm: '',
        namePrefix: '',
        paused: false,
      });
      expect(job).toMatchObject({ kind: 'clone', vm: '', targetVmm: 'vmm-b' });
      expect(job.snapshot).toMatchObject({ namePrefix: 'kv', firstIndex: 3, count: 3 });
      const done = await jobs.waitFor(job.id);
      expect(done.info.status, done.info.errorDesc).toBe('completed');
      expect(done.snapshotResult).toEqual({
        snapshot: 'kv',
        vms: ['kv-3', 'kv-4', 'kv-5'],
        pauseUs: 0,
        durationUs: 1300,
        bytes: 0,
        runningAfterUs: [1000, 1100, 1200],
      });
      expect(['kv-3', 'kv-4', 'kv-5'].map((n) => registry.locate(n)?.vmm.id)).toEqual([
        'vmm-b',
        'vmm-b',
        'vmm-b',
      ]);
      // a second clone job goes on after them
      const next = await jobs.clone({
        template: 'kv',
        count: 1,
        vmm: 'vmm-a',
        namePrefix: '',
        paused: true,
      });
      expect(next.snapshot?.firstIndex).toBe(6);
      expect((await jobs.waitFor(next.id)).snapshotResult?.vms).toEqual(['kv-6']);
    });

    it('two clone jobs at once take separate numbers', async () => {
      b.snapshotScripts.set('clone:kv', { delayMs: 50 });
      const one = await jobs.clone({
        template: 'kv',
        count: 2,
        vmm: 'vmm-b',
        namePrefix: 'w',
        paused: false,
      });
      const two = await jobs.clone({
        template: 'kv',
        count: 2,
        vmm: 'vmm-b',
        namePrefix: 'w',
        paused: false,
      });
      expect([one.snapshot?.firstIndex, two.snapshot?.firstIndex]).toEqual([1, 3]);
      expect((await jobs.waitFor(one.id)).info.status).toBe('completed');
      expect((await jobs.waitFor(two.id)).info.status).toBe('completed');
    });

    it('refuses a count of 0 or over 1000, a bad prefix, and a template memstore lacks', async () => {
      const attempt = (req: Partial<Parameters<JobManager['clone']>[0]>) =>
        jobs
          .clone({ template: 'kv', count: 1, vmm: '', namePrefix: '', paused: false, ...req })
          .catch((e: unknown) => e);
      for (const count of [0, 1001]) {
        expect(await attempt({ count })).toMatchObject({
          code: 'MIGRATOR_INVALID_ARGUMENT',
          message: `count ${count} is out of range: clone 1 to 1000 VMs at once`,
        });
      }
      expect(await attempt({ namePrefix: 'Web' })).toMatchObject({
        message: expect.stringMatching(/pass --name-prefix/),
      });
      expect(await attempt({ namePrefix: 'x'.repeat(46), count: 10 })).toMatchObject({
        message: expect.stringMatching(/longer than 48 characters/),
      });
      expect(await attempt({ template: 'none' })).toMatchObject({ code: 'SNAPSHOT_NOT_FOUND' });
      expect(await attempt({ template: '' })).toMatchObject({ code: 'MIGRATOR_INVALID_ARGUMENT' });
      expect(jobs.list(true)).toEqual([]);
    });

    it('fails with the vmm message and starts nothing', async () => {
      b.snapshotScripts.set('clone:kv', { failWith: 'vmm-b has room for 2 more VMs' });
      const done = await jobs.waitFor(
        (await jobs.clone({ template: 'kv', count: 5, vmm: '', namePrefix: '', paused: false })).id,
      );
      expect(done.info.errorDesc).toBe(
        'clone of kv as kv-1 .. kv-5 on vmm-b failed: vmm-b has room for 2 more VMs',
      );
      expect([...world.keys()].filter((n) => n.startsWith('kv-'))).toEqual([]);
    });

    it('after a restart: completed once every clone runs, with the names in order', async () => {
      b.snapshotScripts.set('clone:kv', { delayMs: 150 });
      const job = await jobs.clone({
        template: 'kv',
        count: 3,
        vmm: '',
        namePrefix: '',
        paused: false,
      });
      await waitUntil('the clone reached the vmm', () => b.calls.length === 1);
      const next = restart(job.id);
      const done = await next.waitFor(job.id);
      expect(done.info.status, done.info.errorDesc).toBe('completed');
      expect(done.snapshotResult?.vms).toEqual(['kv-1', 'kv-2', 'kv-3']);
    });

    it('after a restart: failed, naming nothing, when the clones never appeared', async () => {
      b.snapshotScripts.set('clone:kv', { delayMs: 150, failWith: 'no' });
      const job = await jobs.clone({
        template: 'kv',
        count: 2,
        vmm: '',
        namePrefix: '',
        paused: false,
      });
      await waitUntil('the clone reached the vmm', () => b.calls.length === 1);
      const next = restart(job.id);
      const done = await next.waitFor(job.id);
      expect(done.info.status).toBe('failed');
      expect(done.info.errorDesc).toBe(
        'the migrator restarted while this job was active; vmm-b runs none of the 2 clone(s) of ' +
          'kv from kv: it did not complete',
      );
    });
  });
});
