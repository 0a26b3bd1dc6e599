import { memstore as msPb, vmm as pb } from '@handoff/proto';
import { createClient, unaryCall } from '@handoff/service';
import { testCredentials } from '@handoff/service/testing';
import { checkAbConsistency } from '@handoff/vmm';
import {
  closeSync,
  existsSync,
  openSync,
  readSync,
  readdirSync,
  statSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { fileBytes, mappingsOf, readThroughMapping } from './helpers/proc-mem.js';
import { refusal, repoRoot } from './helpers/services.js';
import { openConsole, startVmmProcess, vmSpec, vmmCall, type VmmUnderTest } from './helpers/vmm.js';

/**
 * SaveVm, RestoreVm and CloneVms against a real memstore: bypass and full saves of the `ab`
 * guest keep its a-b consistency through save and restore, kvserver keeps its keys, clones get
 * identities of their own and never share a write, and a snapshot that fails a check starts
 * nothing.
 */

const { VmState, RamBackend } = pb;
const MiB = 1024 * 1024;
const kvserverElf = join(repoRoot, 'guests/kvserver/kvserver.elf');
/** The `ab` guest's range: 32 pages from 1 MiB into RAM. */
const AB_ARGS = { 'ab.start': '0x80100000', 'ab.pages': '32' };
const AB_BASE = 0x100000;
const AB_BYTES = 32 * 4096;

/** The first offset at which `a` and `b` differ, or -1 (without a diff of megabytes). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let k = 0; k < n; k++) if (a[k] !== b[k]) return k;
  return a.length === b.length ? -1 : n;
}

/** Polls `check` every 5 ms until it holds; fails with `what` after `timeoutMs`. */
async function eventually(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  for (const end = Date.now() + timeoutMs; !check();) {
    if (Date.now() > end) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('snapshots: save, restore and clone', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  /** memstore as the operator (DeleteSnapshot is not a vmm's). */
  let operator: msPb.MemstoreServiceClient;
  let vmm: VmmUnderTest;
  let client: pb.VmmServiceClient;

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    operator = createClient(
      msPb.MemstoreServiceClient,
      memstore.process.address,
      await testCredentials({ id: 'operator', role: 'operator' }, { serverRole: 'memstore' }),
    );
    vmm = await startVmmProcess([
      '--id',
      'vmm-s',
      '--memstore',
      memstore.process.address,
      '--max-vm-memory',
      '256M',
    ]);
    client = vmm.client;
  });

  afterAll(async () => {
    operator?.close();
    await vmm?.stop();
    await memstore?.stop();
    dirs?.cleanup();
  });

  const create = (spec: pb.VmSpec) => vmmCall(client, 'createVm', { spec, start: true });
  const destroy = (name: string) => vmmCall(client, 'destroyVm', { name });
  const getVm = async (name: string) => (await vmmCall(client, 'getVm', { name })).vm!;
  const save = (
    name: string,
    snapshot: string,
    opts: { full?: boolean; stop?: boolean; template?: boolean } = {},
  ) =>
    vmmCall(client, 'saveVm', {
      name,
      snapshot,
      full: opts.full ?? false,
      stop: opts.stop ?? false,
      template: opts.template ?? false,
      jobId: '',
    });
  const region = async (name: string) =>
    (await unaryCall(memstore.client, 'getRegion', { region: regionNamed(name) })).region!;
  const snapshotNamed = async (name: string) =>
    (
      await unaryCall(memstore.client, 'getSnapshot', {
        snapshot: { selector: { $case: 'name', value: name } },
        withDeviceState: false,
      })
    ).snapshot!;
  const deleteSnapshot = (name: string) =>
    unaryCall(operator, 'deleteSnapshot', {
      snapshot: { selector: { $case: 'name', value: name } },
    });
  /** The `ab` range as this vmm's one mapping of `path` shows it. */
  const abThrough = (path: string) => readThroughMapping(vmm.process.pid, path, AB_BASE, AB_BYTES);

  it('bypass: seals the VM region in place, the VM runs on over it, a restore goes on from the save point', async () => {
    await create(vmSpec('ab1', 'ab', { backend: RamBackend.RAM_BACKEND_SHARED, args: AB_ARGS }));
    const console = openConsole(client, 'ab1');
    await console.waitFor('BB');
    console.close();
    const before = await getVm('ab1');

    const saved = await save('ab1', 'ab1-snap');

    // The snapshot is the VM's own region, sealed: nothing was copied.
    const snap = saved.snapshot!;
    expect(snap.kind).toBe(msPb.SnapshotKind.SNAPSHOT_KIND_BYPASS);
    expect(snap.vmName).toBe('ab1');
    expect(snap.vmmId).toBe('vmm-s');
    expect(snap.blocks.map((b) => [b.regionName, b.owned])).toEqual([['ab1-ram0', true]]);
    expect(saved.pauseUs).toBeGreaterThan(0n);
    expect(saved.bytes).toBe(snap.deviceStateBytes);
    // The VM runs on as a clone of the snapshot's region.
    const vm = saved.vm!;
    expect(vm.state).toBe(VmState.VM_STATE_RUNNING);
    expect(vm.snapshot).toBe('ab1-snap');
    expect(vm.spec!.ram[0]).toMatchObject({
      backend: RamBackend.RAM_BACKEND_CLONE,
      region: 'ab1-ram0',
    });
    expect(vm.spec!.ram[0]!.regionOwned).toBeUndefined();
    expect(vm.generationId).toBe(before.generationId);
    const sealed = await region('ab1-ram0');
    expect(sealed.state).toBe(msPb.RegionState.REGION_STATE_SEALED);
    expect(sealed.lease).toBeUndefined();
    expect(sealed.mappedBy).toEqual(['vmm-s/ab1']);
    expect((await snapshotNamed('ab1-snap')).clones).toEqual(['vmm-s/ab1']);

    // The sealed file holds the save point, a-b consistent; the guest's later writes stay in
    // its copy-on-write pages and never reach the file.
    const atSave = fileBytes(sealed.path, AB_BASE, AB_BYTES);
    const check = checkAbConsistency(atSave);
    expect(check.consistent, check.description).toBe(true);
    await eventually(() => abThrough(sealed.path)[0] !== atSave[0], 'the saved VM running on');
    await vmmCall(client, 'pauseVm', { name: 'ab1' });
    const ranOn = checkAbConsistency(abThrough(sealed.path));
    expect(ranOn.consistent, ranOn.description).toBe(true);
    expect(fileBytes(sealed.path, AB_BASE, AB_BYTES)).toEqual(atSave);
    await destroy('ab1');
    expect((await region('ab1-ram0')).cloneCount).toBe(0); // kept: the snapshot owns it

    // Restored paused: exactly the save point, a new identity.
    const restored = await vmmCall(client, 'restoreVm', {
      snapshot: 'ab1-snap',
      name: 'ab1r',
      paused: true,
      jobId: '',
    });
    expect(restored.vm!.state).toBe(VmState.VM_STATE_PAUSED);
    expect(restored.vm!.snapshot).toBe('ab1-snap');
    expect(restored.vm!.generationId).not.toBe(before.generationId);
    expect(restored.durationUs).toBeGreaterThan(0n);
    expect(abThrough(sealed.path)).toEqual(atSave);
    await vmmCall(client, 'resumeVm', { name: 'ab1r' });
    await eventually(() => abThrough(sealed.path)[0] !== atSave[0], 'the restored VM running');
    await vmmCall(client, 'pauseVm', { name: 'ab1r' });
    const after = checkAbConsistency(abThrough(sealed.path));
    expect(after.consistent, after.description).toBe(true);
    expect(fileBytes(sealed.path, AB_BASE, AB_BYTES)).toEqual(atSave);

    // The snapshot is pinned while a VM runs from it, and takes its region along when deleted.
    expect(await refusal(deleteSnapshot('ab1-snap'))).toMatchObject({ code: 'SNAPSHOT_IN_USE' });
    await destroy('ab1r');
    await deleteSnapshot('ab1-snap');
    expect(await refusal(region('ab1-ram0'))).toMatchObject({ status: 'NOT_FOUND' });
  });

  it('full: refuses a bypass save of private RAM, copies its written pages into the snapshot, and the VM runs on', async () => {
    await create(vmSpec('ab2', 'ab', { args: AB_ARGS }));
    const console = openConsole(client, 'ab2');
    await console.waitFor('BB');
    console.close();
    expect(await refusal(save('ab2', 'ab2-bypass'))).toMatchObject({
      status: 'INVALID_ARGUMENT',
      code: 'VMM_INVALID_ARGUMENT',
      message: expect.stringContaining('--full'),
    });
    await expect(snapshotNamed('ab2-bypass')).rejects.toMatchObject({ code: 'SNAPSHOT_NOT_FOUND' });
    expect((await getVm('ab2')).state).toBe(VmState.VM_STATE_RUNNING);

    const saved = await save('ab2', 'ab2-full', { full: true });
    const snap = saved.snapshot!;
    expect(snap.kind).toBe(msPb.SnapshotKind.SNAPSHOT_KIND_FULL);
    expect(snap.blocks).toHaveLength(1);
    const block = snap.blocks[0]!;
    expect(block.owned).toBe(true);
    expect(block.regionName).toMatch(/^ab2-full-ram0-[0-9a-f]{6}$/);
    // Only the written pages went in: the 16 MiB block is mostly holes.
    expect(block.storedBytes).toBeGreaterThan(0n);
    expect(block.storedBytes).toBeLessThan(4n * BigInt(MiB));
    expect(saved.bytes).toBeGreaterThan(BigInt(AB_BYTES));
    expect(saved.pauseUs).toBeGreaterThan(0n);
    // The VM runs on, on its own private RAM.
    expect(saved.vm!.state).toBe(VmState.VM_STATE_RUNNING);
    expect(saved.vm!.spec!.ram[0]!.backend).toBe(RamBackend.RAM_BACKEND_PRIVATE);
    expect(saved.vm!.snapshot).toBe('');
    const copy = await region(block.regionName);
    expect(copy.kind).toBe(msPb.RegionKind.REGION_KIND_PERSISTENT);
    expect(copy.state).toBe(msPb.RegionState.REGION_STATE_SEALED);
    const atSave = fileBytes(copy.path, AB_BASE, AB_BYTES);
    const check = checkAbConsistency(atSave);
    expect(check.consistent, check.description).toBe(true);
    await destroy('ab2');

    const restored = await vmmCall(client, 'restoreVm', {
      snapshot: snap.id, // by id this time
      name: '',
      paused: false,
      jobId: '',
    });
    expect(restored.vm!.name).toBe('ab2'); // the name it was saved with
    expect(restored.vm!.state).toBe(VmState.VM_STATE_RUNNING);
    await eventually(() => abThrough(copy.path)[0] !== atSave[0], 'the restored VM running');
    await vmmCall(client, 'pauseVm', { name: 'ab2' });
    const after = checkAbConsistency(abThrough(copy.path));
    expect(after.consistent, after.description).toBe(true);

    // The restored VM is a clone: a bypass save makes a layer over its snapshot (more in
    // chained-snapshots.test.ts); a full save copies the template's data and the clone's own
    // pages, so it holds exactly what the VM sees.
    const layer = await save('ab2', 'ab2-layer');
    expect(layer.snapshot!.parent).toBe('ab2-full');
    expect(layer.snapshot!.depth).toBe(1);
    const again = await save('ab2', 'ab2-again', { full: true });
    expect(again.pauseUs).toBe(0n); // it was paused already
    expect(again.vm!.state).toBe(VmState.VM_STATE_PAUSED);
    const second = await region(again.snapshot!.blocks[0]!.regionName);
    const size = 16 * MiB;
    expect(
      firstDifference(
        fileBytes(second.path, 0, size),
        readThroughMapping(vmm.process.pid, copy.path, 0, size),
      ),
    ).toBe(-1);
    await destroy('ab2');
    await deleteSnapshot('ab2-again');
    await deleteSnapshot('ab2-layer');
    await deleteSnapshot('ab2-full');
    expect(await refusal(region(block.regionName))).toMatchObject({ status: 'NOT_FOUND' });
  });

  /** Sends kvserver commands on a fresh console and returns the answer lines, in order. */
  const kv = async (name: string, commands: string[]): Promise<string[]> => {
    // Framed by two unique values: the console replays its backlog first.
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
      return lines.slice(from, lines.lastIndexOf(`VALUE ${close}`) - 1); // less the PUT's OK
    } finally {
      console.close();
    }
  };
  const kvSpec = (name: string) =>
    vmSpec(name, 'kvserver', {
      memory: 32 * MiB,
      backend: RamBackend.RAM_BACKEND_SHARED,
      args: { 'kv.slots_log2': '10', 'kv.work': '2' },
    });
  const kvReady = async (name: string) => {
    const console = openConsole(client, name);
    await console.waitFor('kvserver: ready\n', 30_000);
    console.close();
  };

  it.skipIf(!existsSync(kvserverElf))(
    'kvserver keeps its keys through a save --stop and a restore',
    async () => {
      await create(kvSpec('kv1'));
      await kvReady('kv1');
      expect(await kv('kv1', ['PUT color blue', 'PUT size 42', 'GET color'])).toEqual([
        'OK',
        'OK',
        'VALUE blue',
      ]);
      const saved = await save('kv1', 'kv1-snap', { stop: true });
      expect(saved.vm).toBeUndefined();
      expect(saved.pauseUs).toBe(0n); // it stays stopped
      expect(await refusal(getVm('kv1'))).toMatchObject({ status: 'NOT_FOUND' });
      // Sealed, not deleted: the snapshot owns the region the VM had.
      expect((await region('kv1-ram0')).state).toBe(msPb.RegionState.REGION_STATE_SEALED);

      await vmmCall(client, 'restoreVm', {
        snapshot: 'kv1-snap',
        name: '',
        paused: false,
        jobId: '',
      });
      expect(await kv('kv1', ['GET color', 'GET size', 'PUT color red', 'GET color'])).toEqual([
        'VALUE blue',
        'VALUE 42',
        'OK',
        'VALUE red',
      ]);
      await destroy('kv1');
      // The restored VM's write stayed in its own pages: a second restore sees the save point.
      await vmmCall(client, 'restoreVm', {
        snapshot: 'kv1-snap',
        name: 'kv1b',
        paused: false,
        jobId: '',
      });
      expect(await kv('kv1b', ['GET color'])).toEqual(['VALUE blue']);
      await destroy('kv1b');
      await deleteSnapshot('kv1-snap');
    },
  );

  it.skipIf(!existsSync(kvserverElf))(
    'clones: identities of their own, writes never shared, the template file untouched, PSS below RSS',
    async () => {
      await create(kvSpec('kvt'));
      await kvReady('kvt');
      expect(await kv('kvt', ['PUT shared yes'])).toEqual(['OK']);
      const original = await getVm('kvt');
      const saved = await save('kvt', 'kvt-tpl', { stop: true, template: true });
      expect(saved.snapshot!.template).toBe(true);
      const template = await region(saved.snapshot!.blocks[0]!.regionName);
      const before = fileBytes(template.path, 0, 32 * MiB);

      // Every name must be free before any clone starts.
      await create(vmSpec('c-2', 'hello'));
      expect(
        await refusal(
          vmmCall(client, 'cloneVms', {
            snapshot: 'kvt-tpl',
            count: 3,
            namePrefix: 'c',
            firstIndex: 0,
            paused: false,
            jobId: '',
          }),
        ),
      ).toMatchObject({ code: 'VMM_VM_EXISTS', message: expect.stringContaining('c-2') });
      expect((await vmmCall(client, 'listVms', {})).vms.map((v) => v.name)).toEqual(['c-2']);
      expect((await snapshotNamed('kvt-tpl')).clones).toEqual([]);
      await destroy('c-2');
      expect(
        await refusal(
          vmmCall(client, 'cloneVms', {
            snapshot: 'kvt-tpl',
            count: 1001,
            namePrefix: '',
            firstIndex: 0,
            paused: false,
            jobId: '',
          }),
        ),
      ).toMatchObject({ code: 'VMM_INVALID_ARGUMENT' });

      const cloned = await vmmCall(client, 'cloneVms', {
        snapshot: 'kvt-tpl',
        count: 2,
        namePrefix: '',
        firstIndex: 0,
        paused: false,
        jobId: '',
      });
      expect(cloned.vms.map((v) => v.name)).toEqual(['kvt-tpl-1', 'kvt-tpl-2']);
      expect(cloned.runningAfterUs).toHaveLength(2);
      for (const us of cloned.runningAfterUs) {
        expect(us).toBeGreaterThan(0n);
        expect(us).toBeLessThanOrEqual(cloned.durationUs);
      }
      expect(cloned.vms.every((v) => v.state === VmState.VM_STATE_RUNNING)).toBe(true);
      // The template rang READY before its save: its clones start past their ready point.
      expect(cloned.vms.every((v) => v.ready)).toBe(true);
      expect((await snapshotNamed('kvt-tpl')).clones.sort()).toEqual([
        'vmm-s/kvt-tpl-1',
        'vmm-s/kvt-tpl-2',
      ]);

      // Each guest reads its own generation id and reseeds its RNG from its own entropy.
      const [a, b] = cloned.vms.map((v) => v.name) as [string, string];
      const stats = async (name: string) => {
        const [line] = await kv(name, ['STATS']);
        return /generation=0x([0-9a-f]{16})/.exec(line!)![1]!;
      };
      const genA = await stats(a);
      const genB = await stats(b);
      expect(BigInt(`0x${genA}`)).toBe((await getVm(a)).generationId);
      expect(BigInt(`0x${genB}`)).toBe((await getVm(b)).generationId);
      expect(new Set([genA, genB, original.generationId.toString(16).padStart(16, '0')]).size).toBe(
        3,
      );
      const [randA] = await kv(a, ['RAND']);
      const [randB] = await kv(b, ['RAND']);
      expect(randA).toMatch(/^RAND [0-9a-f]{16}$/);
      expect(randA).not.toBe(randB);

      // A write in one clone shows neither in the other nor in the template.
      expect(await kv(a, ['GET shared', 'PUT mine a', 'GET mine'])).toEqual([
        'VALUE yes',
        'OK',
        'VALUE a',
      ]);
      expect(await kv(b, ['GET shared', 'GET mine'])).toEqual(['VALUE yes', 'NOT_FOUND']);
      expect(firstDifference(fileBytes(template.path, 0, 32 * MiB), before)).toBe(-1);

      // What a clone costs: its share of the template's pages plus its own.
      expect((await getVm(a)).memory, 'measured only when asked').toBeUndefined();
      const got = (await vmmCall(client, 'getVm', { name: a, withMemory: true })).vm!;
      expect(got.memory).toBeDefined();
      expect(got.memory!.rssBytes).toBeGreaterThan(0n);
      expect(got.memory!.pssBytes).toBeLessThan(got.memory!.rssBytes);
      expect(got.memory!.privateDirtyBytes).toBeGreaterThan(0n);
      expect(got.memory!.privateDirtyBytes).toBeLessThan(got.memory!.rssBytes);
      const listed = (await vmmCall(client, 'listVms', {})).vms;
      expect(listed.every((v) => v.memory === undefined)).toBe(true);

      await destroy(a);
      await destroy(b);
      await deleteSnapshot('kvt-tpl');
    },
  );

  it('a snapshot that fails a check starts nothing and leaves no mapping or clone behind', async () => {
    const count = async () => (await vmmCall(client, 'listVms', {})).vms.length;
    const vms = await count();
    await create(vmSpec('bad', 'ab', { backend: RamBackend.RAM_BACKEND_SHARED, args: AB_ARGS }));
    const saved = await save('bad', 'bad-snap', { stop: true });
    const sealed = await region(saved.snapshot!.blocks[0]!.regionName);

    // Its device state file damaged on disk: memstore's CRC refuses it.
    const stateDir = join(dirs.persistentDir, 'snapshots');
    const stateFile = readdirSync(stateDir).find((f) => f.includes(saved.snapshot!.id));
    const path = join(stateDir, stateFile!);
    const fd = openSync(path, 'r+');
    const byte = new Uint8Array(1);
    const at = statSync(path).size - 1; // the last byte of the state
    readSync(fd, byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0xff;
    writeSync(fd, byte, 0, 1, at);
    closeSync(fd);
    expect(
      await refusal(
        vmmCall(client, 'restoreVm', {
          snapshot: 'bad-snap',
          name: 'bad1',
          paused: false,
          jobId: '',
        }),
      ),
    ).toMatchObject({ code: 'SNAPSHOT_CORRUPT' });

    // A device state memstore keeps intact but that is no machine's: the vmm refuses it.
    const crafted = await unaryCall(memstore.client, 'createSnapshot', {
      name: 'crafted',
      template: false,
      kind: msPb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
      vmName: 'bad',
      vmSpec: saved.snapshot!.vmSpec,
      deviceState: new TextEncoder().encode('HNDFDEV\0 but nothing a machine could load'),
      blocks: [
        {
          id: 'ram0',
          guestBase: 0x8000_0000n,
          size: sealed.size,
          region: regionNamed(sealed.name),
          epoch: 0n,
          owned: false,
          layerPages: new Uint8Array(0),
        },
      ],
      holder: 'test-vmm/bad',
      parent: '',
    });
    expect(crafted.snapshot!.blocks[0]!.regionId).toBe(sealed.id);
    for (const req of [
      vmmCall(client, 'restoreVm', { snapshot: 'crafted', name: 'bad2', paused: false, jobId: '' }),
      vmmCall(client, 'cloneVms', {
        snapshot: 'crafted',
        count: 3,
        namePrefix: 'bad',
        firstIndex: 0,
        paused: false,
        jobId: '',
      }),
    ]) {
      expect(await refusal(req)).toMatchObject({
        status: 'DATA_LOSS',
        code: 'VMM_SNAPSHOT_INVALID',
        message: expect.stringContaining('device state'),
      });
    }
    expect(await count()).toBe(vms);
    expect(mappingsOf(vmm.process.pid, sealed.path)).toEqual([]);
    expect((await region(sealed.name)).mappedBy).toEqual([]);
    await deleteSnapshot('crafted');
    await deleteSnapshot('bad-snap');
  });
});
