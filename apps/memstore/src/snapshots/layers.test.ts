import Database from 'better-sqlite3';
import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CATALOG_FILE_NAME } from '../catalog/catalog.js';
import type { Memstore } from '../memstore.js';
import {
  makeTempDirs,
  openTestMemstore,
  type LogEntry,
  type TempDirs,
} from '../testing/fixtures.js';
import {
  bitmapOf,
  composedImage,
  fileBytes,
  LAYER_BLOCK,
  layerRequest,
  makeBase,
  makeLayer,
  PAGE,
  writePages,
  type PageFills,
} from '../testing/layers.js';
import { exportSections } from './export-writer.js';
import { layerBitmapOf } from './layer-pages.js';
import type { NewSnapshot } from './snapshot.js';

let dirs: TempDirs;
let m: Memstore;

beforeEach(() => {
  dirs = makeTempDirs();
  ({ memstore: m } = openTestMemstore(dirs));
});

afterEach(() => {
  m.close();
  dirs.cleanup();
});

const BASE: PageFills = [
  [0, 0x10],
  [1, 0x11],
  [2, 0x12],
  [5, 0x15],
];
const L1: PageFills = [
  [1, 0x21],
  [2, 0x22],
  [7, 0x27],
];
const L2: PageFills = [
  [2, 0x32],
  [3, 0], // written with zeros by the guest: in the layer, a hole in its file
  [11, 0x3b],
];

const stateFiles = (): string[] => readdirSync(m.snapshots.stateDir);
const modeOf = (path: string): number => statSync(path).mode & 0o777;

async function threeLevels(): Promise<void> {
  await makeBase(m, 'base', BASE);
  await makeLayer(m, 'l1', 'base', L1);
  await makeLayer(m, 'l2', 'l1', L2);
}

