/**
 * Fakes of the save-restore layer's unit tests: a VM, its host and memstore, recording what
 * was asked of them in order.
 */
import * as grpc from '@grpc/grpc-js';
import { PageBitmap } from '@handoff/bitmap';
import { memstore as msPb } from '@handoff/proto';
import { createLogger, ERROR_CODE_METADATA_KEY } from '@handoff/service';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createMachine } from '../machine/machine.js';
import type { MachineState } from '../machine/state.js';
import type { RamBackendKind, VmInfo, VmState } from '../model/types.js';
import type { RamBacking, RamContext } from '../ram/index.js';
import type { VmHost } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';

export const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });
export const SIZE = 1 << 20;
export const machineState: MachineState = createMachine({
  ramSize: SIZE,
  timeMode: 'realtime',
}).save();

/** What a fake memstore call answers: a response, or a gRPC failure (with a Handoff code). */
export type Answer =
  | { readonly ok: unknown }
  | { readonly status: grpc.status; readonly code?: string; readonly details?: string };

type Callback = (err: Partial<grpc.ServiceError> | null, res?: unknown) => void;

function answer(a: Answer, cb: Callback): void {
  if ('ok' in a) {
    cb(null, a.ok);
    return;
  }
  const metadata = new grpc.Metadata();
  if (a.code !== undefined) metadata.set(ERROR_CODE_METADATA_KEY, a.code);
  cb({ code: a.status, details: a.details ?? `answer ${a.code ?? a.status}`, metadata });
}

/** A snapshot as memstore would answer it, holding region `r1` for block ram0. */
export function snapshotPb(name: string, over: Partial<msPb.Snapshot> = {}): msPb.Snapshot {
  return msPb.Snapshot.fromPartial({
    id: '0b0e3bd2-6a55-4a54-9a6f-4a4f1f0c7c11',
    name,
    kind: msPb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
    vmName: 'kv',
    vmmId: 'vmm-a',
    blocks: [
      {
        id: 'ram0',
        guestBase: 0x8000_0000n,
        size: BigInt(SIZE),
        regionId: 'r1',
        regionName: 'kv-ram0',
        identity: 'i1',
        owned: true,
      },
    ],
    ...over,
  });
}

/** memstore: answers from the queues, in order (the last one repeats); records requests. */
export function fakeMemstore(answers: {
  createSnapshot?: Answer[];
  getSnapshot?: Answer[];
  validateLease?: boolean[];
}) {
  const asked: { method: string; request: unknown }[] = [];
  const next = (q: Answer[] | undefined, method: string): Answer => {
    if (q === undefined || q.length === 0) throw new Error(`unexpected call ${method}`);
    return q.length > 1 ? q.shift()! : q[0]!;
  };
  const client = {
    createSnapshot(req: unknown, _md: unknown, _o: unknown, cb: Callback) {
      asked.push({ method: 'createSnapshot', request: req });
      answer(next(answers.createSnapshot, 'createSnapshot'), cb);
    },
    getSnapshot(req: unknown, _md: unknown, _o: unknown, cb: Callback) {
      asked.push({ method: 'getSnapshot', request: req });
      answer(next(answers.getSnapshot, 'getSnapshot'), cb);
    },
  };
  const leases = {
    validateLease: (req: unknown) => {
      asked.push({ method: 'validateLease', request: req });
      const valid = answers.validateLease?.shift() ?? true;
      return Promise.resolve({ valid, current: { holder: valid ? 'vmm-a/kv' : 'x', epoch: 6n } });
    },
  };
  const ctx = {
    vmmId: 'vmm-a',
    vmName: 'kv',
    memstore: () => client,
    leases: () => leases,
    memstoreAddress: '127.0.0.1:1',
    deadlineMs: 1000,
    logger,
  } as unknown as RamContext;
  return { ctx, asked, methods: () => asked.map((a) => a.method) };
}

/**
 * One RAM block of `backend`, recording remaps (and the unmap of the mapping each moved aside),
 * clone switches and closes in `log`. With
 * `file`, its remaps act on it as on the region's file: while the block is mapped shared its
 * memory is the file's (a private remap starts from it, `file` then keeps what the memory held),
 * and a shared remap drops what was written since (the memory shows `file` again).
 */
