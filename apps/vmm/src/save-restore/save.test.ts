import * as grpc from '@grpc/grpc-js';
import type { memstore as msPb } from '@handoff/proto';
import { describe, expect, it } from 'vitest';
import type { RamBackendKind, VmState } from '../model/types.js';
import { decodeDeviceState } from '../snapshot/index.js';
import { bypassSave } from './bypass-save.js';
import { SaveRestore } from './save-restore.js';
import {
  fakeBlock,
  fakeMemstore,
  fakeVm,
  machineState,
  snapshotPb,
  type Answer,
} from './test-support.js';
import type { SaveRequest } from './types.js';

const request: SaveRequest = {
  name: 'kv',
  snapshot: 'snap',
  full: false,
  stop: false,
  template: true,
  jobId: 'job-1',
};
const made: Answer = { ok: { snapshot: snapshotPb('snap') } };
const unreachable: Answer = { status: grpc.status.UNAVAILABLE, details: 'connection refused' };

/** A VM of one block of `backend` in `state`, over a memstore answering `answers`. */
function setup(
  answers: Parameters<typeof fakeMemstore>[0],
  state: VmState = 'running',
  backend: RamBackendKind = 'shared',
) {
  const log: string[] = [];
  const memstore = fakeMemstore(answers);
  const block = fakeBlock(backend, log);
  const { vm, asVm, host } = fakeVm([block], state, memstore.ctx, log);
  return { log, memstore, vm, asVm, host, block };
}

describe('a bypass save', () => {
  it('pauses, remaps private, has memstore seal the region, runs on as its clone and resumes', async () => {
    const s = setup({ createSnapshot: [made] });
    const result = await bypassSave(s.host, s.asVm, request);
    expect(s.log).toEqual([
      'pause',
      'remap:private',
      'clone:kv-ram0',
      'rebacked',
      'resume',
      'attached',
    ]);
    const req = s.memstore.asked[0]!.request as msPb.CreateSnapshotRequest;
    expect(req).toMatchObject({
      name: 'snap',
      template: true,
      vmName: 'kv',
      holder: 'vmm-a/kv',
      blocks: [
        {
          id: 'ram0',
          region: { selector: { $case: 'id', value: 'r1' } },
          epoch: 5n,
          owned: true,
          size: 1048576n,
        },
      ],
    });
    expect(decodeDeviceState(req.deviceState).state).toEqual(machineState);
    expect(s.vm.ramBlocks[0]!.spec).toMatchObject({ backend: 'clone', region: 'kv-ram0' });
    expect(s.vm.snapshot).toBe('snap');
    expect(result.pauseUs).toBe(250); // vCPU stop (1000 ms) to resume (1000.25 ms)
    expect(result.bytes).toBe(req.deviceState.length);
    expect(result.snapshot.name).toBe('snap');
  });

  it('leaves a paused VM paused (no pause measured)', async () => {
    const s = setup({ createSnapshot: [made] }, 'paused');
    const result = await bypassSave(s.host, s.asVm, request);
    expect(s.log).not.toContain('resume');
    expect(result.pauseUs).toBe(0);
    expect(result.vm).not.toBeNull();
  });

  it('with stop, unmaps the blocks without giving anything back and destroys the VM', async () => {
    const s = setup({ createSnapshot: [made] });
    const result = await bypassSave(s.host, s.asVm, { ...request, stop: true });
    expect(s.log).toEqual(['pause', 'remap:private', 'abandon', 'destroy']);
    expect(result.vm).toBeNull();
    expect(result.pauseUs).toBe(0);
  });

  it('maps shared again and resumes when memstore refuses, and answers its error', async () => {
    const exists: Answer = {
      status: grpc.status.ALREADY_EXISTS,
      code: 'SNAPSHOT_EXISTS',
      details: 'snapshot "snap" already exists',
    };
    const s = setup({ createSnapshot: [exists] });
    await expect(bypassSave(s.host, s.asVm, request)).rejects.toMatchObject({
      code: 'SNAPSHOT_EXISTS',
      message: expect.stringContaining('already exists'),
    });
    expect(s.log).toEqual(['pause', 'remap:private', 'remap:shared', 'resume']);
    expect(s.memstore.methods()).toEqual(['createSnapshot']); // an answer: nothing was made
  });

  it('with no answer, maps shared again only once memstore says the VM still holds its lease', async () => {
    const s = setup({ createSnapshot: [unreachable], validateLease: [true] });
    await expect(bypassSave(s.host, s.asVm, request)).rejects.toMatchObject({
      code: 'VMM_MEMSTORE_UNAVAILABLE',
    });
    expect(s.memstore.methods()).toEqual(['createSnapshot', 'validateLease']);
    expect(s.log).toEqual(['pause', 'remap:private', 'remap:shared', 'resume']);
    expect(s.vm.fencedReason).toBeNull();
  });

  it('with no answer and the lease gone, finds the snapshot it made and carries on from it', async () => {
    const s = setup({
      createSnapshot: [unreachable],
      validateLease: [false],
      getSnapshot: [made],
    });
    const result = await bypassSave(s.host, s.asVm, request);
    expect(result.snapshot.name).toBe('snap');
    expect(s.log).toEqual([
      'pause',
      'remap:private',
      'clone:kv-ram0',
      'rebacked',
      'resume',
      'attached',
    ]);
  });

  it('with no answer, the lease gone and no snapshot of its region, fences the VM', async () => {
    const other = snapshotPb('snap', { blocks: [] });
    const s = setup({
      createSnapshot: [unreachable],
      validateLease: [false],
      getSnapshot: [{ ok: { snapshot: other } }],
    });
    await expect(bypassSave(s.host, s.asVm, request)).rejects.toMatchObject({
      code: 'VMM_LEASE_LOST',
    });
    expect(s.log).toEqual(['pause', 'remap:private', 'fence']);
    expect(s.vm.fencedReason).toContain('lease moved');
  });
});

