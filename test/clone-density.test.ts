import { vmm as pb } from '@handoff/proto';
import { readSmapsRollup } from '@handoff/shm';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
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
 * Many idle clones of one kvserver template in one vmm: 100 clones of a 256 MiB template start,
 * each answers PUT and GET on its own (a key one clone wrote is in no other clone), and the
 * vmm's memory grows by far less than the per-page tables of 256 MiB would cost per clone.
 */

const MiB = 1024 * 1024;
const CLONES = 100;
const kvserverElf = join(repoRoot, 'guests/kvserver/kvserver.elf');

describe.skipIf(!existsSync(kvserverElf))('idle clones of a kvserver template', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let vmm: VmmUnderTest;

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    vmm = await startVmmProcess([
      '--id',
      'vmm-d',
      '--memstore',
      memstore.process.address,
      '--max-vm-memory',
      '256M',
    ]);
  });

  afterAll(async () => {
    await vmm?.stop();
    await memstore?.stop();
    dirs?.cleanup();
  });

  /** Sends `commands` to `name`'s console and returns one answer line per command. */
  const kv = async (name: string, commands: string[]): Promise<string[]> => {
    // Framed by unique values: the console replays its backlog first.
    const open = `o${Math.random().toString(16).slice(2, 10)}`;
    const close = `c${Math.random().toString(16).slice(2, 10)}`;
    const console = openConsole(vmm.client, name);
    try {
      console.send(
        [`PUT sync ${open}`, 'GET sync', ...commands, `PUT sync ${close}`, 'GET sync', ''].join(
          '\n',
        ),
      );
      await console.waitFor(`VALUE ${close}\n`, 30_000);
      const out = console.output();
      const from = out.indexOf(`VALUE ${open}\n`) + `VALUE ${open}\n`.length;
      return out
        .slice(from, out.indexOf(`OK\nVALUE ${close}\n`, from))
        .split('\n')
        .slice(0, -1);
    } finally {
      console.close();
    }
  };

  it(`${CLONES} clones of a 256 MiB template answer on their own; each costs the vmm little`, async () => {
    await vmmCall(vmm.client, 'createVm', {
      spec: vmSpec('kv', 'kvserver', {
        memory: 256 * MiB,
        backend: pb.RamBackend.RAM_BACKEND_SHARED,
        args: { 'kv.slots_log2': '10', 'kv.work': '2' },
      }),
      start: true,
    });
    const console = openConsole(vmm.client, 'kv');
    await console.waitFor('kvserver: ready\n', 60_000);
    console.close();
    expect(await kv('kv', ['PUT shared yes'])).toEqual(['OK']);
    await vmmCall(vmm.client, 'saveVm', {
      name: 'kv',
      snapshot: 'kv-tpl',
      full: false,
      stop: true,
      template: true,
      jobId: '',
    });

    const before = readSmapsRollup(vmm.process.pid).pss;
    const cloned = await vmmCall(vmm.client, 'cloneVms', {
      snapshot: 'kv-tpl',
      count: CLONES,
      namePrefix: 'c',
      firstIndex: 0,
      paused: false,
      jobId: '',
    });
    const names = cloned.vms.map((v) => v.name);
    expect(names).toHaveLength(CLONES);
    expect(cloned.vms.every((v) => v.state === pb.VmState.VM_STATE_RUNNING)).toBe(true);
    await new Promise((r) => setTimeout(r, 1000)); // the clones reach WFI
    const grown = readSmapsRollup(vmm.process.pid).pss - before;
    // Per-page tables of 256 MiB alone were ≈1 MiB a clone; idle clones now cost tens of KiB.
    expect(grown / CLONES).toBeLessThan(512 * 1024);

    for (const [k, name] of names.entries()) {
      expect(await kv(name, [`PUT mine ${k}`, 'GET mine', 'GET shared'])).toEqual([
        'OK',
        `VALUE ${k}`,
        'VALUE yes',
      ]);
    }
    // Every clone still holds its own value: no write reached another clone.
    for (const [k, name] of names.entries()) {
      expect(await kv(name, ['GET mine'])).toEqual([`VALUE ${k}`]);
    }
    expect(await vmmCall(vmm.client, 'listVms', {})).toMatchObject({
      vms: expect.arrayContaining(names.map((name) => expect.objectContaining({ name }))),
    });
  }, 600_000);
});
