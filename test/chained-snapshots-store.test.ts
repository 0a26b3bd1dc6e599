import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memstore as pb } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { vmctlRunner } from './helpers/vmctl.js';

const PAGE = 4096;
const PAGES = 256; // a 1 MiB block
const SIZE = PAGES * PAGE;
const byId = (id: string): pb.RegionSelector => ({ selector: { $case: 'id', value: id } });

/** Pages each level of the chain writes, bottom first: [first page, count]. */
const LEVELS: Record<string, [number, number][]> = {
  base: [
    [0, 16],
    [100, 4],
  ],
  l1: [
    [8, 16],
    [200, 1],
  ],
  l2: [
    [10, 2],
    [101, 1],
    [255, 1],
  ],
};
const PARENT: Record<string, string> = { base: '', l1: 'base', l2: 'l1' };

function bitmapOf(runs: [number, number][]): Uint8Array {
  const bits = new Uint8Array(PAGES / 8);
  for (const [first, count] of runs) {
    for (let p = first; p < first + count; p++) bits[p >> 3]! |= 1 << (p & 7);
  }
  return bits;
}

/**
 * Chained snapshots in a real memstore, no vmm: a base snapshot and two layers on it made with
 * CreateSnapshot from region files written by hand (each layer's file holds only its pages,
 * its bitmap says which), then what a vmm and an operator see of them: AttachClone answering
 * the chain (whose composition is the top layer's memory), vmctl's list/show with parents and
 * layer pages, `template flatten`, an export of a layer that re-imports standalone, the
 * deletion rule, and hostile requests refused.
 */
