import { capabilitiesToWire } from '@handoff/qapi/wire';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defaultCapabilities, resolveCapabilities } from '@handoff/qapi';
import { createLogger } from '@handoff/service';
import { MigratorError } from '../errors.js';
import { VmmRegistry } from '../registry/vmm-registry.js';
import { hostedVmsFromWire } from '../clients/vm-wire.js';
import { FakeLeases, FakeVmm, FakeWorld } from '../testing/fake-vmm.js';
import { JobManager, type JobSink } from './job-manager.js';
import { statusPath, type Job } from './job.js';
import { JobJournal } from './journal.js';

const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });
const bypass = resolveCapabilities({ 'bypass-shared-memory': true });

describe('statusPath', () => {
  it('walks the legal transitions of qapi', () => {
    expect(statusPath('setup', 'device')).toEqual(['active', 'device']);
    expect(statusPath('none', 'completed')).toEqual(['setup', 'active', 'device', 'completed']);
    expect(statusPath('active', 'cancelled')).toEqual(['cancelling', 'cancelled']);
    expect(statusPath('cancelling', 'active')).toBeUndefined();
    expect(statusPath('completed', 'failed')).toBeUndefined();
  });
});

/** A migration of a few quick steps (then the script's end). */
const shortScript = {
  steps: [{ status: 'active' as const, transferred: 1, remaining: 1 }],
  stepMs: 10,
};

