import { chmodSync, existsSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Memstore } from '../memstore.js';
import { makeTempDirs, openTestMemstore, type TempDirs } from '../testing/fixtures.js';
import { createRegionFile } from './files.js';
import { regionFileName } from './naming.js';

let dirs: TempDirs;
let m: Memstore;

beforeEach(() => {
  dirs = makeTempDirs();
  m = openTestMemstore(dirs).memstore;
});

afterEach(() => {
  m.close();
  dirs.cleanup();
});

function reopen() {
  m.close();
  const opened = openTestMemstore(dirs);
  m = opened.memstore;
  return opened;
}

describe('start-up reconciliation', () => {
  it('finds nothing to do on a clean catalog', () => {
    m.regions.create({ name: 'a', size: 4096n, kind: 'volatile' });
    const { memstore } = reopen();
    expect(memstore.report).toEqual({
      rolledBack: 0,
      orphansRemoved: 0,
      lost: 0,
      recovered: 0,
      modesFixed: 0,
      sizeMismatches: 0,
      regions: 1,
    });
  });

  it('removes orphan files of this catalog, and only those', () => {
    const id = m.catalog.catalogId;
    const orphanV = join(dirs.volatileDir, regionFileName(id, crypto.randomUUID()));
    const orphanP = join(dirs.persistentDir, regionFileName(id, crypto.randomUUID()));
    const foreign = join(dirs.volatileDir, regionFileName('ffffffffffffffff', crypto.randomUUID()));
    const unrelated = join(dirs.volatileDir, 'notes.txt');
    for (const p of [orphanV, orphanP, foreign]) createRegionFile(p, 4096, false);
    writeFileSync(unrelated, 'keep me');
    const kept = m.regions.create({ name: 'kept', size: 4096n, kind: 'volatile' });

    const { memstore, log } = reopen();
    expect(memstore.report.orphansRemoved).toBe(2);
    expect(existsSync(orphanV)).toBe(false);
    expect(existsSync(orphanP)).toBe(false);
    expect(existsSync(foreign)).toBe(true);
    expect(existsSync(unrelated)).toBe(true);
    expect(existsSync(kept.path)).toBe(true);
    expect(log.filter((e) => e.level === 'warn' && e.msg.includes('orphan'))).toHaveLength(2);
  });

  it('marks regions whose file is missing LOST, refuses leases on them, and recovers them when the file is back', () => {
    const r = m.regions.create({ name: 'gone', size: 8192n, kind: 'volatile' });
    m.close();
    unlinkSync(r.path);
    const { memstore, log } = reopen();
    expect(memstore.report.lost).toBe(1);
    expect(m.regions.get({ name: 'gone' })).toMatchObject({ state: 'lost', allocatedBytes: 0 });
    expect(log.some((e) => e.level === 'warn' && e.msg.includes('LOST'))).toBe(true);
    expect(() => m.leases.acquire({ name: 'gone' }, 'vmm-a/vm1')).toThrow(
      expect.objectContaining({ code: 'REGION_LOST' }),
    );

    createRegionFile(r.path, 8192, false);
    expect(reopen().memstore.report.recovered).toBe(1);
    expect(m.regions.get({ name: 'gone' }).state).toBe('active');
  });

  it('lets a LOST region be deleted', () => {
    const r = m.regions.create({ name: 'gone', size: 8192n, kind: 'volatile' });
    m.close();
    unlinkSync(r.path);
    reopen();
    m.regions.delete({ name: 'gone' });
    expect(m.regions.list()).toEqual([]);
  });

  it("rolls back 'creating' rows, with or without their file", () => {
    const catalogId = m.catalog.catalogId;
    const withFile = crypto.randomUUID();
    const withoutFile = crypto.randomUUID();
    for (const id of [withFile, withoutFile]) {
      m.catalog.insertCreating({
        id,
        name: `half-${id.slice(0, 4)}`,
        kind: 'volatile',
        size: 4096,
        path: join(dirs.volatileDir, regionFileName(catalogId, id)),
        identity: 'x',
        createdAt: Date.now(),
        parentId: null,
      });
    }
    const filePath = join(dirs.volatileDir, regionFileName(catalogId, withFile));
    createRegionFile(filePath, 4096, false);

    const { memstore } = reopen();
    expect(memstore.report).toMatchObject({ rolledBack: 2, orphansRemoved: 0, regions: 0 });
    expect(existsSync(filePath)).toBe(false);
    expect(m.catalog.listAllRows()).toEqual([]);
  });

  it('restores the modes of sealed and active files', async () => {
    const a = m.regions.create({ name: 'a', size: 4096n, kind: 'volatile' });
    const s = m.regions.create({ name: 's', size: 4096n, kind: 'volatile' });
    await m.templates.seal({ name: 's' }, undefined);
    m.close();
    chmodSync(a.path, 0o400);
    chmodSync(s.path, 0o600);
    expect(reopen().memstore.report.modesFixed).toBe(2);
    expect(statSync(a.path).mode & 0o777).toBe(0o600);
    expect(statSync(s.path).mode & 0o777).toBe(0o444);
  });
});
