import type { memstore as msPb } from '@handoff/proto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { layerSave } from './layer-save.js';
import { copyingSave, SIZE, snapshotPb } from './test-support.js';
import type { SaveRequest } from './types.js';

const PAGE = 4096;
const dir = mkdtempSync(join(tmpdir(), 'handoff-layer-save-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const request: SaveRequest = {
  name: 'kv',
  snapshot: 'layer1',
  full: false,
  stop: false,
  template: true,
  jobId: 'j1',
};

/** A clone of snapshot `tpl` whose main RAM wrote `touched`, over a file-backed memstore. */
function setup(touched: number[], create: 'ok' | 'refuse') {
  return copyingSave(dir, 'clone', touched, create, (req) =>
    snapshotPb('layer1', {
      parent: 'tpl',
      depth: 1,
      blocks: [
        { ...snapshotPb('x').blocks[0]!, regionId: 'new1', layerPages: req.blocks[0]!.layerPages },
      ],
    }),
  );
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
