import * as grpc from '@grpc/grpc-js';
import { memstore as msPb, vmm as pb } from '@handoff/proto';
import { createClient, unaryCall, type RemoteError } from '@handoff/service';
import { testCredentials } from '@handoff/service/testing';
import { checkAbConsistency } from '@handoff/vmm';
import { closeSync, existsSync, openSync, readSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { mappingsOf, readThroughMapping } from './helpers/proc-mem.js';
import { repoRoot } from './helpers/services.js';
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

/** The gRPC status and Handoff code a call failed with, and its message. */
async function refusal(
  p: Promise<unknown>,
): Promise<{ status: string; code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as RemoteError;
    return { status: grpc.status[e.status] ?? String(e.status), code: e.code, message: e.message };
  }
  throw new Error('the call succeeded but should have been refused');
}

/** `length` bytes of a file at `offset`, read through the file (holes read as zero). */
function fileBytes(path: string, offset: number, length: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const out = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, out, got, length - got, offset + got);
      if (n <= 0) break;
      got += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

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
  const save = (name: string, snapshot: string, opts: { full?: boolean; stop?: boolean } = {}) =>
    vmmCall(client, 'saveVm', {
      name,
      snapshot,
      full: opts.full ?? false,
      stop: opts.stop ?? false,
      template: false,
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

    // The restored VM is a clone: a bypass save would need a layer (not built); a full save
    // copies the template's data and the clone's own pages, so it holds exactly what the VM sees.
    expect(await refusal(save('ab2', 'ab2-layer'))).toMatchObject({
      code: 'VMM_INVALID_ARGUMENT',
      message: expect.stringContaining('--full'),
    });
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
    await deleteSnapshot('ab2-full');
    expect(await refusal(region(block.regionName))).toMatchObject({ status: 'NOT_FOUND' });
  });
});
