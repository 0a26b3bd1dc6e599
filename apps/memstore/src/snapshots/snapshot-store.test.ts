import {
  existsSync,
  readdirSync,
  statSync,
  writeFileSync,
  readFileSync,
  unlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Memstore } from '../memstore.js';
import {
  makeTempDirs,
  openTestMemstore,
  type LogEntry,
  type TempDirs,
} from '../testing/fixtures.js';
import { crc32c } from './crc32c.js';
import type { NewSnapshot, SnapshotBlockSource } from './snapshot.js';
import { STATE_HEADER_BYTES } from './state-file.js';

let dirs: TempDirs;
let m: Memstore;
let log: LogEntry[];

beforeEach(() => {
  dirs = makeTempDirs();
  ({ memstore: m, log } = openTestMemstore(dirs));
});

afterEach(() => {
  m.close();
  dirs.cleanup();
});

const MiB = 1024 * 1024;
const HOLDER = 'vmm-a/vm1';
const STATE = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]);
const modeOf = (path: string): number => statSync(path).mode & 0o777;
const stateFiles = (): string[] => readdirSync(m.snapshots.stateDir);

function block(region: string, over: Partial<SnapshotBlockSource> = {}): SnapshotBlockSource {
  return {
    id: 'ram0',
    guestBase: 0x8000_0000,
    size: MiB,
    region: { name: region },
    epoch: 0,
    owned: false,
    layerPages: new Uint8Array(0),
    ...over,
  };
}

function request(over: Partial<NewSnapshot> = {}): NewSnapshot {
  return {
    name: 'snap1',
    template: false,
    kind: 'bypass',
    vmName: 'vm1',
    vmSpec: new Uint8Array([0x0a, 0x03, 0x76, 0x6d, 0x31]),
    deviceState: STATE,
    blocks: [block('ram')],
    holder: HOLDER,
    parent: '',
    ...over,
  };
}

/** A region leased by HOLDER (epoch 1). */
function leasedRegion(name: string, kind: 'volatile' | 'persistent' = 'volatile', size = MiB) {
  const r = m.regions.create({ name, size, kind });
  m.leases.acquire({ name }, HOLDER);
  return r;
}

