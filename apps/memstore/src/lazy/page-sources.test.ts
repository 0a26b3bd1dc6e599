import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Memstore } from '../memstore.js';
import { codeOf, makeTempDirs, openTestMemstore, type TempDirs } from '../testing/fixtures.js';
import { FillStats } from './fill-stats.js';
import { isPageSourceHolder, pageSourceHolder } from './holder.js';

let dirs: TempDirs;
let m: Memstore;
const ref = { name: 'vm1-ram' };
let regionId: string;
let identity: string;

beforeEach(() => {
  dirs = makeTempDirs();
  m = openTestMemstore(dirs).memstore;
  m.pageAddress = 'unix:/nowhere.sock';
  const r = m.regions.create({ name: ref.name, size: 8192n, kind: 'volatile' });
  regionId = r.id;
  identity = r.identity;
});

afterEach(() => {
  m.close();
  dirs.cleanup();
});

describe('page sources (source host)', () => {
  it('checks identity and size, and answers the same source to the same reader with a new token', () => {
    expect(
      codeOf(() => m.pageSources.open('ms-2', { regionId, identity: 'other', size: 8192 })),
    ).toBe('REGION_IDENTITY_MISMATCH');
    expect(codeOf(() => m.pageSources.open('ms-2', { regionId, identity, size: 4096 }))).toBe(
      'REGION_IDENTITY_MISMATCH',
    );
    expect(
      codeOf(() => m.pageSources.open('ms-2', { regionId: 'nope', identity, size: 8192 })),
    ).toBe('REGION_NOT_FOUND');
    const a = m.pageSources.open('ms-2', { regionId, identity, size: 8192 });
    const b = m.pageSources.open('ms-2', { regionId, identity, size: 8192 });
    expect(b.sourceId).toBe(a.sourceId);
    expect(b.token).not.toBe(a.token);
    expect(b.pageAddress).toBe('unix:/nowhere.sock');
    // The old token stopped working; the new one is admitted, but serves nothing before the claim.
    expect(codeOf(() => m.pageSources.admit(a.sourceId, a.token, null))).toBe(
      'PAGE_SOURCE_NOT_FOUND',
    );
    expect(m.pageSources.admit(b.sourceId, b.token, null).served()).toBeNull();
    expect(codeOf(() => m.pageSources.admit(b.sourceId, b.token, 'ms-3'))).toBe(
      'LEASE_WRONG_HOLDER',
    );
  });

  it('claims the lease at the VM epoch only, idempotently, and only for its reader', () => {
    const lease = m.leases.acquire(ref, 'vmm-a/vm1');
    const src = m.pageSources.open('ms-2', { regionId, identity, size: 8192 });
    expect(codeOf(() => m.pageSources.claim('ms-2', src.sourceId, lease.epoch + 1))).toBe(
      'LEASE_STALE_EPOCH',
    );
    expect(codeOf(() => m.pageSources.claim('ms-3', src.sourceId, lease.epoch))).toBe(
      'PAGE_SOURCE_NOT_FOUND',
    );
    const epoch = m.pageSources.claim('ms-2', src.sourceId, lease.epoch);
    expect(epoch).toBe(lease.epoch + 1);
    expect(m.pageSources.claim('ms-2', src.sourceId, lease.epoch)).toBe(epoch);
    expect(m.regions.get(ref).lease?.holder).toBe(pageSourceHolder('ms-2', src.sourceId));
    // The VM can no longer write under its old epoch.
    expect(m.leases.validate(ref, 'vmm-a/vm1', lease.epoch).valid).toBe(false);
    const served = m.pageSources.admit(src.sourceId, src.token, 'ms-2');
    expect(served.pages).toBe(2);
    expect(served.served()?.length).toBe(8192);
    // Refused to delete while the page source holds it.
    expect(codeOf(() => m.regions.delete(ref))).toBe('LEASE_HELD');
  });

  it('is never fenced as a gone vmm holder', () => {
    const src = m.pageSources.open('ms-2', { regionId, identity, size: 8192 });
    m.pageSources.claim('ms-2', src.sourceId, 0);
    expect(m.leases.fenceVmm('ms-2', 'holder-gone')).toEqual([]);
    expect(m.regions.get(ref).lease?.holder).toBe(pageSourceHolder('ms-2', src.sourceId));
    expect(isPageSourceHolder(pageSourceHolder('ms-2', src.sourceId))).toBe(true);
    expect(isPageSourceHolder('vmm-a/vm1')).toBe(false);
    expect(isPageSourceHolder('vmm-a/lazy')).toBe(false);
  });

  it('closes: incomplete releases the lease and keeps the region; complete deletes it', () => {
    const src = m.pageSources.open('ms-2', { regionId, identity, size: 8192 });
    m.pageSources.claim('ms-2', src.sourceId, 0);
    m.pageSources.close('ms-2', src.sourceId, false);
    expect(m.regions.get(ref).lease).toBeUndefined();
    m.pageSources.close('ms-2', src.sourceId, true); // already closed: nothing
    expect(m.regions.get(ref).id).toBe(regionId);
    const again = m.pageSources.open('ms-2', { regionId, identity, size: 8192 });
    expect(again.sourceId).not.toBe(src.sourceId);
    m.pageSources.claim('ms-2', again.sourceId, m.catalog.getById(regionId)!.leaseEpoch);
    m.pageSources.close('ms-2', again.sourceId, true);
    expect(codeOf(() => m.regions.get(ref))).toBe('REGION_NOT_FOUND');
  });
});

describe('FillStats', () => {
  it('reports quantiles of the waits and the byte rate of the last second', () => {
    let now = 0;
    const s = new FillStats(() => now);
    for (let i = 1; i <= 100; i++) s.fault(i);
    s.fault(0);
    expect(s.faultRequests).toBe(101);
    expect(s.quantileUs(0.5)).toBe(51);
    expect(s.quantileUs(0.99)).toBe(100);
    for (let t = 0; t <= 1000; t += 100) {
      now = t;
      s.arrived(1_000_000);
    }
    expect(s.bytesPerSecond()).toBeGreaterThan(9_000_000);
    expect(s.bytesPerSecond()).toBeLessThan(11_000_000);
    now = 5000;
    expect(s.bytesPerSecond()).toBe(0);
  });
});
