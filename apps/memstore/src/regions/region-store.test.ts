import { existsSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Memstore } from '../memstore.js';
import { makeTempDirs, openTestMemstore, type TempDirs } from '../testing/fixtures.js';
import { parseRegionFileName } from './naming.js';

let dirs: TempDirs;
let m: Memstore;

beforeEach(() => {
  dirs = makeTempDirs();
  m = openTestMemstore(dirs, { maxRegionSize: 64 * 2 ** 20 }).memstore;
});

afterEach(() => {
  m.close();
  dirs.cleanup();
});

describe('create', () => {
  it('makes a sparse, owner-only file of the exact size in the volatile directory', () => {
    const r = m.regions.create({ name: 'vm1-ram', size: 16n * 2n ** 20n, kind: 'volatile' });
    expect(r).toMatchObject({
      name: 'vm1-ram',
      kind: 'volatile',
      state: 'active',
      size: 16 * 2 ** 20,
    });
    expect(r.lease).toBeUndefined();
    expect(r.mappedBy).toEqual([]);
    expect(dirname(r.path)).toBe(dirs.volatileDir);
    const st = statSync(r.path);
    expect(st.size).toBe(16 * 2 ** 20);
    expect(st.mode & 0o777).toBe(0o600);
    expect(r.allocatedBytes).toBe(0);
  });

  it('names the file after the region id, never after the user-chosen name', () => {
    const r = m.regions.create({ name: 'my-name', size: 4096n, kind: 'volatile' });
    expect(basename(r.path)).not.toContain('my-name');
    expect(parseRegionFileName(basename(r.path))).toEqual({
      catalogId: m.catalog.catalogId,
      regionId: r.id,
    });
  });

  it('puts persistent regions in the persistent directory', () => {
    const r = m.regions.create({ name: 'saved', size: 8192n, kind: 'persistent' });
    expect(dirname(r.path)).toBe(dirs.persistentDir);
    expect(statSync(r.path).size).toBe(8192);
  });

  it('gives each region a fresh id and identity', () => {
    const a = m.regions.create({ name: 'a', size: 4096n, kind: 'volatile' });
    const b = m.regions.create({ name: 'b', size: 4096n, kind: 'volatile' });
    expect(new Set([a.id, b.id, a.identity, b.identity]).size).toBe(4);
  });

  it('refuses a taken name, a bad name and a bad size, creating nothing', () => {
    m.regions.create({ name: 'a', size: 4096n, kind: 'volatile' });
    expect(() => m.regions.create({ name: 'a', size: 4096n, kind: 'volatile' })).toThrow(
      expect.objectContaining({ code: 'REGION_ALREADY_EXISTS' }),
    );
    expect(() => m.regions.create({ name: '../a', size: 4096n, kind: 'volatile' })).toThrow(
      expect.objectContaining({ code: 'REGION_INVALID_NAME' }),
    );
    expect(() => m.regions.create({ name: 'b', size: 4097n, kind: 'volatile' })).toThrow(
      expect.objectContaining({ code: 'REGION_INVALID_SIZE' }),
    );
    expect(() => m.regions.create({ name: 'c', size: 128n * 2n ** 20n, kind: 'volatile' })).toThrow(
      expect.objectContaining({ code: 'REGION_INVALID_SIZE' }),
    );
    expect(m.regions.list().map((r) => r.name)).toEqual(['a']);
  });

  it('refuses a region larger than the free space of its file system (REGION_NO_SPACE)', () => {
    const huge = openTestMemstore(makeTempDirsShared(), { maxRegionSize: 2 ** 50 });
    try {
      expect(() =>
        huge.memstore.regions.create({ name: 'big', size: 2n ** 49n, kind: 'volatile' }),
      ).toThrow(
        expect.objectContaining({
          code: 'REGION_NO_SPACE',
          message: expect.stringContaining('free'),
        }),
      );
    } finally {
      huge.memstore.close();
    }
  });

  it('enforces the total size limit when one is set (REGION_LIMIT_EXCEEDED)', () => {
    const limited = openTestMemstore(makeTempDirsShared(), { maxTotalSize: 3 * 4096 });
    try {
      limited.memstore.regions.create({ name: 'a', size: 8192n, kind: 'volatile' });
      expect(() =>
        limited.memstore.regions.create({ name: 'b', size: 8192n, kind: 'volatile' }),
      ).toThrow(
        expect.objectContaining({
          code: 'REGION_LIMIT_EXCEEDED',
          message: expect.stringContaining('--max-total-size'),
        }),
      );
    } finally {
      limited.memstore.close();
    }
  });

  /** Another set of directories cleaned with this test's. */
  function makeTempDirsShared(): TempDirs {
    const other = makeTempDirs();
    const outer = dirs;
    dirs = {
      ...outer,
      cleanup() {
        outer.cleanup();
        other.cleanup();
      },
    };
    return other;
  }
});

