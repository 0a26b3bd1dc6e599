import Database from 'better-sqlite3';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemstoreError } from '../errors.js';
import { catalogAfterKill9, makeTempDirs, type TempDirs } from '../testing/fixtures.js';
import { Catalog, CATALOG_FILE_NAME } from './catalog.js';
import type { NewRegionRow } from './rows.js';
import { SCHEMA_VERSION } from './schema.js';

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
