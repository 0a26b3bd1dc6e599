/**
 * Fakes of the save-restore layer's unit tests: a VM, its host and memstore, recording what
 * was asked of them in order.
 */
import * as grpc from '@grpc/grpc-js';
import { PageBitmap } from '@handoff/bitmap';
import { memstore as msPb } from '@handoff/proto';
import { createLogger, ERROR_CODE_METADATA_KEY } from '@handoff/service';
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
