import { statSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Memstore } from '../memstore.js';
import { makeTempDirs, openTestMemstore, type TempDirs } from '../testing/fixtures.js';

let dirs: TempDirs;
let m: Memstore;
const t = { name: 'kv-template' };

beforeEach(() => {
  dirs = makeTempDirs();
  m = openTestMemstore(dirs).memstore;
});

afterEach(() => {
  m.close();
  dirs.cleanup();
});

const modeOf = (path: string): number => statSync(path).mode & 0o777;

describe('seal', () => {
  it('turns an unleased region into a read-only template', async () => {
    const r = m.regions.create({ ...t, size: 8192n, kind: 'volatile' });
    const sealed = await m.templates.seal(t, undefined);
    expect(sealed.state).toBe('sealed');
    expect(modeOf(r.path)).toBe(0o444);
  });

  it('needs the current lease of a leased region, and releases it', async () => {
    const r = m.regions.create({ ...t, size: 8192n, kind: 'persistent' });
    m.leases.acquire(t, 'vmm-a/vm1');
    m.leases.transfer(t, 'vmm-a/vm1', 1, 'vmm-a/vm1');
    await expect(m.templates.seal(t, undefined)).rejects.toMatchObject({ code: 'LEASE_HELD' });
    await expect(m.templates.seal(t, { holder: 'vmm-a/vm1', epoch: 1 })).rejects.toMatchObject({
      code: 'LEASE_STALE_EPOCH',
    });
    await expect(m.templates.seal(t, { holder: 'vmm-x/vm1', epoch: 2 })).rejects.toMatchObject({
      code: 'LEASE_WRONG_HOLDER',
    });
    expect(modeOf(r.path)).toBe(0o600);
    const sealed = await m.templates.seal(t, { holder: 'vmm-a/vm1', epoch: 2 });
    expect(sealed).toMatchObject({ state: 'sealed', lease: undefined });
    expect(modeOf(r.path)).toBe(0o444);
  });

  it('refuses a stale lease on an unleased region', async () => {
    m.regions.create({ ...t, size: 8192n, kind: 'volatile' });
    m.leases.acquire(t, 'vmm-a/vm1');
    m.leases.release(t, 'vmm-a/vm1', 1);
    await expect(m.templates.seal(t, { holder: 'vmm-a/vm1', epoch: 1 })).rejects.toMatchObject({
      code: 'LEASE_NOT_HELD',
    });
  });

  it('leaves a sealed region sealed: no lease, no second seal, ever (also after restart)', async () => {
    m.regions.create({ ...t, size: 8192n, kind: 'volatile' });
    await m.templates.seal(t, undefined);
    expect(() => m.leases.acquire(t, 'vmm-a/vm1')).toThrow(
      expect.objectContaining({
        code: 'REGION_SEALED',
        message: expect.stringContaining('AttachClone'),
      }),
    );
    await expect(m.templates.seal(t, undefined)).rejects.toMatchObject({ code: 'REGION_SEALED' });
    m.close();
    m = openTestMemstore(dirs).memstore;
    expect(m.regions.get(t).state).toBe('sealed');
    expect(() => m.leases.acquire(t, 'vmm-a/vm1')).toThrow(
      expect.objectContaining({ code: 'REGION_SEALED' }),
    );
  });
});

describe('clones', () => {
  it('attach only to sealed templates', () => {
    m.regions.create({ ...t, size: 8192n, kind: 'volatile' });
    expect(() => m.templates.attachClone(t, 'vmm-a/c1')).toThrow(
      expect.objectContaining({
        code: 'REGION_NOT_SEALED',
        message: expect.stringContaining('SealTemplate'),
      }),
    );
  });

  it('are counted and reported as mappers; attach and detach are idempotent', async () => {
    m.regions.create({ ...t, size: 8192n, kind: 'volatile' });
    await m.templates.seal(t, undefined);
    m.templates.attachClone(t, 'vmm-a/c1');
    const after = m.templates.attachClone(t, 'vmm-b/c2');
    expect(m.templates.attachClone(t, 'vmm-b/c2').cloneCount).toBe(2);
    expect(after).toMatchObject({ cloneCount: 2, mappedBy: ['vmm-a/c1', 'vmm-b/c2'] });
    expect(m.templates.detachClone(t, 'vmm-a/c1')).toBe(true);
    expect(m.templates.detachClone(t, 'vmm-a/c1')).toBe(false);
    expect(m.regions.get(t)).toMatchObject({ cloneCount: 1, mappedBy: ['vmm-b/c2'] });
    expect(m.regions.list()[0]?.mappedBy).toEqual(['vmm-b/c2']);
  });
});