describe('CreateSnapshot', () => {
  it('bypass: seals the VM’s leased region in place, releases its lease, records the state', async () => {
    const r = leasedRegion('ram');
    const s = await m.snapshots.create(
      request({ blocks: [block('ram', { epoch: 1, owned: true })] }),
    );
    expect(s).toMatchObject({
      name: 'snap1',
      kind: 'bypass',
      template: false,
      vmName: 'vm1',
      vmmId: 'vmm-a',
      deviceStateBytes: STATE.length,
      deviceStateCrc32c: crc32c(STATE),
      clones: [],
      parent: undefined,
      blocks: [
        {
          id: 'ram0',
          guestBase: 0x8000_0000,
          size: MiB,
          regionId: r.id,
          regionName: 'ram',
          identity: r.identity,
          owned: true,
        },
      ],
    });
    expect(m.regions.get({ name: 'ram' })).toMatchObject({ state: 'sealed', lease: undefined });
    // The file stays where it is (tmpfs), read-only now.
    expect(modeOf(r.path)).toBe(0o444);
    const [file] = stateFiles();
    expect(file).toBe(`snapshot-${m.catalog.catalogId}-${s.id}.state`);
    expect(modeOf(join(m.snapshots.stateDir, file!))).toBe(0o600);
    const got = m.snapshots.get({ name: 'snap1' }, true);
    expect(got.deviceState).toEqual(STATE);
    expect(got.snapshot.vmSpec).toEqual(request().vmSpec);
  });

  it('full: seals an unleased persistent copy it owns; stored bytes count its written pages', async () => {
    const r = m.regions.create({ name: 'copy', size: MiB, kind: 'persistent' });
    writeFileSync(r.path, Buffer.alloc(8192, 7), { flag: 'r+' });
    const s = await m.snapshots.create(
      request({ kind: 'full', template: true, blocks: [block('copy', { owned: true })] }),
    );
    expect(s.blocks[0]!.storedBytes).toBeGreaterThanOrEqual(8192);
    expect(s.storedBytes).toBe(STATE.length + s.blocks[0]!.storedBytes);
    expect(m.regions.get({ name: 'copy' }).state).toBe('sealed');
    expect(m.snapshots.list(true).map((x) => x.name)).toEqual(['snap1']);
  });

  it('pins a region that is sealed already without sealing it again; its bytes are not counted', async () => {
    m.regions.create({ name: 'tpl', size: MiB, kind: 'volatile' });
    await m.templates.seal({ name: 'tpl' }, undefined);
    const s = await m.snapshots.create(request({ blocks: [block('tpl', { epoch: 5 })] }));
    expect(s.blocks[0]!.owned).toBe(false);
    expect(s.storedBytes).toBe(STATE.length);
    // Owning a region another snapshot already names is refused.
    await expect(
      m.snapshots.create(request({ name: 'snap2', blocks: [block('tpl', { owned: true })] })),
    ).rejects.toMatchObject({
      code: 'SNAPSHOT_INVALID',
      message: expect.stringContaining('"snap1"'),
    });
    // Pinning it from a second snapshot is fine.
    await m.snapshots.create(request({ name: 'snap2', blocks: [block('tpl')] }));
    expect(m.snapshots.list().map((x) => x.name)).toEqual(['snap1', 'snap2']);
  });

  const refusals: [string, () => Partial<NewSnapshot>, string, RegExp][] = [
    ['a bad name', () => ({ name: 'Bad/Name' }), 'SNAPSHOT_INVALID', /snapshot name/],
    [
      'an empty device state',
      () => ({ deviceState: new Uint8Array(0) }),
      'SNAPSHOT_INVALID',
      /empty/,
    ],
    [
      'a device state over 4 MiB',
      () => ({ deviceState: new Uint8Array(4 * MiB + 1) }),
      'SNAPSHOT_INVALID',
      /4 MiB/,
    ],
    ['no blocks', () => ({ blocks: [] }), 'SNAPSHOT_INVALID', /at least one/],
    [
      'seventeen blocks',
      () => ({
        blocks: Array.from({ length: 17 }, (_, i) =>
          block('ram', { id: `b${i}`, guestBase: i * MiB, epoch: 1 }),
        ),
      }),
      'SNAPSHOT_INVALID',
      /at most 16/,
    ],
    [
      'a block id twice',
      () => ({ blocks: [block('ram', { epoch: 1 }), block('other', { guestBase: 0 })] }),
      'SNAPSHOT_INVALID',
      /given twice/,
    ],
    [
      'a block of another size than its region',
      () => ({ blocks: [block('ram', { epoch: 1, size: 2 * MiB })] }),
      'SNAPSHOT_INVALID',
      /must be exactly its region/,
    ],
    [
      'a guest base that is not page aligned',
      () => ({ blocks: [block('ram', { epoch: 1, guestBase: 100 })] }),
      'SNAPSHOT_INVALID',
      /page-aligned/,
    ],
    [
      'overlapping blocks',
      () => ({
        blocks: [
          block('ram', { epoch: 1 }),
          block('other', { id: 'ram1', guestBase: 0x8000_0000 + 4096 }),
        ],
      }),
      'SNAPSHOT_INVALID',
      /overlap/,
    ],
    [
      'one region for two blocks',
      () => ({
        blocks: [block('ram', { epoch: 1 }), block('ram', { id: 'ram1', guestBase: 0, epoch: 1 })],
      }),
      'SNAPSHOT_INVALID',
      /both name region/,
    ],
    ['kind imported', () => ({ kind: 'imported' }), 'SNAPSHOT_INVALID', /ImportSnapshot/],
    [
      'a stale epoch',
      () => ({ blocks: [block('ram', { epoch: 7 })] }),
      'LEASE_STALE_EPOCH',
      /epoch 7/,
    ],
    ['a leased region without its lease', () => ({}), 'LEASE_HELD', /leased by "vmm-a\/vm1"/],
    [
      'another holder',
      () => ({ holder: 'vmm-a/vm2', blocks: [block('ram', { epoch: 1 })] }),
      'LEASE_WRONG_HOLDER',
      /vmm-a\/vm1/,
    ],
    ['an unknown region', () => ({ blocks: [block('nope')] }), 'REGION_NOT_FOUND', /nope/],
    [
      'an unknown parent',
      () => ({ parent: 'ghost', blocks: [block('ram', { epoch: 1 })] }),
      'SNAPSHOT_INVALID',
      /ghost/,
    ],
  ];

  it.each(refusals)('refuses %s and leaves nothing behind', async (_what, over, code, message) => {
    const r = leasedRegion('ram');
    m.regions.create({ name: 'other', size: MiB, kind: 'volatile' });
    await expect(m.snapshots.create(request(over()))).rejects.toMatchObject({
      code,
      message: expect.stringMatching(message),
    });
    expect(m.snapshots.list()).toEqual([]);
    expect(stateFiles()).toEqual([]);
    expect(m.regions.get({ name: 'ram' })).toMatchObject({
      state: 'active',
      lease: { holder: HOLDER, epoch: 1 },
    });
    expect(modeOf(r.path)).toBe(0o600);
  });

  it('refuses a name in use (SNAPSHOT_EXISTS)', async () => {
    leasedRegion('ram');
    await m.snapshots.create(request({ blocks: [block('ram', { epoch: 1 })] }));
    m.regions.create({ name: 'other', size: MiB, kind: 'volatile' });
    await expect(m.snapshots.create(request({ blocks: [block('other')] }))).rejects.toMatchObject({
      code: 'SNAPSHOT_EXISTS',
    });
    expect(m.regions.get({ name: 'other' }).state).toBe('active');
    expect(stateFiles()).toHaveLength(1);
  });

  it('a failure after sealing some blocks unseals them: no row, no file, modes restored', async () => {
    const a = leasedRegion('ram');
    const b = m.regions.create({ name: 'other', size: MiB, kind: 'persistent' });
    const insert = vi.spyOn(m.catalog.snapshots, 'insert').mockImplementation(() => {
      throw new Error('disk gone');
    });
    const req = request({
      blocks: [block('ram', { epoch: 1 }), block('other', { id: 'ram1', guestBase: 0 })],
    });
    await expect(m.snapshots.create(req)).rejects.toThrow('disk gone');
    insert.mockRestore();
    expect(stateFiles()).toEqual([]);
    expect(m.regions.get({ name: 'ram' })).toMatchObject({ state: 'active', lease: { epoch: 1 } });
    expect(m.regions.get({ name: 'other' }).state).toBe('active');
    expect([modeOf(a.path), modeOf(b.path)]).toEqual([0o600, 0o600]);
    // And the same call succeeds afterwards.
    await m.snapshots.create(req);
    expect(m.regions.get({ name: 'other' }).state).toBe('sealed');
  });
});

