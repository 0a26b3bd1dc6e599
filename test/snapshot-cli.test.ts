import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
  closeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memstore as pb } from '@handoff/proto';
import { unaryCall } from '@handoff/service';
import {
  memstoreDirs,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { vmctlRunner } from './helpers/vmctl.js';

const MiB = 1 << 20;
const byName = (name: string): pb.RegionSelector => ({ selector: { $case: 'name', value: name } });
const byId = (id: string): pb.RegionSelector => ({ selector: { $case: 'id', value: id } });

interface SnapshotJson {
  name: string;
  kind: string;
  template: boolean;
  vm: string;
  memory: number;
  'stored-bytes': number;
  clones: string[];
  blocks: {
    id: string;
    region: string;
    'region-id': string;
    owned: boolean;
    'stored-bytes': number;
  }[];
}

/**
 * vmctl's snapshot commands against a real memstore: a snapshot made the way a vmm's full save
 * makes one (a region filled, then CreateSnapshot), then listed, shown, exported to a file,
 * imported back (as a template), refused when the file is damaged, and deleted.
 */
describe('vmctl snapshot against a real memstore', () => {
  let dirs: MemstoreDirs;
  let ms: MemstoreUnderTest;
  let work: string;
  let env: NodeJS.ProcessEnv;
  /** What the saved VM's RAM held: two written stretches, the rest never written (holes). */
  const ram = Buffer.alloc(4 * MiB);

  const { run: vmctl, json } = vmctlRunner(() => env);

  beforeAll(async () => {
    dirs = memstoreDirs();
    ms = await startMemstoreProcess(dirs);
    work = mkdtempSync(join(tmpdir(), 'handoff-snapshot-cli-'));
    env = {
      ...process.env,
      HANDOFF_MEMSTORE_ADDR: ms.process.address,
      HANDOFF_MIGRATOR_ADDR: '127.0.0.1:9',
    };
    // a VM's RAM in a region of its own, as a full save writes it: some pages, holes elsewhere
    randomBytes(64 * 1024).copy(ram, 0);
    randomBytes(3 * 4096).copy(ram, 3 * MiB + 8192);
    const { region } = await unaryCall(ms.client, 'createRegion', {
      name: 'src-ram0',
      size: BigInt(ram.length),
      kind: pb.RegionKind.REGION_KIND_PERSISTENT,
    });
    const fd = openSync(region!.path, 'r+');
    writeSync(fd, ram, 0, 64 * 1024, 0);
    writeSync(fd, ram, 3 * MiB + 8192, 3 * 4096, 3 * MiB + 8192);
    closeSync(fd);
    await unaryCall(ms.client, 'createSnapshot', {
      name: 'src-snap',
      template: false,
      kind: pb.SnapshotKind.SNAPSHOT_KIND_FULL,
      vmName: 'src',
      vmSpec: new Uint8Array([1, 2, 3]),
      deviceState: new Uint8Array(5000).map((_, i) => i & 0xff),
      blocks: [
        {
          id: 'ram0',
          guestBase: 0x8000_0000n,
          size: BigInt(ram.length),
          region: byName('src-ram0'),
          epoch: 0n,
          owned: true,
          layerPages: new Uint8Array(0),
        },
      ],
      holder: 'test-vmm/src',
      parent: '',
    });
  });

  afterAll(async () => {
    await ms?.stop();
    dirs?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('lists and shows a snapshot: kind, blocks and their regions, sizes', async () => {
    const list = await vmctl('snapshot', 'list');
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^src-snap +full +no +src@test-vmm +4 MiB /m);
    const { snapshot } = await json<{ snapshot: SnapshotJson }>('snapshot', 'show', 'src-snap');
    expect(snapshot).toMatchObject({
      name: 'src-snap',
      kind: 'full',
      template: false,
      vm: 'src',
      memory: 4 * MiB,
      clones: [],
    });
    expect(snapshot.blocks).toEqual([
      expect.objectContaining({ id: 'ram0', region: 'src-ram0', owned: true }),
    ]);
    // holes are not stored: about the 76 KiB written, not 4 MiB
    expect(snapshot.blocks[0]!['stored-bytes']).toBeLessThan(MiB);
    const table = await vmctl('snapshot', 'show', 'src-snap');
    expect(table.stdout).toMatch(
      /^block ram0: +0x80000000 4 MiB, region src-ram0 \(owned by the snapshot\)/m,
    );
    expect(table.stdout).toMatch(/^clones: +none$/m);
  });

  it('exports to a file and imports it back as a template with the same memory', async () => {
    const file = join(work, 'src.snap');
    const out = await json<{ exported: { file: string; bytes: number } }>(
      'snapshot',
      'export',
      'src-snap',
      file,
    );
    expect(out.exported.bytes).toBe(statSync(file).size);
    expect(existsSync(`${file}.partial`)).toBe(false);
    // holes skipped: far smaller than the RAM
    expect(out.exported.bytes).toBeLessThan(MiB);
    const again = await vmctl('snapshot', 'export', 'src-snap', file);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/exists; pass --force/);
    expect((await vmctl('snapshot', 'export', 'src-snap', file, '--force')).code).toBe(0);

    const imported = await vmctl('snapshot', 'import', file, '--as', 'copy', '--template');
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stdout).toMatch(/^imported .*src\.snap as template copy \(4 MiB of memory, /m);
    const { snapshot } = await json<{ snapshot: SnapshotJson }>('snapshot', 'show', 'copy');
    expect(snapshot).toMatchObject({ kind: 'imported', template: true, vm: 'src' });
    const { region } = await unaryCall(ms.client, 'getRegion', {
      region: byId(snapshot.blocks[0]!['region-id']),
    });
    expect(region!.state).toBe(pb.RegionState.REGION_STATE_SEALED);
    expect(readFileSync(region!.path).equals(ram)).toBe(true);
    const templates = await vmctl('template', 'list');
    expect(templates.stdout).toMatch(/^copy +imported +yes /m);
    expect(templates.stdout).not.toMatch(/^src-snap/m);
  });

  it('refuses a damaged or truncated file and leaves nothing behind', async () => {
    const file = join(work, 'src.snap');
    const good = readFileSync(file);
    const flipped = Buffer.from(good);
    flipped[Math.floor(flipped.length / 2)]! ^= 0x40;
    const cases: [string, Buffer][] = [
      ['flipped.snap', flipped],
      ['short.snap', good.subarray(0, good.length - 100)],
    ];
    for (const [name, bytes] of cases) {
      writeFileSync(join(work, name), bytes);
      const r = await vmctl(
        'snapshot',
        'import',
        join(work, name),
        '--as',
        'bad',
        '--output',
        'json',
      );
      expect(r.code, name).toBe(1);
      expect(JSON.parse(r.stdout)).toMatchObject({ error: { code: 'SNAPSHOT_FORMAT' } });
    }
    const list = await json<{ snapshots: SnapshotJson[] }>('snapshot', 'list');
    expect(list.snapshots.map((s) => s.name).sort()).toEqual(['copy', 'src-snap']);
  });

  it('deletes a snapshot once no VM runs from it; template delete takes templates only', async () => {
    const notTemplate = await vmctl('template', 'delete', 'src-snap');
    expect(notTemplate.code).toBe(2);
    expect(notTemplate.stderr).toMatch(/src-snap is a snapshot, not a template/);
    const { snapshot } = await json<{ snapshot: SnapshotJson }>('snapshot', 'show', 'copy');
    const region = byId(snapshot.blocks[0]!['region-id']);
    await unaryCall(ms.client, 'attachClone', { template: region, holder: 'test-vmm/c1' });
    const busy = await vmctl('template', 'delete', 'copy');
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/test-vmm\/c1/);
    const shown = await vmctl('template', 'show', 'copy');
    // the clone's vmm is not registered here (no migrator): said per clone, not a failure
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/^clones: +1: test-vmm\/c1$/m);
    expect(shown.stdout).toMatch(
      /^c1 +test-vmm +- +- +- +- +the migrator did not list the vmm instances/m,
    );
    await unaryCall(ms.client, 'detachClone', { template: region, holder: 'test-vmm/c1' });
    expect((await vmctl('template', 'delete', 'copy')).code).toBe(0);
    expect((await vmctl('snapshot', 'delete', 'src-snap')).code).toBe(0);
    const list = await json<{ snapshots: SnapshotJson[] }>('snapshot', 'list');
    expect(list.snapshots).toEqual([]);
  });
});