describe('CreateSnapshot of a layer', () => {
  it('records the parent, the depth and each block’s layer pages in every answer', async () => {
    await threeLevels();
    const byName = new Map(m.snapshots.list().map((s) => [s.name, s]));
    expect([...byName.values()].map((s) => [s.name, s.parent, s.depth])).toEqual([
      ['base', undefined, 0],
      ['l1', 'base', 1],
      ['l2', 'l1', 2],
    ]);
    expect(byName.get('base')!.blocks[0]).toMatchObject({
      layerPages: undefined,
      layerPageCount: 0,
    });
    expect(byName.get('l1')!.blocks[0]).toMatchObject({
      layerPages: bitmapOf(L1),
      layerPageCount: 3,
    });
    const l2 = m.snapshots.get({ name: 'l2' }).snapshot;
    expect(l2.blocks[0]).toMatchObject({
      id: LAYER_BLOCK.id,
      regionName: 'l2-ram',
      owned: true,
      layerPages: new Uint8Array([0b0000_1100, 0b0000_1000]),
      layerPageCount: 3,
    });
    expect(l2).toMatchObject({ parent: 'l1', depth: 2, template: true });
    // The layer's region is sealed like any snapshot's.
    expect(m.regions.get({ name: 'l2-ram' }).state).toBe('sealed');
  });

  it('AttachClone answers the chain bottom to top; a root answers itself alone', async () => {
    await threeLevels();
    const region = (name: string) => m.regions.get({ name });
    const top = m.templates.attachCloneChain({ name: 'l2-ram' }, 'vmm-b/c1');
    expect(top.template.name).toBe('l2-ram');
    expect(top.template.mappedBy).toEqual(['vmm-b/c1']);
    expect(top.chain).toEqual(
      ['base-ram', 'l1-ram', 'l2-ram'].map((name, i) => ({
        regionId: region(name).id,
        regionName: name,
        path: region(name).path,
        identity: region(name).identity,
        pages: [undefined, bitmapOf(L1), bitmapOf(L2)][i],
      })),
    );
    expect(
      m.templates.attachCloneChain({ name: 'l1-ram' }, 'vmm-b/c2').chain.map((c) => c.regionName),
    ).toEqual(['base-ram', 'l1-ram']);
    const root = m.templates.attachCloneChain({ name: 'base-ram' }, 'vmm-b/c3').chain;
    expect(root).toEqual([expect.objectContaining({ regionName: 'base-ram', pages: undefined })]);
    // Only the attached region is pinned by the clone; its snapshot reports it.
    expect(m.snapshots.get({ name: 'l2' }).snapshot.clones).toEqual(['vmm-b/c1']);
  });

  it('refuses an attach whose chain has a lost region below, recording no clone', async () => {
    await threeLevels();
    const base = m.regions.get({ name: 'base-ram' });
    m.close();
    unlinkSync(base.path);
    ({ memstore: m } = openTestMemstore(dirs));
    expect(() => m.templates.attachCloneChain({ name: 'l2-ram' }, 'vmm-b/c1')).toThrow(
      expect.objectContaining({
        code: 'REGION_LOST',
        message: expect.stringMatching(/"base-ram" \(below "l2-ram" in its chain\)/),
      }),
    );
    expect(m.regions.get({ name: 'l2-ram' }).mappedBy).toEqual([]);
  });

  it('deletion: a parent is refused while a layer names it, naming the layers', async () => {
    await threeLevels();
    await makeLayer(m, 'l1b', 'base', [[4, 0x44]]);
    expect(() => m.snapshots.delete({ name: 'base' })).toThrow(
      expect.objectContaining({
        code: 'SNAPSHOT_IN_USE',
        message: expect.stringMatching(/"l1", "l1b" layer on snapshot "base"; delete them first/),
      }),
    );
    expect(() => m.snapshots.delete({ name: 'l1' })).toThrow(
      expect.objectContaining({
        code: 'SNAPSHOT_IN_USE',
        message: expect.stringContaining('"l2"'),
      }),
    );
    m.templates.attachClone({ name: 'l2-ram' }, 'vmm-b/c1');
    expect(() => m.snapshots.delete({ name: 'l2' })).toThrow(
      expect.objectContaining({
        code: 'SNAPSHOT_IN_USE',
        message: expect.stringContaining('vmm-b/c1'),
      }),
    );
    m.templates.detachClone({ name: 'l2-ram' }, 'vmm-b/c1');
    for (const name of ['l2', 'l1', 'l1b', 'base']) m.snapshots.delete({ name });
    expect(m.snapshots.list()).toEqual([]);
    expect(m.regions.list()).toEqual([]);
    expect(stateFiles()).toEqual([]);
  });
});