describe('get and list', () => {
  it('find regions by id or name and list them oldest first, optionally by kind', () => {
    const a = m.regions.create({ name: 'a', size: 4096n, kind: 'volatile' });
    m.regions.create({ name: 'b', size: 4096n, kind: 'persistent' });
    expect(m.regions.get({ id: a.id }).name).toBe('a');
    expect(m.regions.get({ name: 'a' }).id).toBe(a.id);
    expect(m.regions.list().map((r) => r.name)).toEqual(['a', 'b']);
    expect(m.regions.list('persistent').map((r) => r.name)).toEqual(['b']);
    expect(() => m.regions.get({ name: 'nope' })).toThrow(
      expect.objectContaining({
        code: 'REGION_NOT_FOUND',
        message: expect.stringContaining('ListRegions'),
      }),
    );
  });

  it('reports usage totals', () => {
    m.regions.create({ name: 'a', size: 8192n, kind: 'volatile' });
    m.regions.create({ name: 'b', size: 4096n, kind: 'persistent' });
    expect(m.regions.usage()).toEqual({ regionCount: 2, totalSize: 12288, allocatedBytes: 0 });
    expect(m.info()).toMatchObject({
      regionCount: 2,
      totalSize: 12288,
      volatileDir: dirs.volatileDir,
    });
  });
});

describe('delete', () => {
  it('removes the row and the file', () => {
    const r = m.regions.create({ name: 'a', size: 4096n, kind: 'volatile' });
    m.regions.delete({ name: 'a' });
    expect(existsSync(r.path)).toBe(false);
    expect(() => m.regions.get({ id: r.id })).toThrow(
      expect.objectContaining({ code: 'REGION_NOT_FOUND' }),
    );
  });

  it('is refused while the region is leased, naming the holder and what to do', () => {
    const r = m.regions.create({ name: 'a', size: 4096n, kind: 'volatile' });
    m.leases.acquire({ name: 'a' }, 'vmm-a/vm1');
    expect(() => m.regions.delete({ name: 'a' })).toThrow(
      expect.objectContaining({
        code: 'LEASE_HELD',
        message: expect.stringMatching(/vmm-a\/vm1.*epoch 1.*ReleaseLease/),
      }),
    );
    expect(existsSync(r.path)).toBe(true);
  });

  it('is refused while clones are attached, with their count', async () => {
    const r = m.regions.create({ name: 't', size: 4096n, kind: 'volatile' });
    await m.templates.seal({ name: 't' }, undefined);
    m.templates.attachClone({ name: 't' }, 'vmm-a/c1');
    m.templates.attachClone({ name: 't' }, 'vmm-a/c2');
    expect(() => m.regions.delete({ name: 't' })).toThrow(
      expect.objectContaining({
        code: 'REGION_IN_USE',
        message: expect.stringContaining('2 attached clone(s)'),
      }),
    );
    m.templates.detachClone({ name: 't' }, 'vmm-a/c1');
    m.templates.detachClone({ name: 't' }, 'vmm-a/c2');
    m.regions.delete({ name: 't' });
    expect(existsSync(r.path)).toBe(false);
  });
});