export function fakeBlock(backend: RamBackendKind, log: string[], file?: Uint8Array): RamBacking {
  const spec = {
    id: 'ram0',
    guestBase: 0x8000_0000,
    size: SIZE,
    backend,
    region: backend === 'private' ? '' : 'kv-ram0',
    ...(backend === 'shared' ? { regionOwned: true } : {}),
  };
  const block: RamBacking = {
    spec,
    buffer: new SharedArrayBuffer(SIZE),
    regionRef:
      backend === 'private'
        ? null
        : {
            regionId: 'r1',
            regionName: 'kv-ram0',
            epoch: 5,
            size: SIZE,
            identity: 'i1',
            memstore: '127.0.0.1:1',
          },
    zeroed: backend === 'private',
    close: () => {
      log.push('close');
      return Promise.resolve();
    },
    abandon: () => log.push('abandon'),
    remap: (sharing) => {
      log.push(`remap:${sharing}`);
      const memory = new Uint8Array(block.buffer);
      if (sharing === 'private') file?.set(memory);
      else if (file !== undefined) memory.set(file);
      return {
        unmap: () => {
          log.push(`unmap-old:${sharing === 'private' ? 'shared' : 'private'}`);
          return Promise.resolve();
        },
      };
    },
    becomeClone: (sealed) => {
      log.push(`clone:${sealed.regionName}`);
      const backing: RamBacking = {
        ...block,
        spec: {
          id: 'ram0',
          guestBase: spec.guestBase,
          size: SIZE,
          backend: 'clone',
          region: sealed.regionName,
        },
      };
      return { backing, attached: Promise.resolve().then(() => void log.push('attached')) };
    },
  };
  return block;
}

/** A VM and its host, over `blocks`; `log` gets the VM's and the host's steps too. */
export function fakeVm(blocks: RamBacking[], state: VmState, ctx: RamContext, log: string[]) {
  const vm = {
    name: 'kv',
    log: logger,
    currentState: state,
    ramBlocks: blocks,
    lastRunAtMs: 0,
    lastPauseAtMs: 0,
    /** Main RAM's dirty pages since the last harvest: the test marks what the guest wrote. */
    dirty: new PageBitmap(SIZE >>> 12),
    saving: false,
    fencedReason: null as string | null,
    snapshot: '',
    get spec() {
      return { name: 'kv', guest: 'kvserver', ram: vm.ramBlocks.map((b) => b.spec), args: {} };
    },
    pauseAndSave: () => {
      log.push('pause');
      vm.currentState = 'paused';
      vm.lastPauseAtMs = 1000;
      return Promise.resolve({ published: false as const, state: machineState, pausedAtMs: 1000 });
    },
    /** Each pause lasts 0.25 ms; a later one begins 1 s after the last start. */
    resume: () => {
      log.push('resume');
      vm.currentState = 'running';
      vm.lastRunAtMs = vm.lastPauseAtMs + 0.25;
      return Promise.resolve(vm.info());
    },
    pause: () => {
      log.push('pause');
      vm.currentState = 'paused';
      vm.lastPauseAtMs = vm.lastRunAtMs + 1000;
      return Promise.resolve(vm.info());
    },
    harvestDirty: () => {
      log.push('harvest');
      const harvested = vm.dirty.clone();
      vm.dirty.clearAll();
      return Promise.resolve(harvested);
    },
    beginSave: () => {
      if (vm.saving) throw new Error('a second beginSave');
      vm.saving = true;
      return { pause: vm.pause, resume: vm.resume, end: () => (vm.saving = false) };
    },
    fence: (reason: string) => {
      vm.fencedReason ??= reason;
      log.push('fence');
    },
    runsFrom: (s: string) => {
      vm.snapshot = s;
    },
    info: () =>
      ({ name: 'kv', state: vm.currentState, snapshot: vm.snapshot }) as unknown as VmInfo,
  };
  const host = {
    get: () => vm,
    ramContext: () => ctx,
    rebacked: (_vm: unknown, k: number, b: RamBacking) => {
      vm.ramBlocks[k] = b;
      log.push('rebacked');
    },
    destroy: () => {
      log.push('destroy');
      return Promise.resolve();
    },
  };
  return { vm, asVm: vm as unknown as Vm, host: host as unknown as VmHost };
}

const PAGE = 4096;

