import { mapFile } from '@handoff/shm';
import { checkAbConsistency } from '@handoff/vmm';
import { vmm as pb } from '@handoff/proto';
import { RemoteError, unaryCall } from '@handoff/service';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AB_BASE,
  AB_PAGES,
  abArgs,
  expectRetired,
  migrateVm,
  refused,
} from './helpers/migration.js';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { openConsole, startVmmProcess, vmmCall, vmSpec, type VmmUnderTest } from './helpers/vmm.js';

/**
 * How a migration's end leaves both vmm instances (real processes, real memstore):
 * - a failed or cancelled arrival frees the VM's name on the target at once (an immediate retry
 *   migrates), and CancelIncoming gives one up on request and says how it ended;
 * - a source left paused with MIGRATION_UNCERTAIN (memstore did not answer its lease re-take)
 *   resumes by itself once memstore confirms the lease is its own;
 * - a region created for a VM travels with it: destroyed on the target, the VM deletes it; a
 *   region the user made is kept.
 */
describe('the ends of a migration, real vmm instances', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let a: VmmUnderTest;
  let b: VmmUnderTest;
  /** A source that fails its first migration before its stop (failpoint). */
  let failing: VmmUnderTest;
  /** A source whose first lease re-take after a failure gets no answer (failpoint). */
  let unanswered: VmmUnderTest;
  /** A target that fails right after it took the lease (and hands it back). */
  let handingBack: VmmUnderTest;
  const mappings: { close(): void }[] = [];

  const startVmm = (id: string, failpoint?: string) =>
    startVmmProcess(
      [
        '--id',
        id,
        '--memstore',
        memstore.process.address,
        '--max-vm-memory',
        '64M',
        '--switchover-dir',
        dirs.volatileDir,
      ],
      failpoint !== undefined ? { env: { HANDOFF_VMM_FAILPOINT: failpoint } } : {},
    );

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    [a, b, failing, unanswered, handingBack] = await Promise.all([
      startVmm('vmm-a'),
      startVmm('vmm-b'),
      startVmm('vmm-f', 'outgoing-before-stop'),
      startVmm('vmm-u', 'source-retake-unknown'),
      startVmm('vmm-h', 'incoming-after-lease'),
    ]);
  });

  afterAll(async () => {
    for (const m of mappings) m.close();
    await Promise.all([a, b, failing, unanswered, handingBack].map((v) => v?.stop()));
    await memstore?.stop();
    dirs?.cleanup();
  });

  async function startAb(on: VmmUnderTest, name: string, region = ''): Promise<void> {
    await vmmCall(on.client, 'createVm', {
      spec: vmSpec(name, 'ab', { backend: pb.RamBackend.RAM_BACKEND_SHARED, region, args: abArgs }),
      start: true,
    });
    const console = openConsole(on.client, name);
    await console.waitFor('BB');
    console.close();
  }

  const region = async (name: string) =>
    (await unaryCall(memstore.client, 'getRegion', { region: regionNamed(name) })).region!;

  const abRange = async (name: string) => {
    const mapping = mapFile((await region(`${name}-ram0`)).path, { sharing: 'shared' });
    mappings.push(mapping);
    return () => new Uint8Array(mapping.buffer, AB_BASE, AB_PAGES * 4096).slice();
  };

  const stateOn = async (on: VmmUnderTest, name: string) =>
    pb.VmState[(await vmmCall(on.client, 'getVm', { name })).vm!.state];

  const cancelIncoming = async (on: VmmUnderTest, name: string, jobId: string) =>
    pb.IncomingOutcome[(await vmmCall(on.client, 'cancelIncoming', { name, jobId })).outcome];

  it('a migration that failed before its stop frees the name on the target at once: the retry migrates', async () => {
    const name = 'ab-retry';
    await startAb(failing, name);
    const err = await refused(
      migrateVm(failing, b, name, {
        capabilities: { 'bypass-shared-memory': true },
        via: 'slot',
        jobId: 'job-retry-1',
      }),
    );
    expect(err.message).toMatch(/the VM kept running, unchanged/);
    expect(await stateOn(failing, name)).toBe('VM_STATE_RUNNING');
    // The source gave the slot up, so the target dropped the arrival by itself: the retry gets
    // the name at once (no 60 s wait for the token to expire), and nobody had to cancel.
    const info = await migrateVm(failing, b, name, {
      capabilities: { 'bypass-shared-memory': true },
      via: 'slot',
      jobId: 'job-retry-2',
    });
    expect(info.status).toBe('completed');
    expect(await stateOn(b, name)).toBe('VM_STATE_RUNNING');
    await expectRetired(failing, name);
    expect(await cancelIncoming(b, name, 'job-retry-1')).toBe('INCOMING_OUTCOME_DROPPED');
    // the job that arrived says so, and a cancel cannot undo it
    expect(await cancelIncoming(b, name, 'job-retry-2')).toBe('INCOMING_OUTCOME_ARRIVED');
    expect(await stateOn(b, name)).toBe('VM_STATE_RUNNING');
    await vmmCall(b.client, 'destroyVm', { name });
  });

  it('CancelIncoming gives up a prepared arrival: machine, slot and name gone at once', async () => {
    const name = 'ab-cancelled';
    await startAb(a, name);
    const spec = (await vmmCall(a.client, 'getVm', { name })).vm!.spec;
    const prep = await vmmCall(b.client, 'prepareIncoming', {
      name,
      jobId: 'job-cancel',
      sourceVmm: 'vmm-a',
      spec,
      capabilities: [],
    });
    expect(prep.token).not.toBe('');
    const taken = await refused(
      vmmCall(b.client, 'createVm', { spec: vmSpec(name, 'hello'), start: false }),
    );
    expect(taken.code).toBe('VMM_VM_EXISTS');
    expect(taken.message).toMatch(/arriving on vmm-b by migration job job-cancel/);
    expect(await cancelIncoming(b, name, 'job-cancel')).toBe('INCOMING_OUTCOME_DROPPED');
    expect(await cancelIncoming(b, name, 'job-cancel')).toBe('INCOMING_OUTCOME_DROPPED');
    expect(await cancelIncoming(b, name, 'no-such-job')).toBe('INCOMING_OUTCOME_NONE');
    // the name is free: a VM of that name can be created there now
    await vmmCall(b.client, 'createVm', { spec: vmSpec(name, 'hello'), start: false });
    await vmmCall(b.client, 'destroyVm', { name });
    // the lease never moved and the source still runs the VM
    expect((await region(`${name}-ram0`)).lease!.holder).toBe(`vmm-a/${name}`);
    expect(await stateOn(a, name)).toBe('VM_STATE_RUNNING');
    await vmmCall(a.client, 'destroyVm', { name });
  });

  it('a source left paused with MIGRATION_UNCERTAIN resumes by itself once memstore confirms its lease', async () => {
    const name = 'ab-uncertain';
    await startAb(unanswered, name);
    const range = await abRange(name);
    const err = await refused(
      migrateVm(unanswered, handingBack, name, {
        capabilities: { 'bypass-shared-memory': true },
        via: 'slot',
      }),
    );
    expect(err.code).toBe('MIGRATION_UNCERTAIN');
    expect(err.message).toMatch(/resumes by itself once memstore confirms/);
    // The target handed the lease back; the re-check re-takes it and the guest runs again.
    for (let i = 0; (await stateOn(unanswered, name)) !== 'VM_STATE_RUNNING'; i++) {
      if (i > 200) throw new Error(`VM ${name} did not resume by itself`);
      await new Promise((r) => setTimeout(r, 25));
    }
    expect((await region(`${name}-ram0`)).lease!.holder).toBe(`vmm-u/${name}`);
    const info = (await vmmCall(unanswered.client, 'getMigration', { name })).info!;
    expect(info.errorDesc).toMatch(/resumed here by itself/);
    await vmmCall(unanswered.client, 'pauseVm', { name });
    const r = checkAbConsistency(range());
    expect(r.consistent, r.description).toBe(true);
    await vmmCall(unanswered.client, 'destroyVm', { name });
  });

  for (const via of ['slot', 'data'] as const) {
    it(`a region created for a VM goes with it: destroyed on the target, the VM deletes it (${via})`, async () => {
      const name = `ab-owned-${via}`;
      await startAb(a, name);
      const { id } = await region(`${name}-ram0`);
      const opts = { capabilities: { 'bypass-shared-memory': true }, via };
      expect((await migrateVm(a, b, name, opts)).status).toBe('completed');
      await expectRetired(a, name);
      // there and back: the ownership travels each time
      expect((await migrateVm(b, a, name, opts)).status).toBe('completed');
      await expectRetired(b, name);
      expect((await migrateVm(a, b, name, opts)).status).toBe('completed');
      await expectRetired(a, name);
      const vm = (await vmmCall(b.client, 'getVm', { name })).vm!;
      expect(vm.spec!.ram[0]).toMatchObject({ region: `${name}-ram0`, regionOwned: true });
      expect((await region(`${name}-ram0`)).id).toBe(id);
      await vmmCall(b.client, 'destroyVm', { name });
      const gone = await refused(
        unaryCall(memstore.client, 'getRegion', { region: regionNamed(`${name}-ram0`) }),
      );
      expect(gone.code).toBe('REGION_NOT_FOUND');
    });
  }

  it('a region the user made is kept when the migrated VM is destroyed', async () => {
    const name = 'ab-user-region';
    await unaryCall(memstore.client, 'createRegion', {
      name: 'user-made',
      size: BigInt(16 * 1024 * 1024),
      kind: 1,
    });
    await startAb(a, name, 'user-made');
    const opts = { capabilities: { 'bypass-shared-memory': true }, via: 'slot' as const };
    expect((await migrateVm(a, b, name, opts)).status).toBe('completed');
    await expectRetired(a, name);
    const vm = (await vmmCall(b.client, 'getVm', { name })).vm!;
    expect(vm.spec!.ram[0]!.regionOwned ?? false).toBe(false);
    await vmmCall(b.client, 'destroyVm', { name });
    const kept = await region('user-made');
    expect(kept.lease).toBeUndefined();
    await unaryCall(memstore.client, 'deleteRegion', { region: regionNamed('user-made') });
  });

  it('CreateVm refuses a spec that claims to own its region', async () => {
    const spec = vmSpec('claims', 'hello', { backend: pb.RamBackend.RAM_BACKEND_SHARED });
    spec.ram[0]!.regionOwned = true;
    const err = await refused(vmmCall(a.client, 'createVm', { spec, start: false }));
    expect(err).toBeInstanceOf(RemoteError);
    expect(err.code).toBe('VMM_INVALID_SPEC');
    expect(err.message).toMatch(/region_owned is set by the vmm/);
  });
});
