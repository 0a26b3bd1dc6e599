import fc from 'fast-check';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemstoreError } from '../errors.js';
import type { Memstore } from '../memstore.js';
import {
  catalogAfterKill9,
  codeOf,
  makeTempDirs,
  openTestMemstore,
  type TempDirs,
} from '../testing/fixtures.js';

let dirs: TempDirs;
let m: Memstore;
const region = { name: 'vm1-ram' };

beforeEach(() => {
  dirs = makeTempDirs();
  m = openTestMemstore(dirs).memstore;
  m.regions.create({ name: region.name, size: 8192n, kind: 'volatile' });
});

afterEach(() => {
  m.close();
  dirs.cleanup();
});

describe('acquire', () => {
  it('grants epoch 1 to the first holder and refuses while held', () => {
    const lease = m.leases.acquire(region, 'vmm-a/vm1');
    expect(lease).toMatchObject({ holder: 'vmm-a/vm1', epoch: 1 });
    expect(m.regions.get(region).lease?.epoch).toBe(1);
    expect(m.regions.get(region).mappedBy).toEqual(['vmm-a/vm1']);
    expect(() => m.leases.acquire(region, 'vmm-b/vm1')).toThrow(
      expect.objectContaining({
        code: 'LEASE_HELD',
        message: expect.stringContaining('"vmm-a/vm1" at epoch 1'),
      }),
    );
  });

  it('refuses an invalid holder', () => {
    expect(codeOf(() => m.leases.acquire(region, ''))).toBe('REGION_INVALID_ARGUMENT');
  });
});

describe('transfer', () => {
  it('moves the lease with compare-and-set on (holder, epoch) and bumps the epoch', () => {
    m.leases.acquire(region, 'vmm-a/vm1');
    const moved = m.leases.transfer(region, 'vmm-a/vm1', 1, 'vmm-b/vm1');
    expect(moved).toMatchObject({ holder: 'vmm-b/vm1', epoch: 2 });
  });

  it('refuses a stale epoch, saying who holds the lease now and what to do', () => {
    m.leases.acquire(region, 'vmm-a/vm1');
    m.leases.transfer(region, 'vmm-a/vm1', 1, 'vmm-b/vm1');
    let err: unknown;
    try {
      m.leases.transfer(region, 'vmm-a/vm1', 1, 'vmm-c/vm1');
    } catch (e) {
      err = e;
    }
    expect(MemstoreError.is(err, 'LEASE_STALE_EPOCH')).toBe(true);
    expect((err as Error).message).toMatch(/held by "vmm-b\/vm1" at epoch 2/);
    expect((err as Error).message).toMatch(/must not resume/);
  });

  it('refuses the right epoch presented by the wrong holder', () => {
    m.leases.acquire(region, 'vmm-a/vm1');
    expect(codeOf(() => m.leases.transfer(region, 'vmm-x/vm1', 1, 'vmm-b/vm1'))).toBe(
      'LEASE_WRONG_HOLDER',
    );
  });

  it('lets exactly one of many transfers from the same (holder, epoch) win', () => {
    m.leases.acquire(region, 'vmm-a/vm1');
    const outcomes = Array.from({ length: 8 }, (_, i) =>
      codeOf(() => m.leases.transfer(region, 'vmm-a/vm1', 1, `vmm-${i}/vm1`)),
    );
    expect(outcomes.filter((c) => c === undefined)).toHaveLength(1);
    expect(outcomes.filter((c) => c === 'LEASE_STALE_EPOCH')).toHaveLength(7);
    expect(m.regions.get(region).lease).toMatchObject({ holder: 'vmm-0/vm1', epoch: 2 });
  });

  it('refuses a lease that was released', () => {
    m.leases.acquire(region, 'vmm-a/vm1');
    m.leases.release(region, 'vmm-a/vm1', 1);
    expect(codeOf(() => m.leases.transfer(region, 'vmm-a/vm1', 1, 'vmm-b/vm1'))).toBe(
      'LEASE_NOT_HELD',
    );
  });
});

describe('release', () => {
  it('clears the lease but keeps the epoch: the next grant is epoch + 1', () => {
    m.leases.acquire(region, 'vmm-a/vm1');
    m.leases.release(region, 'vmm-a/vm1', 1);
    expect(m.regions.get(region).lease).toBeUndefined();
    expect(m.leases.acquire(region, 'vmm-b/vm1').epoch).toBe(2);
  });

  it('is refused for a stale epoch or the wrong holder', () => {
    m.leases.acquire(region, 'vmm-a/vm1');
    m.leases.transfer(region, 'vmm-a/vm1', 1, 'vmm-b/vm1');
    expect(codeOf(() => m.leases.release(region, 'vmm-a/vm1', 1))).toBe('LEASE_STALE_EPOCH');
    expect(codeOf(() => m.leases.release(region, 'vmm-a/vm1', 2))).toBe('LEASE_WRONG_HOLDER');
    expect(m.regions.get(region).lease?.holder).toBe('vmm-b/vm1');
  });
});

describe('validate', () => {
  it('is true only for the current holder at the current epoch', () => {
    expect(m.leases.validate(region, 'vmm-a/vm1', 0)).toEqual({ valid: false, current: undefined });
    m.leases.acquire(region, 'vmm-a/vm1');
    expect(m.leases.validate(region, 'vmm-a/vm1', 1).valid).toBe(true);
    m.leases.transfer(region, 'vmm-a/vm1', 1, 'vmm-b/vm1');
    const v = m.leases.validate(region, 'vmm-a/vm1', 1);
    expect(v.valid).toBe(false);
    expect(v.current).toMatchObject({ holder: 'vmm-b/vm1', epoch: 2 });
  });
});