describe('SaveVm refuses', () => {
  it('a bypass save of private RAM with VMM_INVALID_ARGUMENT', async () => {
    const s = setup({}, 'running', 'private');
    const saves = new SaveRestore(s.host);
    await expect(saves.save(request)).rejects.toMatchObject({
      code: 'VMM_INVALID_ARGUMENT',
      message: expect.stringMatching(/private memory.*--full/),
    });
    expect(s.log).toEqual([]); // never paused
  });

  it('a bypass save of shared and clone RAM mixed with VMM_INVALID_ARGUMENT', async () => {
    const s = setup({}, 'running', 'shared');
    s.vm.ramBlocks.push({
      ...fakeBlock('clone', s.log),
      spec: { ...s.block.spec, id: 'ram1', backend: 'clone' },
    });
    const saves = new SaveRestore(s.host);
    await expect(saves.save(request)).rejects.toMatchObject({
      code: 'VMM_INVALID_ARGUMENT',
      message: expect.stringMatching(/both shared and clone RAM.*--full/),
    });
    expect(s.log).toEqual([]); // never paused
  });

  it('a layer of a clone whose regions are no snapshot’s with VMM_INVALID_ARGUMENT, before any pause', async () => {
    const s = setup(
      { getSnapshot: [{ ok: { snapshot: snapshotPb('other', { blocks: [] }) } }] },
      'running',
      'clone',
    );
    (s.memstore.ctx.memstore() as unknown as Record<string, unknown>).listSnapshots = (
      _req: unknown,
      _md: unknown,
      _o: unknown,
      cb: (err: null, res: unknown) => void,
    ) => cb(null, { snapshots: [snapshotPb('unrelated', { blocks: [] })] });
    s.vm.snapshot = 'other';
    const saves = new SaveRestore(s.host);
    await expect(saves.save(request)).rejects.toMatchObject({
      code: 'VMM_INVALID_ARGUMENT',
      message: expect.stringMatching(/no snapshot’s, so a layer has no parent.*--full/),
    });
    expect(s.log).toEqual([]); // never paused
  });

  it('a save without a snapshot name, and a VM that is neither running nor paused', async () => {
    const created = setup({}, 'created');
    const saves = new SaveRestore(created.host);
    await expect(saves.save({ ...request, snapshot: '' })).rejects.toMatchObject({
      code: 'VMM_INVALID_ARGUMENT',
    });
    await expect(saves.save(request)).rejects.toMatchObject({
      code: 'VMM_INVALID_STATE',
      message: expect.stringContaining('it is created'),
    });
  });

  it('a second save of a VM being saved', async () => {
    let release!: (a: unknown) => void;
    const s = setup({ createSnapshot: [made] });
    const slow = {
      ...(s.memstore.ctx as object),
      memstore: () => ({
        createSnapshot: (
          _r: unknown,
          _m: unknown,
          _o: unknown,
          cb: (e: null, r: unknown) => void,
        ) => (release = (res) => cb(null, res)),
      }),
    };
    (s.host as unknown as { ramContext: () => unknown }).ramContext = () => slow;
    const saves = new SaveRestore(s.host);
    const first = saves.save(request);
    await new Promise((r) => setTimeout(r, 10));
    expect(saves.isSaving('kv')).toBe(true);
    await expect(saves.save(request)).rejects.toMatchObject({ code: 'VMM_INVALID_STATE' });
    release({ snapshot: snapshotPb('snap') });
    await first;
    expect(saves.isSaving('kv')).toBe(false);
  });

  it('a clone count out of 1..1000', async () => {
    const s = setup({});
    const saves = new SaveRestore(s.host);
    for (const count of [0, 1001, 2.5]) {
      await expect(
        saves.clone({
          snapshot: 'snap',
          count,
          namePrefix: 'c',
          firstIndex: 0,
          paused: false,
          jobId: '',
        }),
      ).rejects.toMatchObject({ code: 'VMM_INVALID_ARGUMENT' });
    }
  });
});