describe('GetSnapshot', () => {
  beforeEach(async () => {
    leasedRegion('ram');
    await m.snapshots.create(request({ blocks: [block('ram', { epoch: 1 })] }));
  });

  const statePath = (): string => join(m.snapshots.stateDir, stateFiles()[0]!);

  it('re-checks the device state on every read: a flipped byte is SNAPSHOT_CORRUPT', () => {
    const bytes = readFileSync(statePath());
    bytes[STATE_HEADER_BYTES + 3]! ^= 0x10;
    writeFileSync(statePath(), bytes);
    // Without the state the snapshot is answered.
    expect(m.snapshots.get({ name: 'snap1' }).snapshot.name).toBe('snap1');
    expect(() => m.snapshots.get({ name: 'snap1' }, true)).toThrow(
      expect.objectContaining({
        code: 'SNAPSHOT_CORRUPT',
        message: expect.stringMatching(/snapshot "snap1".*fails its CRC-32C check/),
      }),
    );
  });

  it('a missing state file is SNAPSHOT_CORRUPT naming the file', () => {
    const path = statePath();
    unlinkSync(path);
    expect(() => m.snapshots.get({ name: 'snap1' }, true)).toThrow(
      expect.objectContaining({ code: 'SNAPSHOT_CORRUPT', message: expect.stringContaining(path) }),
    );
  });

  it('answers SNAPSHOT_NOT_FOUND for an unknown snapshot', () => {
    expect(() => m.snapshots.get({ name: 'nope' })).toThrow(
      expect.objectContaining({ code: 'SNAPSHOT_NOT_FOUND' }),
    );
    expect(m.snapshots.get({ id: m.snapshots.list()[0]!.id }).snapshot.name).toBe('snap1');
  });
});

