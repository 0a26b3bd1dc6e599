import * as grpc from '@grpc/grpc-js';
import type { memstore as msPb } from '@handoff/proto';
import { describe, expect, it } from 'vitest';
import { ERROR_CODE_METADATA_KEY } from '@handoff/service';
import type { RamBackendKind, VmState } from '../model/types.js';
import type { RamContext } from '../ram/index.js';
import type { VmHost } from '../vm/host.js';
import { decodeDeviceState } from '../snapshot/index.js';
import { bypassSave } from './bypass-save.js';
import { SaveRestore } from './save-restore.js';
import {
  fakeBlock,
  fakeMemstore,
  fakeVm,
  machineState,
  SIZE,
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
/**
 * The steps up to CreateSnapshot of a running VM: it runs again while memstore is asked, and
 * the old shared mapping the remap moved aside is unmapped only once it runs.
 */
const SAVED_AND_RUNNING = [
  'pause',
  'harvest',
  'remap:private',
  'resume',
  'unmap-old:shared',
] as const;
/** ...and those of a refused save: paused, its writes since the remap put back, resumed. */
const REFUSED = [
  ...SAVED_AND_RUNNING,
  'pause',
  'harvest',
  'remap:shared',
  'resume',
  'unmap-old:private',
] as const;
const unreachable: Answer = { status: grpc.status.UNAVAILABLE, details: 'connection refused' };

/** Polls `check` until it holds (a few ms at most here). */
async function eventually(check: () => boolean): Promise<void> {
  for (let k = 0; !check(); k++) {
    if (k > 1000) throw new Error('never happened');
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Gives the host a memstore whose CreateSnapshot waits: `held` gets its reply and a refusal
 * (SNAPSHOT_EXISTS) to send when the test says.
 */
function slowCreate(
  s: { memstore: { ctx: RamContext }; host: VmHost },
  held: (reply: (res: unknown) => void, refuse: () => void) => void,
): void {
  const ctx = {
    ...(s.memstore.ctx as object),
    memstore: () => ({
      createSnapshot: (_r: unknown, _m: unknown, _o: unknown, cb: Callback) =>
        held(
          (res) => cb(null, res),
          () => {
            const metadata = new grpc.Metadata();
            metadata.set(ERROR_CODE_METADATA_KEY, 'SNAPSHOT_EXISTS');
            cb({ code: grpc.status.ALREADY_EXISTS, details: 'exists', metadata });
          },
        ),
    }),
  } as unknown as RamContext;
  (s.host as unknown as { ramContext: () => RamContext }).ramContext = () => ctx;
}
type Callback = (err: Partial<grpc.ServiceError> | null, res?: unknown) => void;

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
  it('pauses, remaps private, resumes, has memstore seal the region and runs on as its clone', async () => {
    const s = setup({ createSnapshot: [made] });
    const result = await bypassSave(s.host, s.asVm, request);
    expect(s.log).toEqual([
      'pause',
      'harvest',
      'remap:private',
      'resume',
      'unmap-old:shared',
      'clone:kv-ram0',
      'rebacked',
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

  it('runs the guest while CreateSnapshot is in flight: the pause ends before memstore answers', async () => {
    let answer!: () => void;
    const s = setup({ createSnapshot: [made] });
    slowCreate(s, (reply) => (answer = () => reply({ snapshot: snapshotPb('snap') })));
    const saving = bypassSave(s.host, s.asVm, request);
    await eventually(() => answer !== undefined);
    // Running on its private mappings, still holding its lease, not yet a clone.
    expect(s.log).toEqual([...SAVED_AND_RUNNING]);
    expect(s.vm.currentState).toBe('running');
    expect(s.vm.ramBlocks[0]!.spec).toMatchObject({ backend: 'shared', regionOwned: true });
    expect(s.vm.snapshot).toBe('');
    expect(s.vm.saving).toBe(true);
    answer();
    const result = await saving;
    expect(result.pauseUs).toBe(250);
    expect(s.log.slice(SAVED_AND_RUNNING.length)).toEqual([
      'clone:kv-ram0',
      'rebacked',
      'attached',
    ]);
    expect(s.vm.saving).toBe(false);
  });

  it('puts every page the guest wrote during a refused save into its region', async () => {
    const log: string[] = [];
    const file = new Uint8Array(SIZE).fill(0x11);
    const block = fakeBlock('shared', log, file);
    new Uint8Array(block.buffer).set(file);
    let refuse!: () => void;
    const memstore = fakeMemstore({});
    const { vm, asVm, host } = fakeVm([block], 'running', memstore.ctx, log);
    slowCreate({ memstore, host }, (_reply, fail) => (refuse = fail));
    vm.dirty.setAll(); // written before the save: the save's own epoch starts at its remap
    const saving = bypassSave(host, asVm, request);
    await eventually(() => refuse !== undefined);
    // The guest writes three pages (two of them adjacent) while memstore is asked.
    const memory = new Uint8Array(block.buffer);
    const written = [3, 4, 200];
    for (const page of written) {
      memory.fill(page, page * 4096, (page + 1) * 4096);
      vm.dirty.set(page);
    }
    refuse();
    await expect(saving).rejects.toMatchObject({ code: 'SNAPSHOT_EXISTS' });
    expect(log).toEqual([...REFUSED]);
    // Mapped shared again: the memory is the region's, and holds every write.
    for (let page = 0; page < SIZE / 4096; page++) {
      const want = written.includes(page) ? page : 0x11;
      expect(memory[page * 4096], `page ${page}`).toBe(want);
      expect(memory[page * 4096 + 4095], `page ${page}`).toBe(want);
    }
    expect(vm.currentState).toBe('running');
    expect(vm.saving).toBe(false);
  });

  it("answers a refusal that comes after the guest powered off with memstore's error, its pages put back", async () => {
    let refuse!: () => void;
    const s = setup({});
    slowCreate(s, (_reply, fail) => (refuse = fail));
    const saving = bypassSave(s.host, s.asVm, request);
    await eventually(() => refuse !== undefined);
    s.vm.currentState = 'powered-off';
    refuse();
    await expect(saving).rejects.toMatchObject({ code: 'SNAPSHOT_EXISTS' });
    expect(s.log).toEqual([...SAVED_AND_RUNNING, 'harvest', 'remap:shared', 'unmap-old:private']);
    expect(s.vm.fencedReason).toBeNull();
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
    expect(s.log).toEqual([
      'pause',
      'harvest',
      'remap:private',
      'unmap-old:shared',
      'abandon',
      'destroy',
    ]);
    expect(result.vm).toBeNull();
    expect(result.pauseUs).toBe(0);
  });

  it('pauses again, maps shared again and resumes when memstore refuses, and answers its error', async () => {
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
    expect(s.log).toEqual([...REFUSED]);
    expect(s.memstore.methods()).toEqual(['createSnapshot']); // an answer: nothing was made
  });

  it('with no answer, maps shared again only once memstore says the VM still holds its lease', async () => {
    const s = setup({ createSnapshot: [unreachable], validateLease: [true] });
    await expect(bypassSave(s.host, s.asVm, request)).rejects.toMatchObject({
      code: 'VMM_MEMSTORE_UNAVAILABLE',
    });
    expect(s.memstore.methods()).toEqual(['createSnapshot', 'validateLease']);
    expect(s.log).toEqual([...REFUSED]);
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
      ...SAVED_AND_RUNNING,
      'pause', // it failed: paused while memstore is asked
      'clone:kv-ram0',
      'rebacked',
      'resume',
      'attached',
    ]);
    expect(result.pauseUs).toBe(500); // both pauses
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
    expect(s.log).toEqual([...SAVED_AND_RUNNING, 'pause', 'fence']);
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