describe('CreateSnapshot refuses hostile layer requests and leaves nothing behind', () => {
  const pages = LAYER_BLOCK.size / PAGE;
  const good = bitmapOf([[1, 1]]);
  const refusals: Array<[string, () => NewSnapshot, RegExp]> = [
    [
      'a bitmap one byte short',
      () => layerRequest('bad', 'new-ram', { parent: 'base', layerPages: new Uint8Array(1) }),
      /layer_pages is 1 bytes, but a block of 12 pages needs exactly 2/,
    ],
    [
      'a bitmap one byte long',
      () => layerRequest('bad', 'new-ram', { parent: 'base', layerPages: new Uint8Array(3) }),
      /layer_pages is 3 bytes/,
    ],
    [
      'a parent without layer_pages',
      () => layerRequest('bad', 'new-ram', { parent: 'base' }),
      /layer_pages is 0 bytes/,
    ],
    [
      'bits past the last page',
      () =>
        layerRequest('bad', 'new-ram', {
          parent: 'base',
          layerPages: layerBitmapOf(16, [{ firstPage: 12, pageCount: 1 }]),
        }),
      /sets bits past the block's last page \(11\)/,
    ],
    [
      'layer_pages without a parent',
      () => layerRequest('bad', 'new-ram', { layerPages: good }),
      /gives layer_pages but the snapshot names no parent/,
    ],
    [
      'an unknown parent',
      () => layerRequest('bad', 'new-ram', { parent: 'ghost', layerPages: good }),
      /parent snapshot "ghost" does not exist/,
    ],
    [
      'a block id not the parent’s',
      () => {
        const r = layerRequest('bad', 'new-ram', { parent: 'base', layerPages: good });
        return { ...r, blocks: [{ ...r.blocks[0]!, id: 'other' }] };
      },
      /must match block 0 of parent "base" \("ram0" at 0x80000000, 49152 \(48 KiB\)\), not "other"/,
    ],
    [
      'a guest base not the parent’s',
      () => {
        const r = layerRequest('bad', 'new-ram', { parent: 'base', layerPages: good });
        return { ...r, blocks: [{ ...r.blocks[0]!, guestBase: 0 }] };
      },
      /must match block 0 of parent "base"/,
    ],
    [
      'a block size not the parent’s',
      () => {
        const r = layerRequest('bad', 'big-ram', { parent: 'base', layerPages: good });
        return { ...r, blocks: [{ ...r.blocks[0]!, size: 2 * LAYER_BLOCK.size }] };
      },
      /must match block 0 of parent "base"/,
    ],
    [
      'more blocks than the parent',
      () => {
        const r = layerRequest('bad', 'new-ram', { parent: 'base', layerPages: good });
        return {
          ...r,
          blocks: [
            r.blocks[0]!,
            { ...r.blocks[0]!, id: 'ram1', guestBase: 0, region: { name: 'big-ram' } },
          ],
        };
      },
      /parent "base" has 1 \("ram0"\) but 2 were given/,
    ],
    [
      'a region of another size',
      () => layerRequest('bad', 'small-ram', { parent: 'base', layerPages: good }),
      /region "small-ram" holds 4096 \(4 KiB\); a snapshot block must be exactly its region/,
    ],
    [
      'a region it does not own',
      () => {
        const r = layerRequest('bad', 'new-ram', { parent: 'base', layerPages: good });
        return { ...r, blocks: [{ ...r.blocks[0]!, owned: false }] };
      },
      /a layer must own its regions/,
    ],
    [
      'the parent’s own region as the layer’s',
      () => layerRequest('bad', 'base-ram', { parent: 'base', layerPages: good }),
      /region "base-ram" is already part of snapshot\(s\) "base"/,
    ],
    [
      'another layer’s region as a standalone block',
      () => {
        const r = layerRequest('bad', 'l1-ram');
        return { ...r, blocks: [{ ...r.blocks[0]!, owned: false }] };
      },
      /region "l1-ram" is a layer of snapshot\(s\) "l1"/,
    ],
  ];

  it.each(refusals)('refuses %s', async (_what, req, message) => {
    await makeBase(m, 'base', BASE);
    await makeLayer(m, 'l1', 'base', L1);
    const fresh = m.regions.create({ name: 'new-ram', size: LAYER_BLOCK.size, kind: 'persistent' });
    m.regions.create({ name: 'small-ram', size: PAGE, kind: 'persistent' });
    m.regions.create({ name: 'big-ram', size: 2 * LAYER_BLOCK.size, kind: 'persistent' });
    writePages(fresh.path, [[1, 9]]);
    expect(pages).toBe(12);
    const before = { snapshots: m.snapshots.list(), files: stateFiles() };

    await expect(m.snapshots.create(req())).rejects.toMatchObject({
      code: 'SNAPSHOT_INVALID',
      message: expect.stringMatching(message),
    });
    expect(m.snapshots.list()).toEqual(before.snapshots);
    expect(stateFiles()).toEqual(before.files);
    for (const name of ['new-ram', 'small-ram', 'big-ram']) {
      const r = m.regions.get({ name });
      expect(r.state).toBe('active');
      expect(modeOf(r.path)).toBe(0o600);
    }
    // The same region makes a good layer afterwards.
    await m.snapshots.create(layerRequest('fine', 'new-ram', { parent: 'base', layerPages: good }));
    expect(m.snapshots.get({ name: 'fine' }).snapshot.depth).toBe(1);
  });
});