/**
 * A VM of one block of `backend` RAM (clone: of snapshot `tpl`, region r1; shared: region r1,
 * owned) whose main RAM wrote `touched`, over a memstore that creates each save region as a
 * file in `dir` and answers CreateSnapshot with `answer(request)` (`create` 'ok') or refuses
 * it (SNAPSHOT_INVALID). `log` has the memstore calls and the VM's steps in order.
 */
export function copyingSave(
  dir: string,
  backend: 'clone' | 'shared',
  touched: number[],
  create: 'ok' | 'refuse',
  answer: (req: msPb.CreateSnapshotRequest) => msPb.Snapshot,
) {
  const log: string[] = [];
  const asked: { method: string; request: unknown }[] = [];
  let regions = 0;
  const ok =
    (method: string, res: (req: unknown) => unknown) =>
    (req: unknown, _md: unknown, _o: unknown, cb: Callback) => {
      asked.push({ method, request: req });
      log.push(method);
      cb(null, res(req));
    };
  const client = {
    getSnapshot: ok('getSnapshot', () => ({
      snapshot: snapshotPb('tpl'),
      deviceState: new Uint8Array(0),
    })),
    createRegion: ok('createRegion', (req) => {
      const path = join(dir, `region-${++regions}`);
      writeFileSync(path, new Uint8Array(0));
      return { region: { id: `new${regions}`, name: (req as { name: string }).name, path } };
    }),
    acquireLease: ok('acquireLease', () => ({ lease: { epoch: 3n } })),
    releaseLease: ok('releaseLease', () => ({})),
    deleteRegion: ok('deleteRegion', () => ({})),
    createSnapshot(req: msPb.CreateSnapshotRequest, _md: unknown, _o: unknown, cb: Callback) {
      asked.push({ method: 'createSnapshot', request: req });
      log.push('createSnapshot');
      if (create === 'ok') {
        cb(null, { snapshot: answer(req) });
        return;
      }
      const metadata = new grpc.Metadata();
      metadata.set(ERROR_CODE_METADATA_KEY, 'SNAPSHOT_INVALID');
      cb({ code: grpc.status.INVALID_ARGUMENT, details: 'no', metadata });
    },
  };
  const ctx = {
    vmmId: 'vmm-a',
    vmName: 'kv',
    memstore: () => client,
    memstoreAddress: '127.0.0.1:1',
    deadlineMs: 1000,
    logger,
  } as unknown as RamContext;
  const buffer = new SharedArrayBuffer(SIZE);
  const ram = new Uint8Array(buffer);
  for (const p of touched) ram.fill(0x40 + p, p * PAGE, (p + 1) * PAGE);
  ram.fill(0xee, 100 * PAGE, 101 * PAGE); // the template's page (not written by the clone)
  const block = {
    spec: { id: 'ram0', guestBase: 0x8000_0000, size: SIZE, backend, region: 'kv-ram0' },
    buffer,
    regionRef: {
      regionId: 'r1',
      regionName: 'kv-ram0',
      epoch: 0,
      size: SIZE,
      identity: 'i1',
      memstore: '',
    },
    zeroed: false,
  } as unknown as RamBacking;
  const vm = {
    name: 'kv',
    log: logger,
    currentState: 'running',
    ramBlocks: [block],
    lastRunAtMs: 0,
    spec: { name: 'kv', guest: 'kvserver', ram: [block.spec], args: {} },
    touchedPages: PageBitmap.fromIndices(SIZE / PAGE, touched),
    harvestDirty: () => {
      log.push('harvest');
      return Promise.resolve(new PageBitmap(SIZE / PAGE));
    },
    pauseAndSave: () => {
      log.push('pause');
      vm.currentState = 'paused';
      return Promise.resolve({ published: false, state: machineState, pausedAtMs: 1000 });
    },
    resume: () => {
      log.push('resume');
      vm.currentState = 'running';
      vm.lastRunAtMs = 1000.5;
      return Promise.resolve({ name: 'kv', state: 2 });
    },
    info: () => ({ name: 'kv', snapshot: 'tpl' }),
  };
  const host = { ramContext: () => ctx, destroy: () => Promise.resolve() } as unknown as VmHost;
  return { log, asked, host, vm: vm as unknown as Vm, ram };
}