describe('durability', () => {
  it('leases and epochs survive closing and reopening the memstore', () => {
    m.leases.acquire(region, 'vmm-a/vm1');
    m.leases.transfer(region, 'vmm-a/vm1', 1, 'vmm-b/vm1');
    m.close();
    m = openTestMemstore(dirs).memstore;
    expect(m.regions.get(region).lease).toMatchObject({ holder: 'vmm-b/vm1', epoch: 2 });
    expect(m.leases.validate(region, 'vmm-b/vm1', 2).valid).toBe(true);
    m.leases.release(region, 'vmm-b/vm1', 2);
    m.close();
    m = openTestMemstore(dirs).memstore;
    expect(m.leases.acquire(region, 'vmm-c/vm1').epoch).toBe(3);
  });
});

describe('commit durability follows the region', () => {
  const persistent = { name: 'disk-ram' };

  /** The durability each lease call of `fn` committed with. */
  function durabilities(fn: () => void): unknown[] {
    const spy = vi.spyOn(m.catalog, 'transaction');
    try {
      fn();
      return spy.mock.calls.map((c) => c[1]);
    } finally {
      spy.mockRestore();
    }
  }

  function cycle(ref: { name: string }): void {
    m.leases.acquire(ref, 'vmm-a/vm1');
    m.leases.transfer(ref, 'vmm-a/vm1', 1, 'vmm-b/vm1');
    m.leases.release(ref, 'vmm-b/vm1', 2);
  }

  it('volatile regions on tmpfs commit lease changes without fsync (process-crash)', () => {
    expect(m.volatileOnTmpfs).toBe(true);
    expect(durabilities(() => cycle(region))).toEqual([
      'process-crash',
      'process-crash',
      'process-crash',
    ]);
    expect(m.catalog.synchronous).toBe(2);
  });

  it('persistent regions commit lease changes with fsync (power-loss)', () => {
    m.regions.create({ name: persistent.name, size: 8192n, kind: 'persistent' });
    expect(durabilities(() => cycle(persistent))).toEqual([
      'power-loss',
      'power-loss',
      'power-loss',
    ]);
  });

  it('volatile regions outside tmpfs commit lease changes with fsync (power-loss)', () => {
    m.close();
    m = openTestMemstore(dirs, { volatileDir: join(dirs.stateDir, 'not-tmpfs') }).memstore;
    const onDisk = { name: 'volatile-on-disk' };
    m.regions.create({ name: onDisk.name, size: 8192n, kind: 'volatile' });
    expect(m.volatileOnTmpfs).toBe(false);
    expect(durabilities(() => cycle(onDisk))).toEqual(['power-loss', 'power-loss', 'power-loss']);
  });

  it('a volatile lease transfer is in the catalog files once it returns: kill -9 right after keeps it', () => {
    m.leases.acquire(region, 'vmm-a/vm1');
    const moved = m.leases.transfer(region, 'vmm-a/vm1', 1, 'vmm-b/vm1');
    const copy = catalogAfterKill9(dirs.stateDir, join(dirs.stateDir, 'after-kill'));
    try {
      expect(copy.getByName(region.name)).toMatchObject({
        leaseHolder: 'vmm-b/vm1',
        leaseEpoch: moved.epoch,
      });
    } finally {
      copy.close();
    }
  });
});

describe('epochs (property)', () => {
  type Op =
    | { op: 'acquire'; holder: number }
    | { op: 'transfer'; from: number; epochDelta: number; to: number }
    | { op: 'release'; holder: number; epochDelta: number };
  const holder = fc.integer({ min: 0, max: 3 });
  const delta = fc.integer({ min: -2, max: 1 });
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ op: fc.constant('acquire' as const), holder }),
    fc.record({
      op: fc.constant('transfer' as const),
      from: holder,
      epochDelta: delta,
      to: holder,
    }),
    fc.record({ op: fc.constant('release' as const), holder, epochDelta: delta }),
  );

  it('never go backwards and grow by exactly one per successful acquire or transfer', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const name = `p-${crypto.randomUUID().slice(0, 8)}`;
        m.regions.create({ name, size: 4096n, kind: 'volatile' });
        const ref = { name };
        let model: { holder: string | undefined; epoch: number } = { holder: undefined, epoch: 0 };
        for (const o of ops) {
          const current = model.epoch;
          if (o.op === 'acquire') {
            const ok = codeOf(() => m.leases.acquire(ref, `h${o.holder}`)) === undefined;
            expect(ok).toBe(model.holder === undefined);
            if (ok) model = { holder: `h${o.holder}`, epoch: current + 1 };
          } else if (o.op === 'transfer') {
            const ok =
              codeOf(() =>
                m.leases.transfer(ref, `h${o.from}`, current + o.epochDelta, `h${o.to}`),
              ) === undefined;
            expect(ok).toBe(model.holder === `h${o.from}` && o.epochDelta === 0);
            if (ok) model = { holder: `h${o.to}`, epoch: current + 1 };
          } else {
            const ok =
              codeOf(() => m.leases.release(ref, `h${o.holder}`, current + o.epochDelta)) ===
              undefined;
            expect(ok).toBe(model.holder === `h${o.holder}` && o.epochDelta === 0);
            if (ok) model = { holder: undefined, epoch: current };
          }
          const row = m.catalog.getByName(name)!;
          expect(row.leaseEpoch).toBe(model.epoch);
          expect(row.leaseHolder ?? undefined).toBe(model.holder);
        }
        if (model.holder !== undefined) m.leases.release(ref, model.holder, model.epoch);
        m.regions.delete(ref);
      }),
      { numRuns: 60 },
    );
  });
});
