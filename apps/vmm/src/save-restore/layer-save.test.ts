import * as grpc from '@grpc/grpc-js';
import { PageBitmap } from '@handoff/bitmap';
import type { memstore as msPb } from '@handoff/proto';
import { ERROR_CODE_METADATA_KEY } from '@handoff/service';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { RamBacking, RamContext } from '../ram/index.js';
import type { VmHost } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';
import { layerSave } from './layer-save.js';
import { logger, machineState, SIZE, snapshotPb } from './test-support.js';
import type { SaveRequest } from './types.js';

const PAGE = 4096;
const dir = mkdtempSync(join(tmpdir(), 'handoff-layer-save-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Callback = (err: Partial<grpc.ServiceError> | null, res?: unknown) => void;

const request: SaveRequest = {
  name: 'kv',
  snapshot: 'layer1',
  full: false,
  stop: false,
  template: true,
  jobId: 'j1',
};

/**
 * A clone VM of snapshot `tpl` (region r1) whose main RAM wrote `touched`, over a memstore that
 * creates each save region as a file in `dir` and answers CreateSnapshot with `create`.
 */
function setup(touched: number[], create: 'ok' | 'refuse') {
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
        cb(null, {
          snapshot: snapshotPb('layer1', {
            parent: 'tpl',
            depth: 1,
            blocks: [
              {
                ...snapshotPb('x').blocks[0]!,
                regionId: 'new1',
                layerPages: req.blocks[0]!.layerPages,
              },
            ],
          }),
        });
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
    spec: { id: 'ram0', guestBase: 0x8000_0000, size: SIZE, backend: 'clone', region: 'kv-ram0' },
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

describe('a layer save of a clone', () => {
  it('writes only the pages the clone wrote, names its snapshot as parent and those pages, and resumes', async () => {
    const touched = [0, 1, 2, 9, 200];
    const s = setup(touched, 'ok');
    const result = await layerSave(s.host, s.vm, request);
    expect(s.log).toEqual([
      'getSnapshot', // the parent, by the name the VM runs from
      'createRegion',
      'acquireLease',
      'pause',
      'harvest',
      'resume', // the layer's pages are in its files: the guest does not wait for memstore
      'createSnapshot',
    ]);
    const req = s.asked.find((a) => a.method === 'createSnapshot')!
      .request as msPb.CreateSnapshotRequest;
    expect(req.parent).toBe(snapshotPb('tpl').id);
    expect(req.template).toBe(true);
    expect(req.blocks).toHaveLength(1);
    expect(req.blocks[0]).toMatchObject({ id: 'ram0', owned: true, size: BigInt(SIZE), epoch: 3n });
    const bits = req.blocks[0]!.layerPages;
    expect(bits.length).toBe(SIZE / PAGE / 8);
    const set = Array.from({ length: SIZE / PAGE }, (_, p) => p).filter(
      (p) => (bits[p >> 3]! >> (p & 7)) & 1,
    );
    expect(set).toEqual(touched);
    // the region holds the written pages at their offsets, and nothing else (holes read zero)
    const file = readFileSync(join(dir, 'region-1'));
    for (const p of touched) expect(file[p * PAGE + 7]).toBe((0x40 + p) & 0xff);
    expect(file.length).toBeLessThanOrEqual(201 * PAGE);
    expect(file.subarray(100 * PAGE, 101 * PAGE).every((x) => x === 0)).toBe(true);
    expect(result.bytes).toBeGreaterThanOrEqual(touched.length * PAGE);
    expect(result.pauseUs).toBe(500);
    expect(result.snapshot).toMatchObject({ name: 'layer1', parent: 'tpl', depth: 1 });
  });

  it('resumes the guest once the pages are copied, and deletes its region when memstore refuses the layer', async () => {
    const s = setup([3], 'refuse');
    await expect(layerSave(s.host, s.vm, request)).rejects.toMatchObject({
      code: 'SNAPSHOT_INVALID',
    });
    // The guest resumed once the pages were copied; the refused layer's region goes.
    expect(s.log.slice(-4)).toEqual(['resume', 'createSnapshot', 'releaseLease', 'deleteRegion']);
    expect(s.vm.currentState).toBe('running');
  });
});
