import { memstore as msPb, vmm as pb } from '@handoff/proto';
import { createClient, unaryCall } from '@handoff/service';
import { testCredentials } from '@handoff/service/testing';
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  memstoreDirs,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { repoRoot } from './helpers/services.js';
import { openConsole, startVmmProcess, vmSpec, vmmCall, type VmmUnderTest } from './helpers/vmm.js';

/**
 * kill -9 of a vmm in the middle of a CloneVms burst of 100 clones of a template: the template
 * and its snapshot are intact, memstore fences the dead vmm's lease and forgets its clone
 * attachments (the template's pins drop to the clones that run elsewhere; a snapshot it ran a VM
 * from can be deleted), no
 * region file of its is left in the volatile directory, and a vmm restarted with its id starts
 * empty and clones the template again, whose clones answer with the template's keys.
 */

const { RamBackend } = pb;
const MiB = 1024 * 1024;
const kvserverElf = join(repoRoot, 'guests/kvserver/kvserver.elf');
const BURST = 100;

async function eventually(check: () => Promise<boolean>, what: string): Promise<void> {
  for (const end = Date.now() + 15_000; !(await check());) {
    if (Date.now() > end) throw new Error(`${what} did not happen within 15 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.skipIf(!existsSync(kvserverElf))('kill -9 of a vmm during a clone burst', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let operator: msPb.MemstoreServiceClient;
  let survivor: VmmUnderTest;
  let victim: VmmUnderTest | undefined;

  const startVictim = () =>
    startVmmProcess([
      '--id',
      'vmm-a',
      '--memstore',
      memstore.process.address,
      '--max-vm-memory',
      '64M',
    ]);

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    operator = createClient(
      msPb.MemstoreServiceClient,
      memstore.process.address,
      await testCredentials({ id: 'operator', role: 'operator' }, { serverRole: 'memstore' }),
    );
    survivor = await startVmmProcess([
      '--id',
      'vmm-b',
      '--memstore',
      memstore.process.address,
      '--max-vm-memory',
      '64M',
    ]);
    victim = await startVictim();
  });

  afterAll(async () => {
    operator?.close();
    await victim?.stop();
    await survivor?.stop();
    await memstore?.stop();
    dirs?.cleanup();
  });

  const snapshot = async (name: string) =>
    (
      await unaryCall(memstore.client, 'getSnapshot', {
        snapshot: { selector: { $case: 'name', value: name } },
        withDeviceState: false,
      })
    ).snapshot!;
  const regions = async () =>
    (
      await unaryCall(memstore.client, 'listRegions', {
        kind: msPb.RegionKind.REGION_KIND_UNSPECIFIED,
      })
    ).regions;

  /** kvserver commands on a fresh console of `vmm`; the answer lines, in order. */
  const kv = async (vmm: VmmUnderTest, name: string, commands: string[]): Promise<string[]> => {
    const open = `o${Math.random().toString(16).slice(2, 10)}`;
    const close = `c${Math.random().toString(16).slice(2, 10)}`;
    const console = openConsole(vmm.client, name);
    try {
      console.send(
        [`PUT sync ${open}`, 'GET sync', ...commands, `PUT sync ${close}`, 'GET sync', ''].join(
          '\n',
        ),
      );
      await console.waitFor(`VALUE ${close}\n`, 20_000);
      const lines = console.output().split('\n');
      const from = lines.lastIndexOf(`VALUE ${open}`) + 1;
      return lines.slice(from, lines.lastIndexOf(`VALUE ${close}`) - 1);
    } finally {
      console.close();
    }
  };
  /** A kvserver VM on `vmm` holding `keys`, saved with stop as snapshot `name`. */
  const savedKvserver = async (vmm: VmmUnderTest, vm: string, name: string, keys: string[]) => {
    await vmmCall(vmm.client, 'createVm', {
      spec: vmSpec(vm, 'kvserver', {
        memory: 16 * MiB,
        backend: RamBackend.RAM_BACKEND_SHARED,
        args: { 'kv.slots_log2': '8', 'kv.work': '1' },
      }),
      start: true,
    });
    const ready = openConsole(vmm.client, vm);
    await ready.waitFor('kvserver: ready\n', 30_000);
    ready.close();
    expect(
      await kv(
        vmm,
        vm,
        keys.map((k) => `PUT ${k} ${k}-value`),
      ),
    ).toEqual(keys.map(() => 'OK'));
    const saved = await vmmCall(vmm.client, 'saveVm', {
      name: vm,
      snapshot: name,
      full: false,
      stop: true,
      template: true,
      jobId: '',
    });
    return saved.snapshot!;
  };

  it('leaves the template intact, forgets the dead vmm, and the restarted vmm clones it again', async () => {
    const template = await savedKvserver(survivor, 'tplvm', 'tpl', ['alpha', 'beta']);
    const other = await savedKvserver(survivor, 'othervm', 'other', ['gamma']);
    const templateFile = (await regions()).find((r) => r.id === template.blocks[0]!.regionId)!;
    const otherFile = (await regions()).find((r) => r.id === other.blocks[0]!.regionId)!;
    // Two clones run on the vmm that survives; the victim runs one VM from the other snapshot.
    await vmmCall(survivor.client, 'cloneVms', {
      snapshot: 'tpl',
      count: 2,
      namePrefix: 'keep',
      firstIndex: 0,
      paused: false,
      jobId: '',
    });
    await vmmCall(victim!.client, 'restoreVm', {
      snapshot: 'other',
      name: 'o1',
      paused: false,
      jobId: '',
    });
    expect((await snapshot('other')).clones).toEqual(['vmm-a/o1']);
    // ... and one on shared RAM, whose lease it holds.
    await vmmCall(victim!.client, 'createVm', {
      spec: vmSpec('sh1', 'ab', {
        backend: RamBackend.RAM_BACKEND_SHARED,
        args: { 'ab.start': '0x80100000', 'ab.pages': '32' },
      }),
      start: true,
    });
    const leased = (await regions()).find((r) => r.name === 'sh1-ram0')!;
    expect(leased.lease?.holder).toBe('vmm-a/sh1');
    const filesBefore = readdirSync(dirs.volatileDir).sort();

    // The burst, killed once some of its clones are attached and before it answered.
    let answered = false;
    const burst = vmmCall(victim!.client, 'cloneVms', {
      snapshot: 'tpl',
      count: BURST,
      namePrefix: 'burst',
      firstIndex: 0,
      paused: false,
      jobId: '',
    }).then(
      () => (answered = true),
      () => false,
    );
    const ofVictim = (clones: string[]) => clones.filter((c) => c.startsWith('vmm-a/burst-'));
    await eventually(
      async () => ofVictim((await snapshot('tpl')).clones).length >= 10,
      'ten clones of the burst attached',
    );
    const pid = victim!.process.pid;
    victim!.client.close();
    await victim!.process.kill9();
    victim = undefined;
    await burst;
    expect(answered).toBe(false);
    expect(existsSync(`/proc/${pid}`)).toBe(false); // reaped: none of its mappings is left

    // memstore forgets the dead vmm's clones: the template is pinned by what runs elsewhere.
    const running = ['vmm-b/keep-1', 'vmm-b/keep-2'];
    await eventually(
      async () => [...(await snapshot('tpl')).clones].sort().join() === running.join(),
      `the template's clones dropping to ${running.join(', ')}`,
    );
    expect(memstore.process.output()).toMatch(/clone\(s\) detached/);
    // The snapshot the dead vmm ran a VM from is unused now: it can be deleted.
    await unaryCall(operator, 'deleteSnapshot', {
      snapshot: { selector: { $case: 'name', value: 'other' } },
    });
    expect((await regions()).some((r) => r.id === other.blocks[0]!.regionId)).toBe(false);
    // The template and its file are intact; no lease or region of the dead vmm is left, and the
    // volatile directory holds region files only (the other snapshot's went with it).
    const tpl = await snapshot('tpl');
    expect(tpl.id).toBe(template.id);
    expect(tpl.blocks[0]!.identity).toBe(template.blocks[0]!.identity);
    const left = await regions();
    expect(left.filter((r) => r.lease?.holder.startsWith('vmm-a/') === true)).toEqual([]);
    // Its shared region is fenced and kept for a restore, as any dead vmm's.
    expect(left.find((r) => r.id === leased.id)!.fenced).toMatchObject({
      holder: 'vmm-a/sh1',
      reason: msPb.FenceReason.FENCE_REASON_HOLDER_GONE,
    });
    expect(left.filter((r) => r.mappedBy.some((h) => h.startsWith('vmm-a/')))).toEqual([]);
    // memstore's own files (its lease socket, its lease-arm slots) are there before and after.
    const filesAfter = readdirSync(dirs.volatileDir).sort();
    expect(filesAfter.filter((f) => !filesBefore.includes(f))).toEqual([]); // the burst made none
    expect(filesAfter.filter((f) => /burst|^o1/.test(f))).toEqual([]);
    expect(filesAfter).not.toContain(basename(otherFile.path)); // deleted with its snapshot
    expect(filesAfter).toContain(basename(templateFile.path));

    // The vmm restarted with the same id sweeps what its predecessor left (its data-channel
    // socket), starts empty and clones the template again.
    const socket = join(tmpdir(), `handoff-vmm-${process.getuid!()}`, `handoff-vmm-a-${pid}.sock`);
    expect(existsSync(socket)).toBe(true);
    victim = await startVictim();
    expect(existsSync(socket)).toBe(false);
    expect((await vmmCall(victim.client, 'listVms', {})).vms).toEqual([]);
    const again = await vmmCall(victim.client, 'cloneVms', {
      snapshot: 'tpl',
      count: 3,
      namePrefix: 'again',
      firstIndex: 0,
      paused: false,
      jobId: '',
    });
    expect(again.vms.map((v) => v.name)).toEqual(['again-1', 'again-2', 'again-3']);
    for (const v of again.vms) {
      expect(await kv(victim, v.name, ['GET alpha', 'GET beta', 'GET gamma'])).toEqual([
        'VALUE alpha-value',
        'VALUE beta-value',
        'NOT_FOUND',
      ]);
    }
    expect([...(await snapshot('tpl')).clones].sort()).toEqual([
      'vmm-a/again-1',
      'vmm-a/again-2',
      'vmm-a/again-3',
      ...running,
    ]);
  });
});