describe('JobManager against fake vmm instances', () => {
  let world: FakeWorld;
  let a: FakeVmm;
  let b: FakeVmm;
  let registry: VmmRegistry;
  /** Added to the registry's clock (to let instances expire). */
  let clock: number;
  let jobs: JobManager;
  let dir: string;
  /** Set to simulate a crash: the running manager writes nothing more. */
  let crashed: boolean;
  /** memstore's leases, as the world has them. */
  let leases: FakeLeases;

  const manager = (journal?: JobSink, restored: Job[] = []) =>
    new JobManager({
      logger,
      registry,
      journal,
      restored,
      pollIntervalMs: 10,
      recoveryRetryMs: 2000,
      leases,
    });

  beforeEach(async () => {
    world = new FakeWorld([
      ['vm1', 'vmm-a'],
      ['vm2', 'vmm-a'],
      ['vm3', 'vmm-a'],
      ['vm4', 'vmm-a'],
    ]);
    const peers = new Map<string, FakeVmm>();
    a = await FakeVmm.start('vmm-a', world, peers);
    b = await FakeVmm.start('vmm-b', world, peers);
    clock = 0;
    registry = new VmmRegistry(60_000, () => Date.now() + clock);
    for (const f of [a, b]) {
      registry.register({ id: f.id, address: f.address, version: 't', vmCount: 0, vmsVersion: 0 });
      // the fakes report their VMs straight into the registry, as RegisterVmm/ReportVms would
      f.reportTo((vms) => registry.reportVms(f.id, hostedVmsFromWire(vms)));
    }
    dir = mkdtempSync(join(tmpdir(), 'handoff-jobs-'));
    crashed = false;
    leases = new FakeLeases(world);
    const journal = JobJournal.open(dir).journal;
    jobs = manager({
      append: (j, d) => (crashed ? undefined : journal.append(j, d)),
      sync: () => journal.sync(),
    });
  });

  afterEach(async () => {
    await jobs.idle();
    await jobs.close();
    await Promise.all([a.stop(), b.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  /** The VmmService calls a fake got that look a VM up (ListVms, GetVm) or destroy one. */
  const lookups = (f: FakeVmm) => f.calls.filter((c) => /^(listVms|getVm|destroyVm):/.test(c));
  /** What a job that did not complete asks to find its VM: each end once, nothing destroyed. */
  const resolution = (vm: string) => ({
    source: [`getMigration:${vm}`, `getVm:${vm}`],
    target: [`cancelIncoming:${vm}`, `getVm:${vm}`],
  });
  const asked = (f: FakeVmm) =>
    f.calls.filter((c) => /^(listVms|getVm|destroyVm|getMigration|cancelIncoming):/.test(c));

  it('migrates a VM: PrepareIncoming on the target, MigrateVm on the source, progress, statistics', async () => {
    const job = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: { 'downtime-limit': 50 },
    });
    expect(job).toMatchObject({
      kind: 'migrate',
      vm: 'vm1',
      sourceVmm: 'vmm-a',
      targetVmm: 'vmm-b',
    });
    const seen: string[] = [];
    let sawProgress = false;
    jobs.watch(job.id, (j) => {
      if (seen.at(-1) !== j.info.status) seen.push(j.info.status);
      if (j.info.ram.transferred > 0 && j.info.status === 'active') sawProgress = true;
    });
    const done = await jobs.waitFor(job.id);
    expect(done.info.status).toBe('completed');
    // the progress came on MigrateVm's stream: no GetMigration polling
    expect(sawProgress).toBe(true);
    expect(seen).toContain('active');
    expect(seen.at(-1)).toBe('completed');
    expect(a.calls.filter((c) => c.startsWith('getMigration'))).toEqual([]);
    expect(done.info).toMatchObject({ downtimeUs: 1500, setupTimeMs: 2, deviceBytes: 8192 });
    expect(done.info.ram).toMatchObject({ transferred: 4 << 20, zeroPages: 1024 });
    expect(done.finishedAt).toBeInstanceOf(Date);
    // The target got the spec vmm-a reported and the capabilities, to build the machine ahead.
    expect(b.prepared).toEqual([
      { name: 'vm1', specName: 'vm1', capabilities: capabilitiesToWire(bypass) },
    ]);
    expect(a.calls).toEqual(['migrateVm:vm1']);
    expect(b.calls).toEqual(['prepareIncoming:vm1']);
    expect(world.get('vm1')).toBe('vmm-b');
    // the registry places the VM on the target as soon as the job ended
    expect(registry.locate('vm1')?.vmm.id).toBe('vmm-b');
    // no lookups, and nothing destroyed: the source retires its postmigrate copy on its own
    await jobs.idle();
    await new Promise((r) => setTimeout(r, a.retireMs * 2));
    expect([...lookups(a), ...lookups(b)]).toEqual([]);
    expect(registry.vmsOn('vmm-a')?.map((v) => v.name)).toEqual(['vm2', 'vm3', 'vm4']);
  });

  it('moves a VM straight back: the old source waits for its own husk, the migrator asks nothing', async () => {
    a.retireMs = 150;
    const there = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    expect((await jobs.waitFor(there.id)).info.status).toBe('completed');
    // at once, while vmm-a still lists vm1 as postmigrate: vmm-a's PrepareIncoming waits for it
    const back = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-a',
      capabilities: bypass,
      parameters: {},
    });
    expect(back.sourceVmm).toBe('vmm-b');
    expect((await jobs.waitFor(back.id)).info.status).toBe('completed');
    expect(world.get('vm1')).toBe('vmm-a');
    expect(registry.locate('vm1')?.vmm.id).toBe('vmm-a');
    expect([...lookups(a), ...lookups(b)]).toEqual([]);
  });

  it('finds a VM created a moment ago whose report is still on the way, with one GetVm round', async () => {
    // reported at once (as a vmm does right after CreateVm): found without asking
    world.set('vm8', 'vmm-b');
    const reported = await jobs.migrate({
      vm: 'vm8',
      targetVmm: 'vmm-a',
      capabilities: bypass,
      parameters: {},
    });
    expect(reported.sourceVmm).toBe('vmm-b');
    expect((await jobs.waitFor(reported.id)).info.status).toBe('completed');
    expect([...lookups(a), ...lookups(b)]).toEqual([]);
    // vmm-a's report of vm9 has not arrived: each alive instance is asked for vm9 once
    a.setReporting(false);
    world.set('vm9', 'vmm-a');
    const late = await jobs.migrate({
      vm: 'vm9',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    expect(late.sourceVmm).toBe('vmm-a');
    const done = await jobs.waitFor(late.id);
    expect(done.info.status).toBe('completed');
    // the spec came with the answer: the target still builds ahead
    expect(b.prepared.at(-1)).toMatchObject({ name: 'vm9', specName: 'vm9' });
    expect(lookups(a)).toEqual(['getVm:vm9']);
    expect(lookups(b)).toEqual(['getVm:vm9']);
    // a VM no instance has: the same one round, then a clear error
    await expect(
      jobs.migrate({ vm: 'nope', targetVmm: 'vmm-b', capabilities: bypass, parameters: {} }),
    ).rejects.toMatchObject({
      code: 'MIGRATOR_VM_NOT_FOUND',
      message: expect.stringMatching(
        /no vmm instance runs a VM named nope \(asked: vmm-a, vmm-b\)/,
      ),
    });
    expect(lookups(a)).toEqual(['getVm:vm9', 'getVm:nope']);
  });

  it('places no VM on an instance that stopped heartbeating', async () => {
    clock = 120_000; // both instances silent for longer than the expiry
    await expect(
      jobs.migrate({ vm: 'vm1', targetVmm: 'vmm-b', capabilities: bypass, parameters: {} }),
    ).rejects.toMatchObject({
      code: 'MIGRATOR_VM_NOT_FOUND',
      message: expect.stringMatching(/asked: none alive/),
    });
    await expect(
      jobs.liveUpdate({ fromVmm: 'vmm-a', toVmm: 'vmm-b', concurrency: 1, parameters: {} }),
    ).rejects.toMatchObject({ code: 'MIGRATOR_VMM_UNAVAILABLE' });
    expect([...lookups(a), ...lookups(b)]).toEqual([]);
  });

  it('fails the job with the vmm message when the migration fails', async () => {
    a.scripts.set('vm1', {
      steps: [{ status: 'active', transferred: 1, remaining: 1 }],
      stepMs: 20,
      failWith: 'target refused the RegionRef of block ram0: epoch 3 is stale',
    });
    const job = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    const done = await jobs.waitFor(job.id);
    expect(done.info.status).toBe('failed');
    expect(done.info.errorDesc).toContain('epoch 3 is stale');
    expect(done.outcome).toEqual({
      where: 'source',
      vmm: 'vmm-a',
      detail: 'VM vm1 runs on vmm-a',
    });
    expect(world.get('vm1')).toBe('vmm-a');
    expect(registry.locate('vm1')?.vmm.id).toBe('vmm-a');
    // it asked each end once where the VM is (and freed the name on the target), destroyed nothing
    expect(asked(a)).toEqual(resolution('vm1').source);
    expect(asked(b)).toEqual(resolution('vm1').target);
    expect(b.reservedNames()).toEqual([]);
  });

  it('a failed migration leaves the name free on the target: an immediate retry moves the VM', async () => {
    a.scripts.set('vm1', {
      steps: [{ status: 'active', transferred: 1, remaining: 1 }],
      stepMs: 10,
      failWith: 'the target refused the header',
    });
    const first = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    expect((await jobs.waitFor(first.id)).info.status).toBe('failed');
    // the fake target, like an older vmm, kept its reservation: the job's CancelIncoming freed it
    expect(b.reservedNames()).toEqual([]);
    a.scripts.delete('vm1');
    const retry = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    const done = await jobs.waitFor(retry.id);
    expect(done.info.status, done.info.errorDesc).toBe('completed');
    expect(done.outcome).toMatchObject({ where: 'target', vmm: 'vmm-b' });
    expect(world.get('vm1')).toBe('vmm-b');
  });

  it('a connection that drops after the hand-off reports completed: the VM runs on the target', async () => {
    a.scripts.set('vm1', { ...shortScript, end: 'drop-after-handoff' });
    const job = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    const done = await jobs.waitFor(job.id);
    expect(done.info.status, done.info.errorDesc).toBe('completed');
    expect(done.info.errorDesc).toBeUndefined();
    // the source's own final info, read back with GetMigration
    expect(done.info).toMatchObject({ downtimeUs: 1500, deviceBytes: 8192 });
    expect(done.outcome).toEqual({
      where: 'target',
      vmm: 'vmm-b',
      detail: 'VM vm1 runs on vmm-b with the lease of region vm1-ram0',
    });
    expect(leases.asked).toEqual(['vm1-ram0']);
    expect(registry.locate('vm1')?.vmm.id).toBe('vmm-b');
  });

  it('a source that dies after the hand-off: completed, and it says the source is gone', async () => {
    a.scripts.set('vm1', { ...shortScript, end: 'source-dies-after-handoff' });
    const job = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    const done = await jobs.waitFor(job.id);
    expect(done.info.status, done.info.errorDesc).toBe('completed');
    expect(done.outcome?.detail).toBe(
      'VM vm1 runs on vmm-b with the lease of region vm1-ram0; vmm-a did not answer (its ' +
        'process is gone)',
    );
  });

  it('a VM lost with its source is reported as that, and the target keeps nothing', async () => {
    a.scripts.set('vm1', { ...shortScript, end: 'source-dies-before-stop' });
    const job = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    const done = await jobs.waitFor(job.id);
    expect(done.info.status).toBe('failed');
    expect(done.outcome).toEqual({
      where: 'lost',
      vmm: 'vmm-a',
      detail:
        'VM vm1 was lost with vmm-a (its process is gone); its memory is in region vm1-ram0 (kept)',
    });
    expect(done.info.errorDesc).toMatch(
      /^VM vm1 was lost with vmm-a \(its process is gone\); its memory is in region vm1-ram0 \(kept\) \(migration of vm1 from vmm-a to vmm-b: /,
    );
    expect(b.reservedNames()).toEqual([]);
  });

  it('a VM gone from its source before MigrateVm came is not called lost: not there, nothing moved', async () => {
    a.setReporting(false); // the registry still places vm1 on vmm-a
    world.delete('vm1');
    const job = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    const done = await jobs.waitFor(job.id);
    expect(done.info.status).toBe('failed');
    expect(done.outcome).toMatchObject({
      where: 'unknown',
      detail: expect.stringMatching(/^VM vm1 was not on vmm-a when the migration began/),
    });
    expect(b.reservedNames()).toEqual([]);
  });

  it('with memstore unreachable, the two ends still tell: the target runs it', async () => {
    leases.down = true;
    a.scripts.set('vm1', { ...shortScript, end: 'drop-after-handoff' });
    const job = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    const done = await jobs.waitFor(job.id);
    expect(done.info.status).toBe('completed');
    expect(done.outcome).toEqual({ where: 'target', vmm: 'vmm-b', detail: 'VM vm1 runs on vmm-b' });
  });

  it('cancels a running migration through CancelMigration on the source', async () => {
    a.scripts.set('vm1', {
      steps: Array.from({ length: 50 }, (_, i) => ({
        status: 'active' as const,
        transferred: i,
        remaining: 50 - i,
      })),
      stepMs: 20,
    });
    const job = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    while (jobs.get(job.id).info.status !== 'active') await new Promise((r) => setTimeout(r, 5));
    const cancelling = await jobs.cancel(job.id);
    expect(cancelling.info.status).toBe('cancelling');
    const done = await jobs.waitFor(job.id);
    expect(done.info.status).toBe('cancelled');
    expect(a.calls).toContain('cancelMigration:vm1');
    expect(world.get('vm1')).toBe('vmm-a');
    await expect(jobs.cancel(job.id)).rejects.toMatchObject({ code: 'MIGRATOR_JOB_FINISHED' });
  });

  it('rejects bad requests before a job exists', async () => {
    const caps = defaultCapabilities();
    const attempt = (vm: string, to: string, c = caps) =>
      jobs.migrate({ vm, targetVmm: to, capabilities: c, parameters: {} }).catch((e) => e);
    expect(await attempt('vm1', 'vmm-z')).toMatchObject({ code: 'MIGRATOR_VMM_NOT_FOUND' });
    expect(await attempt('nope', 'vmm-b')).toMatchObject({ code: 'MIGRATOR_VM_NOT_FOUND' });
    const same = (await attempt('vm1', 'vmm-a')) as MigratorError;
    expect(same.code).toBe('MIGRATOR_INVALID_ARGUMENT');
    expect(same.message).toMatch(/same vmm/);
    const combo = (await attempt(
      'vm1',
      'vmm-b',
      resolveCapabilities({ 'bypass-shared-memory': true, 'postcopy-ram': true }),
    )) as MigratorError;
    // whatever qapi says about the combination is passed on verbatim
    if (combo instanceof MigratorError) expect(combo.code).toBe('MIGRATOR_INVALID_ARGUMENT');
    expect(jobs.list(true)).toEqual(
      combo instanceof MigratorError ? [] : [expect.objectContaining({ vm: 'vm1' })],
    );
  });

  it('live-updates every VM of an instance with bounded concurrency; one failure fails the parent only', async () => {
    a.scripts.set('vm3', {
      steps: [{ status: 'active', transferred: 1, remaining: 1 }],
      stepMs: 30,
      failWith: 'vm3 device state did not load',
    });
    const parent = await jobs.liveUpdate({
      fromVmm: 'vmm-a',
      toVmm: 'vmm-b',
      concurrency: 2,
      parameters: {},
    });
    expect(parent.kind).toBe('live-update');
    expect(parent.children).toHaveLength(4);
    const done = await jobs.waitFor(parent.id);
    expect(done.info.status).toBe('failed');
    expect(done.info.errorDesc).toMatch(/1 of 4 VM\(s\).*vm3 device state did not load/);
    expect(a.maxConcurrent).toBe(2);
    const children = done.children.map((id) => jobs.get(id));
    expect(children.map((c) => [c.vm, c.info.status]).sort()).toEqual([
      ['vm1', 'completed'],
      ['vm2', 'completed'],
      ['vm3', 'failed'],
      ['vm4', 'completed'],
    ]);
    expect(children.every((c) => c.capabilities['bypass-shared-memory'])).toBe(true);
    expect(done.info.ram.transferred).toBeGreaterThanOrEqual(3 * (4 << 20));
    expect([...world.values()].sort()).toEqual(['vmm-a', 'vmm-b', 'vmm-b', 'vmm-b']);
    // the VMs of vmm-a came from its report, their specs too
    expect(b.prepared.map((p) => p.specName).sort()).toEqual(['vm1', 'vm2', 'vm3', 'vm4']);
    // only the failed one was looked for afterwards
    expect(asked(a)).toEqual(resolution('vm3').source);
    expect(asked(b)).toEqual(resolution('vm3').target);
  });

  it('refuses to live-update an instance whose VMs the migrator has not heard of yet', async () => {
    registry.register({ id: 'vmm-c', address: 'c:1', version: 't', vmCount: 3, vmsVersion: 7 });
    await expect(
      jobs.liveUpdate({ fromVmm: 'vmm-c', toVmm: 'vmm-b', concurrency: 1, parameters: {} }),
    ).rejects.toMatchObject({
      code: 'MIGRATOR_VMM_UNAVAILABLE',
      message: expect.stringMatching(/vmm-c has not reported its VMs/),
    });
  });

  it('cancels a live update: running children are cancelled, queued ones never start', async () => {
    for (const vm of ['vm1', 'vm2', 'vm3', 'vm4']) {
      a.scripts.set(vm, {
        steps: Array.from({ length: 50 }, () => ({
          status: 'active' as const,
          transferred: 4096,
          remaining: 4096,
        })),
        stepMs: 20,
      });
    }
    const parent = await jobs.liveUpdate({
      fromVmm: 'vmm-a',
      toVmm: 'vmm-b',
      concurrency: 1,
      parameters: {},
    });
    const first = parent.children[0]!;
    while (jobs.get(first).info.status !== 'active') await new Promise((r) => setTimeout(r, 5));
    expect((await jobs.cancel(parent.id)).info.status).toBe('cancelling');
    const done = await jobs.waitFor(parent.id);
    expect(done.info.status).toBe('cancelled');
    expect(done.children.map((id) => jobs.get(id).info.status)).toEqual([
      'cancelled',
      'cancelled',
      'cancelled',
      'cancelled',
    ]);
    expect(a.calls.filter((c) => c.startsWith('migrateVm'))).toEqual(['migrateVm:vm1']);
    expect([...world.values()].every((v) => v === 'vmm-a')).toBe(true);
  });

  it('after a restart cancels in-flight jobs at both ends and records where the VM is', async () => {
    a.scripts.set('vm1', {
      steps: Array.from({ length: 100 }, () => ({
        status: 'active' as const,
        transferred: 1,
        remaining: 1,
      })),
      stepMs: 20,
    });
    const job = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    while (jobs.get(job.id).info.status !== 'active') await new Promise((r) => setTimeout(r, 5));
    // the migrator dies: nothing more is written; a new one opens the same journal
    crashed = true;
    const { journal, jobs: restored } = JobJournal.open(dir);
    expect(restored.map((j) => [j.id, j.info.status])).toEqual([[job.id, 'active']]);
    expect(restored[0]?.regions).toEqual(['vm1-ram0']);
    const next = manager(journal, restored);
    expect(next.recover()).toEqual([job.id]);
    // resolving: no longer active, not yet ended
    expect(next.get(job.id).info.status).toBe('cancelling');
    const done = await next.waitFor(job.id);
    expect(done.info.status).toBe('cancelled');
    expect(done.outcome).toEqual({
      where: 'source',
      vmm: 'vmm-a',
      detail:
        'the migrator restarted while this job was active: it cancelled the migration at both ' +
        'ends; VM vm1 runs on vmm-a',
    });
    await next.idle();
    expect(a.calls).toContain('cancelMigration:vm1');
    expect(b.calls).toContain('cancelIncoming:vm1');
    expect(a.calls.filter((c) => c.startsWith('destroyVm'))).toEqual([]);
    // both ends clean: the old migration saw the cancel, the target holds no reservation
    await jobs.idle();
    expect(world.get('vm1')).toBe('vmm-a');
    expect(b.reservedNames()).toEqual([]);
    const lines = readFileSync(join(dir, 'jobs.jsonl'), 'utf8').trim().split('\n');
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ v: 1, job: { id: job.id } });
    expect(JobJournal.open(dir).jobs[0]).toMatchObject({
      info: { status: 'cancelled' },
      outcome: { where: 'source' },
    });
    // the VM is free to move at once, with the same name on the target
    a.scripts.delete('vm1');
    const again = await next.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    expect((await next.waitFor(again.id)).info.status).toBe('completed');
    await next.close();
  }, 15_000);

  it('after a restart, a migration that completed meanwhile is recorded completed', async () => {
    a.scripts.set('vm1', {
      steps: Array.from({ length: 10 }, () => ({
        status: 'active' as const,
        transferred: 1,
        remaining: 1,
      })),
      stepMs: 20,
    });
    const job = await jobs.migrate({
      vm: 'vm1',
      targetVmm: 'vmm-b',
      capabilities: bypass,
      parameters: {},
    });
    while (jobs.get(job.id).info.status !== 'active') await new Promise((r) => setTimeout(r, 5));
    crashed = true;
    // the migration runs to its end with nobody watching
    while (world.get('vm1') !== 'vmm-b') await new Promise((r) => setTimeout(r, 10));
    const { journal, jobs: restored } = JobJournal.open(dir);
    const next = manager(journal, restored);
    next.recover();
    const done = await next.waitFor(job.id);
    expect(done.info.status, done.info.errorDesc).toBe('completed');
    expect(done.info).toMatchObject({ downtimeUs: 1500 });
    expect(done.outcome).toMatchObject({
      where: 'target',
      vmm: 'vmm-b',
      detail: expect.stringMatching(
        /^VM vm1 runs on vmm-b with the lease of region vm1-ram0 \(it completed while the migrator restarted while this job was active\)$/,
      ),
    });
    await next.idle();
    await next.close();
  }, 15_000);
});