describe('chained snapshots in memstore (over gRPC and vmctl)', () => {
  let dirs: MemstoreDirs;
  let ms: MemstoreUnderTest;
  let work: string;
  let env: NodeJS.ProcessEnv;
  const { run: vmctl, json } = vmctlRunner(() => env);
  /** Each level's own page contents (whole block; only its pages matter). */
  const content: Record<string, Buffer> = {};
  /** The block a clone of each snapshot sees. */
  const composed: Record<string, Buffer> = {};

  beforeAll(async () => {
    dirs = memstoreDirs();
    ms = await startMemstoreProcess(dirs);
    work = mkdtempSync(join(tmpdir(), 'handoff-chain-'));
    env = {
      ...process.env,
      HANDOFF_MEMSTORE_ADDR: ms.process.address,
      HANDOFF_MIGRATOR_ADDR: '127.0.0.1:9',
    };
    let below = Buffer.alloc(SIZE);
    for (const name of ['base', 'l1', 'l2']) {
      content[name] = randomBytes(SIZE);
      const { region } = await unaryCall(ms.client, 'createRegion', {
        name: `${name}-ram`,
        size: BigInt(SIZE),
        kind: pb.RegionKind.REGION_KIND_PERSISTENT,
      });
      const fd = openSync(region!.path, 'r+');
      const image = Buffer.from(below);
      for (const [first, count] of LEVELS[name]!) {
        writeSync(fd, content[name]!, first * PAGE, count * PAGE, first * PAGE);
        content[name]!.copy(image, first * PAGE, first * PAGE, (first + count) * PAGE);
      }
      closeSync(fd);
      composed[name] = image;
      below = image;
      await unaryCall(ms.client, 'createSnapshot', createRequest(name));
    }
  });

  afterAll(async () => {
    await ms?.stop();
    dirs?.cleanup();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  function createRequest(
    name: string,
    over: Partial<pb.SnapshotBlockSource> = {},
  ): pb.CreateSnapshotRequest {
    return {
      name,
      template: true,
      kind: pb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
      vmName: 'kv',
      vmSpec: new Uint8Array([1, 2, 3]),
      deviceState: new Uint8Array(300).fill(name.length),
      blocks: [
        {
          id: 'ram0',
          guestBase: 0x8000_0000n,
          size: BigInt(SIZE),
          region: regionNamed(`${name}-ram`),
          epoch: 0n,
          owned: true,
          layerPages: PARENT[name] ? bitmapOf(LEVELS[name]!) : new Uint8Array(0),
          ...over,
        },
      ],
      holder: 'test-vmm/kv',
      parent: PARENT[name] ?? '',
    };
  }

  /** What a vmm maps for a clone: each file of the answer, its pages over those below. */
  function mapAnswer(layers: pb.CloneLayer[]): Buffer {
    const image = readFileSync(layers[0]!.path);
    for (const layer of layers.slice(1)) {
      const file = readFileSync(layer.path);
      for (let p = 0; p < PAGES; p++) {
        if ((layer.pages[p >> 3]! >> (p & 7)) & 1) {
          file.copy(image, p * PAGE, p * PAGE, (p + 1) * PAGE);
        }
      }
    }
    return image;
  }

  it('AttachClone answers the chain bottom to top, and mapping it gives the layer’s memory', async () => {
    const regions = new Map(
      (await unaryCall(ms.client, 'listRegions', { kind: 0 })).regions.map((r) => [r.name, r]),
    );
    const answer = await unaryCall(ms.client, 'attachClone', {
      template: regionNamed('l2-ram'),
      holder: 'test-vmm/clone1',
    });
    expect(answer.template!.name).toBe('l2-ram');
    expect(
      answer.layers.map((l) => ({
        regionId: l.regionId,
        path: l.path,
        identity: l.identity,
        pages: [...l.pages],
      })),
    ).toEqual(
      ['base', 'l1', 'l2'].map((name) => {
        const r = regions.get(`${name}-ram`)!;
        const pages = PARENT[name] === '' ? [] : [...bitmapOf(LEVELS[name]!)];
        return { regionId: r.id, path: r.path, identity: r.identity, pages };
      }),
    );
    expect(mapAnswer(answer.layers).equals(composed['l2']!)).toBe(true);
    const middle = await unaryCall(ms.client, 'attachClone', {
      template: regionNamed('l1-ram'),
      holder: 'test-vmm/clone2',
    });
    expect(middle.layers).toHaveLength(2);
    expect(mapAnswer(middle.layers).equals(composed['l1']!)).toBe(true);
    for (const [t, h] of [
      ['l2-ram', 'test-vmm/clone1'],
      ['l1-ram', 'test-vmm/clone2'],
    ] as const) {
      await unaryCall(ms.client, 'detachClone', { template: regionNamed(t), holder: h });
    }
  });

  it('vmctl lists parents and depths and shows a layer’s chain and pages', async () => {
    const list = await vmctl('template', 'list');
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^base +bypass +yes +kv@test-vmm +1 MiB +\S+ \S+ +0 +- +0 /m);
    expect(list.stdout).toMatch(/^l2 +bypass +yes +kv@test-vmm +1 MiB +\S+ \S+ +0 +l1 +2 /m);
    const shown = await vmctl('template', 'show', 'l2');
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/^parent: +l1 \(a layer, depth 2: l2 -> l1 -> base;/m);
    expect(shown.stdout).toMatch(/layer pages: 4 of 256 \(10-11, 101, 255\), the rest from l1$/m);
    const { snapshot } = await json<{
      snapshot: {
        depth: number;
        'parent-chain': string[];
        blocks: { 'layer-page-count': number; 'layer-pages': { first: number; count: number }[] }[];
      };
    }>('snapshot', 'show', 'l1');
    expect(snapshot.depth).toBe(1);
    expect(snapshot['parent-chain']).toEqual(['base']);
    expect(snapshot.blocks[0]!['layer-page-count']).toBe(17);
    expect(snapshot.blocks[0]!['layer-pages']).toEqual([
      { first: 8, count: 16 },
      { first: 200, count: 1 },
    ]);
  });

  it('template flatten writes the composition into a standalone template', async () => {
    const out = await json<{
      template: {
        name: string;
        depth: number;
        parent: string | null;
        blocks: { 'region-id': string }[];
      };
    }>('template', 'flatten', 'l2', '--as', 'l2-flat');
    expect(out.template).toMatchObject({ name: 'l2-flat', depth: 0, parent: null });
    const { region } = await unaryCall(ms.client, 'getRegion', {
      region: byId(out.template.blocks[0]!['region-id']),
    });
    expect(region!.state).toBe(pb.RegionState.REGION_STATE_SEALED);
    expect(readFileSync(region!.path).equals(composed['l2']!)).toBe(true);
    const answer = await unaryCall(ms.client, 'attachClone', {
      template: byId(region!.id),
      holder: 'test-vmm/flat1',
    });
    expect(answer.layers.map((l) => l.regionId)).toEqual([region!.id]);
    await unaryCall(ms.client, 'detachClone', {
      template: byId(region!.id),
      holder: 'test-vmm/flat1',
    });
    const refused = await vmctl('template', 'flatten', 'base', '--as', 'base-flat');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/standalone.*nothing to flatten/);
  });

  it('an export of a layer is standalone: it imports as a snapshot equal to the composition', async () => {
    const file = join(work, 'l2.snap');
    const exported = await vmctl('snapshot', 'export', 'l2', file);
    expect(exported.code, exported.stderr).toBe(0);
    const imported = await json<{
      snapshot: { depth: number; parent: string | null; blocks: { 'region-id': string }[] };
    }>('snapshot', 'import', file, '--as', 'l2-copy');
    expect(imported.snapshot).toMatchObject({ depth: 0, parent: null });
    const { region } = await unaryCall(ms.client, 'getRegion', {
      region: byId(imported.snapshot.blocks[0]!['region-id']),
    });
    expect(readFileSync(region!.path).equals(composed['l2']!)).toBe(true);
  });

  it('refuses deleting a parent while layers name it, naming them', async () => {
    const r = await vmctl('snapshot', 'delete', 'base');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/"l1" layer on snapshot "base"; delete them first/);
    const still = await unaryCall(ms.client, 'listSnapshots', { templatesOnly: false });
    expect(still.snapshots.map((s) => s.name)).toContain('base');
  });

  it('refuses hostile layer requests and leaves nothing behind', async () => {
    await unaryCall(ms.client, 'createRegion', {
      name: 'bad-ram',
      size: BigInt(SIZE),
      kind: pb.RegionKind.REGION_KIND_PERSISTENT,
    });
    const before = (await unaryCall(ms.client, 'listSnapshots', { templatesOnly: false }))
      .snapshots;
    const bad = (over: Partial<pb.SnapshotBlockSource>, parent = 'l2') => ({
      ...createRequest('bad', over),
      parent,
    });
    for (const [req, message] of [
      [bad({ layerPages: new Uint8Array(PAGES / 8 - 1) }), /layer_pages is 31 bytes/],
      [bad({ layerPages: new Uint8Array(1 << 16) }), /layer_pages is 65536 bytes/],
      [bad({ guestBase: 0n, layerPages: bitmapOf([]) }), /must match block 0 of parent "l2"/],
      [
        bad({ layerPages: bitmapOf([[0, 1]]) }, ''),
        /gives layer_pages but the snapshot names no parent/,
      ],
      [
        bad({ region: regionNamed('l1-ram'), layerPages: bitmapOf([]) }),
        /region "l1-ram" is a layer of snapshot\(s\) "l1"/,
      ],
      [
        bad({ region: regionNamed('base-ram'), layerPages: bitmapOf([]) }),
        /region "base-ram" is already part of snapshot\(s\) "base"/,
      ],
    ] as const) {
      await expect(unaryCall(ms.client, 'createSnapshot', req)).rejects.toMatchObject({
        code: 'SNAPSHOT_INVALID',
        message: expect.stringMatching(message),
      });
    }
    const after = (await unaryCall(ms.client, 'listSnapshots', { templatesOnly: false })).snapshots;
    expect(after.map((s) => s.name)).toEqual(before.map((s) => s.name));
    const region = (await unaryCall(ms.client, 'getRegion', { region: regionNamed('bad-ram') }))
      .region!;
    expect(region.state).toBe(pb.RegionState.REGION_STATE_ACTIVE);
  });
});
