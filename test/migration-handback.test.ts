import { readdirSync } from 'node:fs';
import { mapFile } from '@handoff/shm';
import { checkAbConsistency, slotPrefixOf } from '@handoff/vmm';
import { vmm as pb } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AB_BASE, AB_PAGES, abArgs, migrateVm, refused } from './helpers/migration.js';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { openConsole, startVmmProcess, vmmCall, vmSpec, type VmmUnderTest } from './helpers/vmm.js';

/**
 * A bypass target takes the shared region's lease at the switchover (here through the slot: its vCPU
 * thread flips the transfer memstore armed). These targets fail right after that (vmm failpoint
 * `incoming-after-lease`): one by an error, which hands the lease back so the source resumes
 * unchanged; one by kill -9, after which memstore fences the dead holder's lease (nobody holds
 * it), so the source stays paused and fenced and says so. A third dies just before the flip (`switchover-before-lease`):
 * the source's re-take cancels the arm and it resumes unchanged.
 */
describe('a bypass target that fails around taking the lease', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let source: VmmUnderTest;
  let failing: VmmUnderTest;
  /** Per way in (each dies at its first migration): killed after the flip, and before it. */
  const dying: Record<string, VmmUnderTest> = {};
  const dyingBeforeFlip: Record<string, VmmUnderTest> = {};
  const mappings: { close(): void }[] = [];

  const startVmm = (id: string, failpoint?: string) =>
    startVmmProcess(
      // Hand-off slots in the test's folder: a killed target leaves its slot behind.
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
    [source, failing, dying.data, dying.slot, dyingBeforeFlip.data, dyingBeforeFlip.slot] =
      await Promise.all([
        startVmm('vmm-a'),
        startVmm('vmm-f', 'incoming-after-lease'),
        startVmm('vmm-k-data', 'incoming-after-lease:kill'),
        startVmm('vmm-k-slot', 'incoming-after-lease:kill'),
        startVmm('vmm-j-data', 'switchover-before-lease:kill'),
        startVmm('vmm-j-slot', 'switchover-before-lease:kill'),
      ]);
  });

  afterAll(async () => {
    for (const m of mappings) m.close();
    await Promise.all([
      source?.stop(),
      failing?.stop(),
      ...Object.values(dying).map((v) => v.process.kill9()),
      ...Object.values(dyingBeforeFlip).map((v) => v.process.kill9()),
    ]);
    await memstore?.stop();
    dirs?.cleanup();
  });

  async function startAb(name: string): Promise<() => Uint8Array> {
    await vmmCall(source.client, 'createVm', {
      spec: vmSpec(name, 'ab', { backend: pb.RamBackend.RAM_BACKEND_SHARED, args: abArgs }),
      start: true,
    });
    const console = openConsole(source.client, name);
    await console.waitFor('BB');
    console.close();
    const { region } = await unaryCall(memstore.client, 'getRegion', {
      region: regionNamed(`${name}-ram0`),
    });
    const mapping = mapFile(region!.path, { sharing: 'shared' });
    mappings.push(mapping);
    return () => new Uint8Array(mapping.buffer, AB_BASE, AB_PAGES * 4096).slice();
  }

  /**
   * The source runs `name` again, not fenced (a pause and a resume pass memstore's lease
   * check), and ab's memory is consistent.
   */
  async function expectRunsUnfenced(name: string, range: () => Uint8Array): Promise<void> {
    const vm = (await vmmCall(source.client, 'getVm', { name })).vm!;
    expect(vm.state).toBe(pb.VmState.VM_STATE_RUNNING);
    await vmmCall(source.client, 'pauseVm', { name });
    const r = checkAbConsistency(range());
    expect(r.consistent, r.description).toBe(true);
    await vmmCall(source.client, 'resumeVm', { name });
  }

  const lease = async (name: string) =>
    (await unaryCall(memstore.client, 'getRegion', { region: regionNamed(`${name}-ram0`) })).region!
      .lease!;

  // `data`: the source opens the stream and gets the slot in the header's answer; `slot`: it has
  // the slot from PrepareIncoming and opens no stream (a dead target breaks no stream then).
  for (const via of ['data', 'slot'] as const) {
    it(`gets the lease handed back when the target fails: the source resumes unchanged (${via})`, async () => {
      const name = `ab-handback-${via}`;
      const range = await startAb(name);
      const before = await lease(name);
      const err = await refused(migrateVm(source, failing, name, { via }));
      expect(err.code).toBe('MIGRATION_TARGET_FAILED');
      expect(err.message).toMatch(/resumed here, unchanged/);
      // Taken (+1), handed back (+1), re-taken by the source's compare-and-set (+1).
      const after = await lease(name);
      expect(after.holder).toBe(`vmm-a/${name}`);
      expect(after.epoch).toBe(before.epoch + 3n);
      await expectRunsUnfenced(name, range);
      expect((await vmmCall(failing.client, 'listVms', {})).vms).toHaveLength(0);
      await vmmCall(source.client, 'destroyVm', { name });
    });

    it(`stays paused and fenced when the target died holding the lease (${via})`, async () => {
      const name = `ab-dead-target-${via}`;
      const range = await startAb(name);
      const err = await refused(migrateVm(source, dying[via]!, name, { via }));
      expect(err.code).toBe('MIGRATION_UNCERTAIN');
      // The target took the lease and died: memstore fenced it (nobody holds it, epoch + 1).
      const region = (
        await unaryCall(memstore.client, 'getRegion', { region: regionNamed(`${name}-ram0`) })
      ).region!;
      expect(region.lease).toBeUndefined();
      expect(region.fenced?.holder).toBe(`vmm-k-${via}/${name}`);
      const vm = (await vmmCall(source.client, 'getVm', { name })).vm!;
      expect(vm.state).toBe(pb.VmState.VM_STATE_PAUSED);
      expect((await refused(vmmCall(source.client, 'resumeVm', { name }))).code).toBe(
        'VMM_LEASE_LOST',
      );
      const r = checkAbConsistency(range()); // nothing ran since the pause
      expect(r.consistent, r.description).toBe(true);
      await vmmCall(source.client, 'destroyVm', { name });
    });
    it(`resumes unchanged when a switchover target dies before it flipped the armed lease (${via})`, async () => {
      // The source's vCPU stopped and published its state; the target's thread restored it and
      // died just before the compare-and-set. The source re-takes its own lease through memstore,
      // which cancels the arm first: the target can never win it afterwards.
      const name = `ab-dead-before-flip-${via}`;
      const range = await startAb(name);
      const before = await lease(name);
      const err = await refused(
        migrateVm(source, dyingBeforeFlip[via]!, name, { jobId: `before-flip-${via}`, via }),
      );
      expect(err.code).toBe('MIGRATION_TARGET_FAILED');
      expect(err.message).toMatch(/resumed here, unchanged/);
      // The switchover was offered (a killed target leaves its slot behind; its log lines
      // may die with it).
      expect(
        readdirSync(dirs.volatileDir).some((f) => f.startsWith(slotPrefixOf(`vmm-j-${via}`))),
      ).toBe(true);
      const after = await lease(name);
      expect(after.holder).toBe(`vmm-a/${name}`);
      expect(after.epoch).toBe(before.epoch + 1n); // only the source's own re-take
      await expectRunsUnfenced(name, range);
      await vmmCall(source.client, 'destroyVm', { name });
      // The same instance started again removes what its killed predecessor left.
      const again = await startVmm(`vmm-j-${via}`);
      try {
        expect(
          readdirSync(dirs.volatileDir).filter((f) => f.startsWith(slotPrefixOf(`vmm-j-${via}`))),
        ).toEqual([]);
      } finally {
        await again.stop();
      }
    });
  }
});
