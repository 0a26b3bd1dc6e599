import type { memstore as msPb } from '@handoff/proto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fullSave } from './full-save.js';
import { copyingSave, SIZE, snapshotPb } from './test-support.js';
import type { SaveRequest } from './types.js';

const PAGE = 4096;
const dir = mkdtempSync(join(tmpdir(), 'handoff-full-save-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const request: SaveRequest = {
  name: 'kv',
  snapshot: 'full1',
  full: true,
  stop: false,
  template: false,
  jobId: 'j1',
};

/** A shared-RAM VM whose main RAM wrote `touched`, over a file-backed memstore. */
function setup(touched: number[], create: 'ok' | 'refuse') {
  return copyingSave(dir, 'shared', touched, create, () =>
    snapshotPb('full1', { blocks: [{ ...snapshotPb('x').blocks[0]!, regionId: 'new1' }] }),
  );
}

describe('a full save', () => {
  it('copies the pages, resumes the guest before the regions are synced and recorded, then answers', async () => {
    const s = setup([0, 5], 'ok');
    const result = await fullSave(s.host, s.vm, request);
    expect(s.log).toEqual([
      'createRegion',
      'acquireLease',
      'pause',
      'harvest',
      'resume', // the copies are in the region's file: the guest does not wait for fsync or memstore
      'createSnapshot',
    ]);
    const req = s.asked.find((a) => a.method === 'createSnapshot')!
      .request as msPb.CreateSnapshotRequest;
    expect(req.parent).toBe('');
    expect(req.blocks[0]).toMatchObject({ id: 'ram0', owned: true, size: BigInt(SIZE), epoch: 3n });
    // every page whose content is unknown is copied: the written ones, and the block's others
    const file = readFileSync(join(dir, 'region-1'));
    expect(file.length).toBe(SIZE);
    expect(file[5 * PAGE + 9]).toBe(0x45);
    expect(file[100 * PAGE]).toBe(0xee);
    expect(result.bytes).toBeGreaterThanOrEqual(SIZE);
    expect(result.pauseUs).toBe(500);
    expect(result.vm).not.toBeNull();
    expect(s.vm.currentState).toBe('running');
  });

  it('deletes its region when memstore refuses the snapshot; the guest runs on', async () => {
    const s = setup([3], 'refuse');
    await expect(fullSave(s.host, s.vm, request)).rejects.toMatchObject({
      code: 'SNAPSHOT_INVALID',
    });
    expect(s.log.slice(-4)).toEqual(['resume', 'createSnapshot', 'releaseLease', 'deleteRegion']);
    expect(s.vm.currentState).toBe('running');
  });

  it('with stop, keeps the guest paused through CreateSnapshot and answers no VM', async () => {
    const s = setup([1], 'ok');
    const result = await fullSave(s.host, s.vm, { ...request, stop: true });
    expect(s.log).toEqual(['createRegion', 'acquireLease', 'pause', 'harvest', 'createSnapshot']);
    expect(result.vm).toBeNull();
    expect(s.vm.currentState).toBe('paused');
  });
});