describe('FlattenSnapshot', () => {
  it('writes the composition of a three-level chain into a standalone snapshot; the original stays', async () => {
    await threeLevels();
    const l2 = m.snapshots.get({ name: 'l2' }, true);
    const flat = await m.flattenSnapshot({ name: 'l2' }, 'flat');
    expect(flat).toMatchObject({
      name: 'flat',
      kind: 'full',
      template: true,
      parent: undefined,
      depth: 0,
      vmName: l2.snapshot.vmName,
      vmSpec: l2.snapshot.vmSpec,
      deviceStateCrc32c: l2.snapshot.deviceStateCrc32c,
    });
    expect(m.snapshots.get({ name: 'flat' }, true).deviceState).toEqual(l2.deviceState);
    const [b] = flat.blocks;
    expect(b).toMatchObject({
      ...LAYER_BLOCK,
      owned: true,
      layerPages: undefined,
      layerPageCount: 0,
    });
    const region = m.regions.get({ id: b!.regionId });
    expect(region).toMatchObject({ kind: 'persistent', state: 'sealed', size: LAYER_BLOCK.size });
    expect(modeOf(region.path)).toBe(0o444);
    expect(fileBytes(region.path)).toEqual(composedImage([BASE, L1, L2]));
    // Pages that are holes in every file of the chain stay holes: 7 of the 12 pages hold data.
    expect(b!.storedBytes).toBeGreaterThan(0);
    expect(b!.storedBytes).toBeLessThanOrEqual(7 * PAGE);
    // A clone of the flat copy maps one region; the chain can go without it touching the copy.
    expect(m.templates.attachCloneChain({ id: region.id }, 'vmm-b/c').chain).toHaveLength(1);
    for (const name of ['l2', 'l1', 'base']) m.snapshots.delete({ name });
    expect(fileBytes(region.path)).toEqual(composedImage([BASE, L1, L2]));
    expect(m.snapshots.list().map((s) => s.name)).toEqual(['flat']);
  });

  it('flattens a middle layer to its own composition', async () => {
    await threeLevels();
    const flat = await m.flattenSnapshot({ name: 'l1' }, 'flat1');
    const region = m.regions.get({ id: flat.blocks[0]!.regionId });
    expect(fileBytes(region.path)).toEqual(composedImage([BASE, L1]));
  });

  const refusals: Array<[string, string, string, string, RegExp]> = [
    ['a standalone snapshot', 'base', 'flat', 'SNAPSHOT_INVALID', /standalone.*nothing to flatten/],
    ['a name in use', 'l2', 'l1', 'SNAPSHOT_EXISTS', /"l1" already exists/],
    ['a bad name', 'l2', '../x', 'SNAPSHOT_INVALID', /name/],
    ['an unknown snapshot', 'ghost', 'flat', 'SNAPSHOT_NOT_FOUND', /ghost/],
  ];
  it.each(refusals)('refuses %s, leaving nothing behind', async (_w, from, to, code, message) => {
    await threeLevels();
    const before = { regions: m.regions.list(), files: stateFiles() };
    await expect(m.flattenSnapshot({ name: from }, to)).rejects.toMatchObject({
      code,
      message: expect.stringMatching(message),
    });
    expect(m.regions.list()).toEqual(before.regions);
    expect(stateFiles()).toEqual(before.files);
    expect(m.snapshots.list()).toHaveLength(3);
  });

  it('a failure at the commit removes the new regions and state file', async () => {
    await threeLevels();
    const before = { regions: m.regions.list(), files: stateFiles() };
    const insert = vi.spyOn(m.snapshots, 'insertRecord').mockImplementation(() => {
      throw new Error('disk gone');
    });
    await expect(m.flattenSnapshot({ name: 'l2' }, 'flat')).rejects.toThrow('disk gone');
    insert.mockRestore();
    expect(m.regions.list()).toEqual(before.regions);
    expect(m.catalog.listAllRows()).toHaveLength(before.regions.length);
    expect(stateFiles()).toEqual(before.files);
    expect(readdirSync(dirs.persistentDir).filter((f) => f.startsWith('region-'))).toHaveLength(3);
    await m.flattenSnapshot({ name: 'l2' }, 'flat');
  });
});

