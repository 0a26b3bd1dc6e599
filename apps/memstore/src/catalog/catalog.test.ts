import Database from 'better-sqlite3';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemstoreError } from '../errors.js';
import { catalogAfterKill9, makeTempDirs, type TempDirs } from '../testing/fixtures.js';
import { Catalog, CATALOG_FILE_NAME } from './catalog.js';
import type { NewRegionRow } from './rows.js';
import { MIGRATIONS, SCHEMA_VERSION } from './schema.js';

let dirs: TempDirs;
let path: string;
let catalog: Catalog | undefined;

beforeEach(() => {
  dirs = makeTempDirs();
  path = join(dirs.stateDir, CATALOG_FILE_NAME);
});

afterEach(() => {
  catalog?.close();
  catalog = undefined;
  dirs.cleanup();
});

function newRow(name: string, over: Partial<NewRegionRow> = {}): NewRegionRow {
  const id = crypto.randomUUID();
  return {
    id,
    name,
    kind: 'volatile',
    size: 8192,
    path: `/dev/shm/x/${id}`,
    identity: crypto.randomUUID(),
    createdAt: Date.now(),
    parentId: null,
    ...over,
  };
}

describe('Catalog.open', () => {
  it('creates a versioned schema in WAL mode with full sync, readable only by its owner', () => {
    catalog = Catalog.open(path);
    expect(catalog.openInfo).toEqual({
      created: true,
      fromVersion: 0,
      schemaVersion: SCHEMA_VERSION,
    });
    expect(catalog.catalogId).toMatch(/^[0-9a-f]{16}$/);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    catalog.close();
    const db = new Database(path, { readonly: true });
    expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  it('keeps its catalog id across reopen and does not migrate twice', () => {
    catalog = Catalog.open(path);
    const id = catalog.catalogId;
    catalog.close();
    catalog = Catalog.open(path);
    expect(catalog.catalogId).toBe(id);
    expect(catalog.openInfo.created).toBe(false);
    expect(catalog.openInfo.fromVersion).toBe(SCHEMA_VERSION);
  });

  it('refuses a second open while the first holds the catalog (CATALOG_LOCKED)', () => {
    catalog = Catalog.open(path);
    expect(() => Catalog.open(path)).toThrow(
      expect.objectContaining({
        code: 'CATALOG_LOCKED',
        message: expect.stringContaining('--state-dir'),
      }),
    );
    catalog.close();
    catalog = Catalog.open(path);
  });

  it('refuses a catalog written by a newer schema (CATALOG_INCOMPATIBLE)', () => {
    const db = new Database(path);
    db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    let err: unknown;
    try {
      Catalog.open(path);
    } catch (e) {
      err = e;
    }
    expect(MemstoreError.is(err, 'CATALOG_INCOMPATIBLE')).toBe(true);
  });

  it('migrates a version-1 catalog: leases kept, no fences, an empty holder-process table', () => {
    const db = new Database(path);
    db.exec(MIGRATIONS[0]!.sql);
    db.pragma('user_version = 1');
    db.prepare(
      `INSERT INTO regions (id, name, kind, state, size, path, identity, created_at,
                            lease_holder, lease_epoch, lease_granted_at)
       VALUES ('r1', 'a', 'volatile', 'active', 4096, '/x/r1', 'i', 1, 'vmm-a/vm1', 7, 2)`,
    ).run();
    db.close();
    catalog = Catalog.open(path);
    expect(catalog.openInfo).toMatchObject({ fromVersion: 1, schemaVersion: SCHEMA_VERSION });
    expect(catalog.getById('r1')).toMatchObject({
      leaseHolder: 'vmm-a/vm1',
      leaseEpoch: 7,
      leaseGrantedAt: 2,
      fenced: null,
    });
    expect(catalog.listHolderProcesses()).toEqual([]);
    expect(catalog.leasesOfVmm('vmm-a').map((r) => r.id)).toEqual(['r1']);
  });

  it('migrates a version-2 catalog in place: regions and clones kept, empty snapshot tables', () => {
    const db = new Database(path);
    db.exec(MIGRATIONS[0]!.sql);
    db.exec(MIGRATIONS[1]!.sql);
    db.pragma('user_version = 2');
    db.prepare(
      `INSERT INTO regions (id, name, kind, state, size, path, identity, created_at, sealed_at)
       VALUES ('r1', 'tpl', 'volatile', 'sealed', 4096, '/x/r1', 'i', 1, 2)`,
    ).run();
    db.prepare(
      `INSERT INTO clones (template_id, holder, attached_at) VALUES ('r1', 'vmm-a/c', 3)`,
    ).run();
    db.close();
    catalog = Catalog.open(path);
    expect(catalog.openInfo).toMatchObject({ fromVersion: 2, schemaVersion: SCHEMA_VERSION });
    expect(catalog.getById('r1')).toMatchObject({ state: 'sealed', sealedAt: 2 });
    expect(catalog.clonesOf('r1').map((c) => c.holder)).toEqual(['vmm-a/c']);
    expect(catalog.snapshots.list()).toEqual([]);
    // The new tables work, and a snapshot pins its region.
    catalog.transaction(() =>
      catalog!.snapshots.insert(
        {
          id: 's1',
          name: 'snap',
          kind: 'bypass',
          template: true,
          createdAt: 5,
          vmName: 'vm1',
          vmmId: 'vmm-a',
          vmSpec: new Uint8Array([1, 2]),
          statePath: '/x/s1.state',
          stateBytes: 10,
          stateCrc32c: 0xffffffff,
          parentId: null,
        },
        [
          {
            snapshotId: 's1',
            position: 0,
            blockId: 'ram0',
            guestBase: 0x80000000,
            size: 4096,
            regionId: 'r1',
            identity: 'i',
            owned: true,
            layerPages: null,
          },
        ],
      ),
    );
    expect(catalog.snapshots.getByName('snap')).toMatchObject({
      template: true,
      stateCrc32c: 0xffffffff,
      vmSpec: new Uint8Array([1, 2]),
    });
    expect(catalog.snapshots.blocksOfRegion('r1')).toMatchObject([
      { owned: true, guestBase: 0x80000000 },
    ]);
    catalog.detachClone('r1', 'vmm-a/c');
    expect(() => catalog!.deleteRegion('r1')).toThrow(/FOREIGN KEY/);
    expect(catalog.snapshots.delete('s1')).toBe(true);
    expect(catalog.snapshots.allBlocks()).toEqual([]);
    expect(catalog.deleteRegion('r1')).toBe(true);
  });

  it('migrates a version-3 catalog: its snapshots load as standalone, and layers can be recorded', () => {
    const db = new Database(path);
    for (const step of MIGRATIONS.slice(0, 3)) db.exec(step.sql);
    db.pragma('user_version = 3');
    db.prepare(
      `INSERT INTO regions (id, name, kind, state, size, path, identity, created_at, sealed_at)
       VALUES ('r1', 'base', 'persistent', 'sealed', 16384, '/x/r1', 'i1', 1, 2),
              ('r2', 'top', 'persistent', 'sealed', 16384, '/x/r2', 'i2', 1, 2)`,
    ).run();
    db.prepare(
      `INSERT INTO snapshots (id, name, kind, template, created_at, vm_name, vmm_id, vm_spec,
                              state_path, state_bytes, state_crc32c, parent_id)
       VALUES ('s1', 'base', 'bypass', 1, 5, 'vm1', 'vmm-a', x'0102', '/x/s1.state', 10, 7, NULL)`,
    ).run();
    db.prepare(
      `INSERT INTO snapshot_blocks (snapshot_id, position, block_id, guest_base, size, region_id,
                                    identity, owned)
       VALUES ('s1', 0, 'ram0', 0, 16384, 'r1', 'i1', 1)`,
    ).run();
    db.close();

    catalog = Catalog.open(path);
    expect(catalog.openInfo).toMatchObject({ fromVersion: 3, schemaVersion: SCHEMA_VERSION });
    expect(catalog.snapshots.blocksOf('s1')).toEqual([
      {
        snapshotId: 's1',
        position: 0,
        blockId: 'ram0',
        guestBase: 0,
        size: 16384,
        regionId: 'r1',
        identity: 'i1',
        owned: true,
        layerPages: null,
      },
    ]);
    // A layer on the migrated snapshot keeps its bitmap byte for byte.
    catalog.transaction(() =>
      catalog!.snapshots.insert(
        {
          ...catalog!.snapshots.getById('s1')!,
          id: 's2',
          name: 'top',
          statePath: '/x/s2.state',
          parentId: 's1',
        },
        [
          {
            snapshotId: 's2',
            position: 0,
            blockId: 'ram0',
            guestBase: 0,
            size: 16384,
            regionId: 'r2',
            identity: 'i2',
            owned: true,
            layerPages: new Uint8Array([0b1010]),
          },
        ],
      ),
    );
    expect(catalog.snapshots.blocksOfRegion('r2')[0]!.layerPages).toEqual(new Uint8Array([0b1010]));
    expect(catalog.snapshots.childrenOf('s1').map((r) => r.name)).toEqual(['top']);
  });

  it('reports a file that is not a database as CATALOG_CORRUPT', async () => {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(path, 'this is not sqlite'.repeat(300));
    expect(() => Catalog.open(path)).toThrow(expect.objectContaining({ code: 'CATALOG_CORRUPT' }));
  });
});

describe('regions table', () => {
  beforeEach(() => {
    catalog = Catalog.open(path);
  });

  it('hides rows still being created, shows them once active', () => {
    const c = catalog!;
    const row = newRow('a');
    c.insertCreating(row);
    expect(c.listRegions()).toEqual([]);
    expect(c.listAllRows().map((r) => r.state)).toEqual(['creating']);
    expect(c.markActive(row.id)).toBe(true);
    expect(c.markActive(row.id)).toBe(false);
    expect(c.listRegions().map((r) => [r.name, r.state, r.leaseEpoch])).toEqual([
      ['a', 'active', 0],
    ]);
  });

  it('keeps names unique and filters by kind', () => {
    const c = catalog!;
    const a = newRow('a');
    const b = newRow('b', { kind: 'persistent' });
    for (const r of [a, b]) {
      c.insertCreating(r);
      c.markActive(r.id);
    }
    expect(() => c.insertCreating(newRow('a'))).toThrow(/UNIQUE/);
    expect(c.listRegions('persistent').map((r) => r.name)).toEqual(['b']);
    expect(c.getByName('a')?.id).toBe(a.id);
    expect(c.getById(b.id)?.name).toBe('b');
  });

  it('rejects sizes that are not whole pages at the schema level', () => {
    expect(() => catalog!.insertCreating(newRow('bad', { size: 100 }))).toThrow(/CHECK/);
  });

  it('grants, moves and clears leases only when their preconditions hold', () => {
    const c = catalog!;
    const r = newRow('a');
    c.insertCreating(r);
    expect(c.acquireLease(r.id, 'h1', 1)).toBeUndefined(); // still 'creating'
    c.markActive(r.id);
    expect(c.acquireLease(r.id, 'h1', 1)?.leaseEpoch).toBe(1);
    expect(c.acquireLease(r.id, 'h2', 2)).toBeUndefined();
    expect(c.transferLease(r.id, 'h1', 0, 'h2', 3)).toBeUndefined();
    expect(c.transferLease(r.id, 'h1', 1, 'h2', 3)?.leaseHolder).toBe('h2');
    expect(c.releaseLease(r.id, 'h1', 2)).toBe(false);
    expect(c.releaseLease(r.id, 'h2', 2)).toBe(true);
    expect(c.getById(r.id)).toMatchObject({ leaseHolder: null, leaseEpoch: 2 });
  });

  it('fences a lease only at its exact (holder, epoch): holder cleared, epoch + 1, recorded until the next grant', () => {
    const c = catalog!;
    const r = newRow('a');
    c.insertCreating(r);
    c.markActive(r.id);
    c.acquireLease(r.id, 'vmm-a/vm1', 1);
    expect(c.fenceLease(r.id, 'vmm-a/vm1', 0, 5, 'holder-gone')).toBeUndefined(); // stale epoch
    expect(c.fenceLease(r.id, 'vmm-b/vm1', 1, 5, 'holder-gone')).toBeUndefined(); // other holder
    const fenced = c.fenceLease(r.id, 'vmm-a/vm1', 1, 5, 'holder-gone');
    expect(fenced).toMatchObject({
      leaseHolder: null,
      leaseEpoch: 2,
      leaseGrantedAt: null,
      state: 'active',
      path: r.path,
      fenced: { holder: 'vmm-a/vm1', epoch: 2, at: 5, reason: 'holder-gone' },
    });
    // The fenced holder's epoch is stale for every compare-and-set.
    expect(c.releaseLease(r.id, 'vmm-a/vm1', 1)).toBe(false);
    expect(c.transferLease(r.id, 'vmm-a/vm1', 1, 'vmm-b/vm1', 6)).toBeUndefined();
    // The next grant is epoch + 1 and clears the record.
    expect(c.acquireLease(r.id, 'vmm-a/vm1', 7)).toMatchObject({ leaseEpoch: 3, fenced: null });
  });

  it("finds a vmm's leases by the holder prefix, taking '_' and '%' literally", () => {
    const c = catalog!;
    const grant = (name: string, holder: string): string => {
      const r = newRow(name);
      c.insertCreating(r);
      c.markActive(r.id);
      c.acquireLease(r.id, holder, 1);
      return r.id;
    };
    const mine = [grant('a', 'vmm_a/vm1'), grant('b', 'vmm_a/vm2')];
    grant('c', 'vmmXa/vm1'); // would match LIKE 'vmm_a/%'
    grant('d', 'vmm_a'); // no "/": names no vmm
    grant('e', 'vmm_ab/vm1');
    const free = newRow('f');
    c.insertCreating(free);
    c.markActive(free.id);
    expect(c.leasesOfVmm('vmm_a').map((r) => r.id)).toEqual(mine);
    expect(c.leasesOfVmm('%')).toEqual([]);
  });

  it('records one process per vmm id, replaced by a new session, marked gone once', () => {
    const c = catalog!;
    const p = {
      vmmId: 'vmm-a',
      pid: 42,
      startTime: 1234,
      bootId: 'boot',
      instance: 'i1',
      openedAt: 10,
      goneAt: null,
    };
    c.putHolderProcess(p);
    expect(c.getHolderProcess('vmm-a')).toEqual(p);
    expect(c.markHolderProcessGone('vmm-a', 'other-instance', 20)).toBe(false);
    expect(c.markHolderProcessGone('vmm-a', 'i1', 20)).toBe(true);
    expect(c.markHolderProcessGone('vmm-a', 'i1', 30)).toBe(false);
    expect(c.getHolderProcess('vmm-a')?.goneAt).toBe(20);
    c.putHolderProcess({ ...p, pid: 43, instance: 'i2', openedAt: 40 });
    expect(c.listHolderProcesses()).toEqual([{ ...p, pid: 43, instance: 'i2', openedAt: 40 }]);
    expect(() => c.putHolderProcess({ ...p, pid: -1 })).toThrow(/CHECK/);
  });

  it('records clones per template, once per holder', () => {
    const c = catalog!;
    const r = newRow('t');
    c.insertCreating(r);
    c.markActive(r.id);
    expect(c.attachClone(r.id, 'c1', 1)).toBe(true);
    expect(c.attachClone(r.id, 'c1', 2)).toBe(false);
    expect(c.attachClone(r.id, 'c2', 3)).toBe(true);
    expect(c.clonesOf(r.id).map((x) => x.holder)).toEqual(['c1', 'c2']);
    expect(() => c.deleteRegion(r.id)).toThrow(/FOREIGN KEY/);
    expect(c.detachClone(r.id, 'c1')).toBe(true);
    expect(c.detachClone(r.id, 'c1')).toBe(false);
    expect(c.allClones()).toHaveLength(1);
  });
});

describe('commit durability', () => {
  beforeEach(() => {
    catalog = Catalog.open(path);
  });

  function activeRow(c: Catalog, name: string): string {
    const r = newRow(name);
    c.insertCreating(r);
    c.markActive(r.id);
    return r.id;
  }

  it('runs at synchronous=FULL by default, also inside a power-loss transaction', () => {
    const c = catalog!;
    expect(c.synchronous).toBe(2);
    expect(c.transaction(() => c.synchronous)).toBe(2);
    expect(c.transaction(() => c.synchronous, 'power-loss')).toBe(2);
    expect(c.synchronous).toBe(2);
  });

  it('commits a process-crash transaction at NORMAL and is back at FULL afterwards, also after a throw', () => {
    const c = catalog!;
    const id = activeRow(c, 'a');
    const inside = c.transaction(() => {
      c.acquireLease(id, 'h1', 1);
      return c.synchronous;
    }, 'process-crash');
    expect(inside).toBe(1);
    expect(c.synchronous).toBe(2);
    expect(() =>
      c.transaction(() => {
        c.transferLease(id, 'h1', 1, 'h2', 2);
        throw new Error('boom');
      }, 'process-crash'),
    ).toThrow('boom');
    expect(c.synchronous).toBe(2);
    // The throw rolled the transfer back.
    expect(c.getById(id)).toMatchObject({ leaseHolder: 'h1', leaseEpoch: 1 });
  });

  it('a process-crash commit is in the files when the call returns: kill -9 cannot lose it', () => {
    const c = catalog!;
    const id = activeRow(c, 'a');
    c.transaction(() => c.acquireLease(id, 'h1', 1), 'process-crash');
    c.transaction(() => c.transferLease(id, 'h1', 1, 'h2', 2), 'process-crash');
    const copy = catalogAfterKill9(dirs.stateDir, join(dirs.stateDir, 'after-kill'));
    try {
      expect(copy.getById(id)).toMatchObject({ leaseHolder: 'h2', leaseEpoch: 2 });
    } finally {
      copy.close();
    }
  });
});
