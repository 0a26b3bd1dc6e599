import { vmm as pb } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import { checkAbConsistency } from '@handoff/vmm';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { fileBytes, readThroughMapping } from './helpers/proc-mem.js';
import { refusal, repoRoot } from './helpers/services.js';
import { openConsole, startVmmProcess, vmSpec, vmmCall, type VmmUnderTest } from './helpers/vmm.js';

/**
 * A bypass save's pause ends at the remap: the guest runs on copy-on-write pages while memstore
 * records the snapshot. memstore is held with SIGSTOP, so its CreateSnapshot is certainly in
 * flight while the test watches the guest run; a refused CreateSnapshot (the name is taken)
 * must leave every write the guest made meanwhile in its region.
 */

const { VmState, RamBackend } = pb;
const MiB = 1024 * 1024;
const kvserverElf = join(repoRoot, 'guests/kvserver/kvserver.elf');
const AB_ARGS = { 'ab.start': '0x80100000', 'ab.pages': '32' };
const AB_BASE = 0x100000;
const AB_BYTES = 32 * 4096;

/** The permissions of process `pid`'s mappings of `path` (`rw-s`, `r--p`, ...). */
function mappingModes(pid: number, path: string): string[] {
  return readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter((line) => line.endsWith(` ${path}`))
    .map((line) => line.split(/\s+/)[1]!);
}