describe('ExportSnapshot of a layer', () => {
  async function exportBytes(name: string): Promise<Uint8Array> {
    const plan = m.planExport({ name });
    const parts: Uint8Array[] = [];
    for await (const part of exportSections(plan)) parts.push(part);
    const out = Buffer.concat(parts);
    expect(out.length).toBe(plan.totalBytes);
    return new Uint8Array(out);
  }

  it('writes the composed blocks: the file re-imports as a standalone snapshot equal to the composition', async () => {
    await threeLevels();
    const bytes = await exportBytes('l2');
    const imp = m.beginImport({ name: 'again', template: false });
    await imp.push(bytes);
    const again = await imp.finish();
    expect(again).toMatchObject({ parent: undefined, depth: 0, kind: 'imported', template: true });
    const region = m.regions.get({ id: again.blocks[0]!.regionId });
    expect(fileBytes(region.path)).toEqual(composedImage([BASE, L1, L2]));
    expect(m.snapshots.get({ name: 'again' }, true).deviceState).toEqual(
      m.snapshots.get({ name: 'l2' }, true).deviceState,
    );
    // The export of the flat copy carries the same pages.
    await m.flattenSnapshot({ name: 'l2' }, 'flat');
    const flatImport = m.beginImport({ name: 'flat-again', template: false });
    await flatImport.push(await exportBytes('flat'));
    const flatAgain = await flatImport.finish();
    expect(fileBytes(m.regions.get({ id: flatAgain.blocks[0]!.regionId }).path)).toEqual(
      composedImage([BASE, L1, L2]),
    );
  });

  it('a standalone snapshot exports as before: only its data pages', async () => {
    await makeBase(m, 'base', BASE);
    const plan = m.planExport({ name: 'base' });
    expect(plan.header.blocks[0]!.storedPages).toBe(4);
    expect(plan.sources[0]!.layers).toHaveLength(1);
  });
});

describe('start-up reconciliation of layers', () => {
  it('keeps and reports a layer whose region below is lost; the layer can still be deleted', async () => {
    await threeLevels();
    const l1 = m.regions.get({ name: 'l1-ram' });
    m.close();
    unlinkSync(l1.path);
    let log: LogEntry[];
    ({ memstore: m, log } = openTestMemstore(dirs));
    // l1 lost its own region; l2 lost one below it.
    expect(m.snapshotReport).toMatchObject({ regionsLost: 1, layersBroken: 2, snapshots: 3 });
    const warned = log.filter((e) => e.msg.startsWith('a layer cannot be used'));
    expect(warned.map((e) => e.fields['name'])).toEqual(['l1', 'l2']);
    expect(() => m.templates.attachClone({ name: 'l2-ram' }, 'vmm-b/c')).toThrow(
      expect.objectContaining({ code: 'REGION_LOST' }),
    );
    await expect(m.flattenSnapshot({ name: 'l2' }, 'flat')).rejects.toMatchObject({
      code: 'REGION_LOST',
    });
    expect(() => m.planExport({ name: 'l2' })).toThrow(
      expect.objectContaining({ code: 'REGION_LOST' }),
    );
    m.snapshots.delete({ name: 'l2' });
    m.snapshots.delete({ name: 'l1' });
    m.close();
    ({ memstore: m } = openTestMemstore(dirs));
    expect(m.snapshotReport).toMatchObject({ regionsLost: 0, layersBroken: 0, snapshots: 1 });
  });

  it('reports a layer whose bitmap in the catalog is damaged', async () => {
    await threeLevels();
    const l2 = m.regions.get({ name: 'l2-ram' }).id;
    m.close();
    const db = new Database(join(dirs.stateDir, CATALOG_FILE_NAME));
    db.prepare("UPDATE snapshot_blocks SET layer_pages = x'ff' WHERE region_id = ?").run(l2);
    db.close();
    ({ memstore: m } = openTestMemstore(dirs));
    expect(m.snapshotReport).toMatchObject({ layersBroken: 1 });
    // A clone is never handed a bitmap that does not fit its block.
    expect(() => m.templates.attachCloneChain({ name: 'l2-ram' }, 'vmm-b/c')).toThrow(
      expect.objectContaining({
        code: 'SNAPSHOT_CORRUPT',
        message: expect.stringMatching(/1 bytes, not 2/),
      }),
    );
    m.snapshots.delete({ name: 'l2' });
  });
});
