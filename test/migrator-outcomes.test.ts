import { readdirSync } from 'node:fs';
import { migrator as mgpb, vmm as pb } from '@handoff/proto';
import { resolveCapabilities } from '@handoff/qapi';
import { capabilitiesToWire, migrationInfoFromWire } from '@handoff/qapi/wire';
import { RemoteError, unaryCall } from '@handoff/service';
import { mapFile } from '@handoff/shm';
import { checkAbConsistency, slotPrefixOf } from '@handoff/vmm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { regionNamed } from './helpers/memstore.js';
import { AB_BASE, AB_PAGES, abArgs } from './helpers/migration.js';
import { startMigratorCluster, type MigratorCluster } from './helpers/migrator-cluster.js';
import { openConsole, vmmCall, vmSpec, type VmmUnderTest } from './helpers/vmm.js';

/**
 * Honest job outcomes through the migrator, with real vmm instances and memstore. Sources
 * misbehave at named points (vmm failpoints): one fails before its stop, one dies right after
 * the hand-off (its MigrateVm stream to the migrator drops with it), one dies before its stop
 * (the VM dies with it). Each job says what really happened, and the target keeps nothing of a
 * migration that did not arrive.
 */
describe('what a migrate job reports when its migration ends badly', () => {
  let c: MigratorCluster;
  let b: VmmUnderTest;

  beforeAll(async () => {
    c = await startMigratorCluster({
      vmms: ['vmm-b', 'vmm-f', 'vmm-d', 'vmm-l'],
      migratorArgs: ['--poll-interval-ms', '20'],
      vmmArgs: ['--max-vm-memory', '64M'],
      vmmEnv: {
        'vmm-f': { HANDOFF_VMM_FAILPOINT: 'outgoing-before-stop' },
        'vmm-d': { HANDOFF_VMM_FAILPOINT: 'migrate-vm-before-final:kill' },
        'vmm-l': { HANDOFF_VMM_FAILPOINT: 'outgoing-before-stop:kill' },
      },
    });
    b = c.vmms.get('vmm-b')!;
  });

  afterAll(async () => {
    await c?.stop();
  });

  async function startAb(on: VmmUnderTest, name: string): Promise<void> {
    await vmmCall(on.client, 'createVm', {
      spec: vmSpec(name, 'ab', { backend: pb.RamBackend.RAM_BACKEND_SHARED, args: abArgs }),
      start: true,
    });
    const console = openConsole(on.client, name);
    await console.waitFor('BB');
    console.close();
  }

  /** Migrates through the migrator (bypass) and waits for the job's end. */
  async function migrate(vm: string, targetVmm: string) {
    const { job } = await unaryCall(c.client, 'migrate', {
      vm,
      targetVmm,
      capabilities: capabilitiesToWire(resolveCapabilities({ 'bypass-shared-memory': true })),
      parameters: undefined,
    });
    for (let i = 0; ; i++) {
      const j = (await unaryCall(c.client, 'getJob', { id: job!.id })).job!;
      const info = migrationInfoFromWire(j.info!);
      if (['completed', 'failed', 'cancelled'].includes(info.status)) {
        const o = j.outcome;
        return {
          id: j.id,
          status: info.status,
          info,
          where: o !== undefined ? mgpb.VmWhereabouts[o.where] : undefined,
          vmm: o?.vmm,
          detail: o?.detail,
        };
      }
      if (i > 800) throw new Error(`job ${j.id} did not end: ${JSON.stringify(info)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  const region = async (name: string) =>
    (await unaryCall(c.memstore.client, 'getRegion', { region: regionNamed(name) })).region!;

  const vmsOn = async (on: VmmUnderTest) =>
    (await vmmCall(on.client, 'listVms', {})).vms.map((v) => `${v.name}:${pb.VmState[v.state]}`);

  /** Slot files vmm-b left for VM `name` (a dropped arrival deletes its own). */
  const slotsOf = (name: string) =>
    readdirSync('/dev/shm').filter((f) => f.startsWith(`${slotPrefixOf('vmm-b')}${name}-`));

  it('a migration that failed before the stop: failed, the VM on the source, and an immediate retry moves it', async () => {
    const name = 'out-retry';
    const f = c.vmms.get('vmm-f')!;
    await startAb(f, name);
    const first = await migrate(name, 'vmm-b');
    expect(first.status).toBe('failed');
    expect(first.info.errorDesc).toMatch(/the VM kept running, unchanged/);
    expect([first.where, first.vmm, first.detail]).toEqual([
      'VM_WHEREABOUTS_SOURCE',
      'vmm-f',
      `VM ${name} runs on vmm-f`,
    ]);
    expect(await vmsOn(b)).toEqual([]);
    // no "already exists (or is arriving)" for a minute: the retry goes through at once
    const retry = await migrate(name, 'vmm-b');
    expect(retry.status, retry.info.errorDesc).toBe('completed');
    expect(retry.where).toBe('VM_WHEREABOUTS_TARGET');
    expect(await vmsOn(b)).toEqual([`${name}:VM_STATE_RUNNING`]);
    await vmmCall(b.client, 'destroyVm', { name });
  });

  it('a source that dies right after the hand-off (its stream drops): completed, and its region follows the VM', async () => {
    const name = 'out-dropped';
    await startAb(c.vmms.get('vmm-d')!, name);
    const done = await migrate(name, 'vmm-b');
    expect(done.status, done.info.errorDesc).toBe('completed');
    expect(done.info.errorDesc).toBeUndefined();
    expect([done.where, done.vmm, done.detail]).toEqual([
      'VM_WHEREABOUTS_TARGET',
      'vmm-b',
      `VM ${name} runs on vmm-b with the lease of region ${name}-ram0; vmm-d did not answer ` +
        '(its process is gone)',
    ]);
    const r = await region(`${name}-ram0`);
    expect(r.lease!.holder).toBe(`vmm-b/${name}`);
    expect(await vmsOn(b)).toEqual([`${name}:VM_STATE_RUNNING`]);
    await vmmCall(b.client, 'pauseVm', { name });
    const m = mapFile(r.path, { sharing: 'shared' });
    try {
      const check = checkAbConsistency(new Uint8Array(m.buffer, AB_BASE, AB_PAGES * 4096));
      expect(check.consistent, check.description).toBe(true);
    } finally {
      m.close();
    }
    // the region the VM was created with is the VM's on vmm-b: destroying it there removes it
    await vmmCall(b.client, 'destroyVm', { name });
    const gone = await unaryCall(c.memstore.client, 'getRegion', {
      region: regionNamed(`${name}-ram0`),
    }).catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(RemoteError);
    expect((gone as RemoteError).code).toBe('REGION_NOT_FOUND');
  });

  it('a source that dies before its stop: the VM is reported lost with it, its region kept, and the target keeps nothing', async () => {
    const name = 'out-lost';
    await startAb(c.vmms.get('vmm-l')!, name);
    const lost = await migrate(name, 'vmm-b');
    expect(lost.status).toBe('failed');
    expect([lost.where, lost.vmm, lost.detail]).toEqual([
      'VM_WHEREABOUTS_LOST',
      'vmm-l',
      `VM ${name} was lost with vmm-l (its process is gone); its memory is in region ` +
        `${name}-ram0 (kept)`,
    ]);
    expect(lost.info.errorDesc).toMatch(new RegExp(`^VM ${name} was lost with vmm-l`));
    // the memory is where the job says: leased to the dead holder, or fenced from it by memstore
    const r = await region(`${name}-ram0`);
    expect(r.lease?.holder ?? r.fenced?.holder).toBe(`vmm-l/${name}`);
    // vmm-b dropped the prepared arrival: no VM, no slot file, and the name is free at once
    expect(await vmsOn(b)).toEqual([]);
    expect(slotsOf(name)).toEqual([]);
    await vmmCall(b.client, 'createVm', { spec: vmSpec(name, 'hello'), start: false });
    await vmmCall(b.client, 'destroyVm', { name });
  });
});