describe('DeleteSnapshot', () => {
  it('is refused while clones run from it or a child layers on it; then deletes what it owns', async () => {
    const owned = leasedRegion('ram');
    const pinned = m.regions.create({ name: 'tpl', size: MiB, kind: 'volatile' });
    await m.templates.seal({ name: 'tpl' }, undefined);
    await m.snapshots.create(
      request({
        blocks: [
          block('ram', { epoch: 1, owned: true }),
          block('tpl', { id: 'rom', guestBase: 0 }),
        ],
      }),
    );
    m.templates.attachClone({ name: 'ram' }, 'vmm-b/clone1');
    m.templates.attachClone({ name: 'tpl' }, 'vmm-b/clone2');
    expect(m.snapshots.get({ name: 'snap1' }).snapshot.clones).toEqual([
      'vmm-b/clone1',
      'vmm-b/clone2',
    ]);
    expect(() => m.snapshots.delete({ name: 'snap1' })).toThrow(
      expect.objectContaining({
        code: 'SNAPSHOT_IN_USE',
        message: expect.stringMatching(/"vmm-b\/clone1", "vmm-b\/clone2".*destroy those VMs first/),
      }),
    );
    // DeleteRegion of a region a snapshot names is refused, naming the snapshot.
    m.templates.detachClone({ name: 'tpl' }, 'vmm-b/clone2');
    expect(() => m.regions.delete({ name: 'tpl' })).toThrow(
      expect.objectContaining({
        code: 'REGION_IN_USE',
        message: expect.stringContaining('"snap1"'),
      }),
    );
    m.templates.detachClone({ name: 'ram' }, 'vmm-b/clone1');

    m.regions.create({ name: 'other', size: MiB, kind: 'volatile' });
    m.regions.create({ name: 'other-rom', size: MiB, kind: 'volatile' });
    const pages = new Uint8Array(MiB / 4096 / 8);
    await m.snapshots.create(
      request({
        name: 'child',
        parent: 'snap1',
        blocks: [
          block('other', { owned: true, layerPages: pages }),
          block('other-rom', { id: 'rom', guestBase: 0, owned: true, layerPages: pages }),
        ],
      }),
    );
    expect(m.snapshots.get({ name: 'child' }).snapshot.parent).toBe('snap1');
    expect(() => m.snapshots.delete({ name: 'snap1' })).toThrow(
      expect.objectContaining({
        code: 'SNAPSHOT_IN_USE',
        message: expect.stringContaining('"child"'),
      }),
    );
    m.snapshots.delete({ name: 'child' });

    m.snapshots.delete({ name: 'snap1' });
    expect(m.snapshots.list()).toEqual([]);
    expect(stateFiles()).toEqual([]);
    expect(() => m.regions.get({ name: 'ram' })).toThrow(
      expect.objectContaining({ code: 'REGION_NOT_FOUND' }),
    );
    expect(existsSync(owned.path)).toBe(false);
    // The pinned template is only unpinned: still there, deletable now.
    expect(m.regions.get({ name: 'tpl' }).state).toBe('sealed');
    m.regions.delete({ name: 'tpl' });
    expect(existsSync(pinned.path)).toBe(false);
  });
});

describe('start-up reconciliation', () => {
  it('removes a state file without a row; keeps and reports a row whose file or region is gone', async () => {
    const r = leasedRegion('ram');
    await m.snapshots.create(request({ blocks: [block('ram', { epoch: 1 })] }));
    m.regions.create({ name: 'other', size: MiB, kind: 'volatile' });
    await m.snapshots.create(request({ name: 'snap2', blocks: [block('other')] }));
    const [first] = m.snapshots.list();
    const orphan = join(
      m.snapshots.stateDir,
      `snapshot-${m.catalog.catalogId}-${crypto.randomUUID()}.state`,
    );
    const foreign = join(
      m.snapshots.stateDir,
      `snapshot-0123456789abcdef-${crypto.randomUUID()}.state`,
    );
    writeFileSync(orphan, 'x');
    writeFileSync(foreign, 'x');
    m.close();
    unlinkSync(join(m.snapshots.stateDir, `snapshot-${m.catalog.catalogId}-${first!.id}.state`));
    unlinkSync(r.path);

    ({ memstore: m, log } = openTestMemstore(dirs));
    expect(m.snapshotReport).toEqual({
      orphansRemoved: 1,
      stateMissing: 1,
      regionsLost: 1,
      layersBroken: 0,
      snapshots: 2,
    });
    expect(existsSync(orphan)).toBe(false);
    expect(existsSync(foreign)).toBe(true);
    // Both are still answered; reading the first one's state fails, cloning it would too.
    expect(m.snapshots.list().map((s) => s.name)).toEqual(['snap1', 'snap2']);
    expect(() => m.snapshots.get({ name: 'snap1' }, true)).toThrow(
      expect.objectContaining({ code: 'SNAPSHOT_CORRUPT' }),
    );
    expect(() => m.templates.attachClone({ name: 'ram' }, 'vmm-b/c')).toThrow(
      expect.objectContaining({ code: 'REGION_LOST' }),
    );
    expect(m.snapshots.get({ name: 'snap2' }, true).deviceState).toEqual(STATE);
    expect(log.filter((e) => e.level === 'warn').map((e) => e.msg)).toEqual(
      expect.arrayContaining([
        expect.stringContaining('orphan device-state file'),
        expect.stringContaining('device-state file of a snapshot is missing'),
        expect.stringContaining('region of a snapshot is LOST'),
      ]),
    );
    // A snapshot with a lost region can still be deleted.
    m.snapshots.delete({ name: 'snap1' });
  });
});