/** The first offset at which `a` and `b` differ, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let k = 0; k < n; k++) if (a[k] !== b[k]) return k;
  return a.length === b.length ? -1 : n;
}

async function eventually(check: () => Promise<boolean> | boolean, what: string): Promise<void> {
  for (const end = Date.now() + 10_000; !(await check());) {
    if (Date.now() > end) throw new Error(`${what} did not happen within 10 s`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('a bypass save pauses the guest only for the remap', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let vmm: VmmUnderTest;
  let client: pb.VmmServiceClient;
  let held = false;

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    vmm = await startVmmProcess([
      '--id',
      'vmm-p',
      '--memstore',
      memstore.process.address,
      '--max-vm-memory',
      '64M',
    ]);
    client = vmm.client;
  });

  afterAll(async () => {
    if (held) process.kill(memstore.process.pid, 'SIGCONT');
    await vmm?.stop();
    await memstore?.stop();
    dirs?.cleanup();
  });

  /** memstore stops answering (SIGSTOP) until {@link release}. */
  const hold = () => {
    process.kill(memstore.process.pid, 'SIGSTOP');
    held = true;
  };
  const release = () => {
    process.kill(memstore.process.pid, 'SIGCONT');
    held = false;
  };
  const getVm = async (name: string) => (await vmmCall(client, 'getVm', { name })).vm!;
  const save = (name: string, snapshot: string, stop = false) =>
    vmmCall(client, 'saveVm', { name, snapshot, full: false, stop, template: false, jobId: '' });
  const region = async (name: string) =>
    (await unaryCall(memstore.client, 'getRegion', { region: regionNamed(name) })).region!;
  const mappedPrivate = (path: string) =>
    mappingModes(vmm.process.pid, path).every((m) => m.endsWith('p'));

  it('the guest runs while CreateSnapshot is in flight; pause and a second save are refused meanwhile', async () => {
    await vmmCall(client, 'createVm', {
      spec: vmSpec('ab1', 'ab', { backend: RamBackend.RAM_BACKEND_SHARED, args: AB_ARGS }),
      start: true,
    });
    const console = openConsole(client, 'ab1');
    await console.waitFor('BB');
    console.close();
    const path = (await region('ab1-ram0')).path;
    expect(mappingModes(vmm.process.pid, path)).toEqual(['rw-s']);

    hold();
    const saving = save('ab1', 'ab1-snap');
    saving.catch(() => undefined);
    await eventually(() => mappedPrivate(path), 'the remap to a private mapping');
    const at = await getVm('ab1');
    // memstore cannot have answered: the VM is not a clone yet, and its guest runs.
    await eventually(
      async () => (await getVm('ab1')).instret > at.instret + 1_000_000n,
      'the guest running a million instructions',
    );
    const during = await getVm('ab1');
    expect(during.state).toBe(VmState.VM_STATE_RUNNING);
    expect(during.snapshot).toBe('');
    expect(during.spec!.ram[0]!.backend).toBe(RamBackend.RAM_BACKEND_SHARED);
    expect(await refusal(vmmCall(client, 'pauseVm', { name: 'ab1' }))).toMatchObject({
      code: 'VMM_INVALID_STATE',
    });
    expect(await refusal(save('ab1', 'ab1-other'))).toMatchObject({ code: 'VMM_INVALID_STATE' });
    // Its writes are copy-on-write: the file keeps the save point.
    const atSave = fileBytes(path, AB_BASE, AB_BYTES);
    expect(checkAbConsistency(atSave).consistent).toBe(true);
    await eventually(
      () => readThroughMapping(vmm.process.pid, path, AB_BASE, AB_BYTES)[0] !== atSave[0],
      'the guest writing its a-b pages',
    );
    release();

    const saved = await saving;
    expect(saved.vm!.snapshot).toBe('ab1-snap');
    expect(saved.vm!.spec!.ram[0]!.backend).toBe(RamBackend.RAM_BACKEND_CLONE);
    // The pause is the remap's, not CreateSnapshot's (which lasted as long as memstore was held).
    expect(saved.pauseUs).toBeGreaterThan(0n);
    expect(saved.pauseUs).toBeLessThan(saved.durationUs);
    expect(fileBytes(path, AB_BASE, AB_BYTES)).toEqual(atSave);
    // The second save made nothing.
    expect(
      await refusal(
        unaryCall(memstore.client, 'getSnapshot', {
          snapshot: { selector: { $case: 'name', value: 'ab1-other' } },
          withDeviceState: false,
        }),
      ),
    ).toMatchObject({ code: 'SNAPSHOT_NOT_FOUND' });
    await vmmCall(client, 'destroyVm', { name: 'ab1' });
  });

  /** kvserver commands on a fresh console; the answer lines, in order. */
  const kv = async (name: string, commands: string[]): Promise<string[]> => {
    const open = `o${Math.random().toString(16).slice(2, 10)}`;
    const close = `c${Math.random().toString(16).slice(2, 10)}`;
    const console = openConsole(client, name);
    try {
      console.send(
        [`PUT sync ${open}`, 'GET sync', ...commands, `PUT sync ${close}`, 'GET sync', ''].join(
          '\n',
        ),
      );
      await console.waitFor(`VALUE ${close}\n`);
      const lines = console.output().split('\n');
      const from = lines.lastIndexOf(`VALUE ${open}`) + 1;
      return lines.slice(from, lines.lastIndexOf(`VALUE ${close}`) - 1);
    } finally {
      console.close();
    }
  };

  it.skipIf(!existsSync(kvserverElf))(
    'after the save no mapping of the old shared RAM is left: the guest reads its own writes, the file keeps the save point',
    async () => {
      const size = 32 * MiB;
      await vmmCall(client, 'createVm', {
        spec: vmSpec('kv2', 'kvserver', {
          memory: size,
          backend: RamBackend.RAM_BACKEND_SHARED,
          args: { 'kv.slots_log2': '10', 'kv.work': '2' },
        }),
        start: true,
      });
      const ready = openConsole(client, 'kv2');
      await ready.waitFor('kvserver: ready\n', 30_000);
      ready.close();
      expect(await kv('kv2', ['PUT before 1'])).toEqual(['OK']);
      const path = (await region('kv2-ram0')).path;

      const saved = await save('kv2', 'kv2-snap');
      expect(saved.vm!.spec!.ram[0]!.backend).toBe(RamBackend.RAM_BACKEND_CLONE);
      // The shared mapping the remap moved aside is unmapped while the guest runs on.
      await eventually(
        () => mappingModes(vmm.process.pid, path).join() === 'rw-p',
        'the unmap of the old shared mapping',
      );
      const sealed = fileBytes(path, 0, size);

      // The guest's writes from now on land in its own pages, where it reads them back...
      expect(await kv('kv2', ['PUT after 2', 'GET after', 'GET before'])).toEqual([
        'OK',
        'VALUE 2',
        'VALUE 1',
      ]);
      expect(firstDifference(readThroughMapping(vmm.process.pid, path, 0, size), sealed)).not.toBe(
        -1,
      );
      // ...and never in the file, which holds the save point.
      expect(firstDifference(fileBytes(path, 0, size), sealed)).toBe(-1);
      await vmmCall(client, 'restoreVm', {
        snapshot: 'kv2-snap',
        name: 'kv2r',
        paused: false,
        jobId: '',
      });
      expect(await kv('kv2r', ['GET before', 'GET after'])).toEqual(['VALUE 1', 'NOT_FOUND']);
      await vmmCall(client, 'destroyVm', { name: 'kv2r' });
      await vmmCall(client, 'destroyVm', { name: 'kv2' });
    },
  );

  it.skipIf(!existsSync(kvserverElf))(
    'a refused CreateSnapshot leaves every write the guest made meanwhile in its region',
    async () => {
      const size = 32 * MiB;
      // The name the save will ask for is taken: memstore refuses it once it answers.
      await vmmCall(client, 'createVm', {
        spec: vmSpec('decoy', 'ab', { backend: RamBackend.RAM_BACKEND_SHARED, args: AB_ARGS }),
        start: true,
      });
      await save('decoy', 'taken', true);

      await vmmCall(client, 'createVm', {
        spec: vmSpec('kv1', 'kvserver', {
          memory: size,
          backend: RamBackend.RAM_BACKEND_SHARED,
          args: { 'kv.slots_log2': '10', 'kv.work': '2' },
        }),
        start: true,
      });
      const ready = openConsole(client, 'kv1');
      await ready.waitFor('kvserver: ready\n', 30_000);
      ready.close();
      expect(await kv('kv1', ['PUT before 1'])).toEqual(['OK']);
      const path = (await region('kv1-ram0')).path;

      hold();
      const saving = save('kv1', 'taken');
      saving.catch(() => undefined);
      await eventually(() => mappedPrivate(path), 'the remap to a private mapping');
      const keys = Array.from({ length: 40 }, (_, k) => `during${k}`);
      expect(await kv('kv1', [...keys.map((k) => `PUT ${k} v-${k}`), 'PUT before 2'])).toEqual(
        Array.from({ length: 41 }, () => 'OK'),
      );
      // What the guest sees now (its copy-on-write pages over the file); an idle kvserver
      // executes nothing, so this is its memory until the next command.
      const seen = readThroughMapping(vmm.process.pid, path, 0, size);
      expect(firstDifference(seen, fileBytes(path, 0, size))).not.toBe(-1); // the file lags
      release();

      expect(await refusal(saving)).toMatchObject({ code: 'SNAPSHOT_EXISTS' });
      expect(mappingModes(vmm.process.pid, path)).toEqual(['rw-s']);
      // Mapped shared again, and the file holds exactly what the guest saw.
      expect(firstDifference(fileBytes(path, 0, size), seen)).toBe(-1);
      const after = await getVm('kv1');
      expect(after.state).toBe(VmState.VM_STATE_RUNNING);
      expect(after.spec!.ram[0]!.backend).toBe(RamBackend.RAM_BACKEND_SHARED);
      expect(
        await kv('kv1', ['GET before', 'GET during0', `GET ${keys.at(-1)!}`, 'PUT after 3']),
      ).toEqual(['VALUE 2', 'VALUE v-during0', `VALUE v-${keys.at(-1)!}`, 'OK']);

      // A save that succeeds later and a restore of it keep them all.
      await save('kv1', 'kv1-snap', true);
      await vmmCall(client, 'restoreVm', {
        snapshot: 'kv1-snap',
        name: 'kv1r',
        paused: false,
        jobId: '',
      });
      const got = await kv('kv1r', [...keys.map((k) => `GET ${k}`), 'GET before', 'GET after']);
      expect(got).toEqual([...keys.map((k) => `VALUE v-${k}`), 'VALUE 2', 'VALUE 3']);
      await vmmCall(client, 'destroyVm', { name: 'kv1r' });
    },
  );
});
