import { mapFile, type Mapping } from '@handoff/shm';
import { lstatSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { leaseArmsFileName, openMemstore, type Memstore } from '../memstore.js';
import {
  codeOf,
  makeTempDirs,
  recordingLogger,
  testSettings,
  type LogEntry,
  type TempDirs,
} from '../testing/fixtures.js';
import {
  ARM_ARMED,
  ARM_CANCELLED,
  ARM_FLIPPED,
  ARM_FREE,
  ARMS_FILE_BYTES,
  ARMS_MAGIC,
  ARMS_SLOT_COUNT,
  armGeneration,
  armState,
  armWord,
  slotOffset,
} from './arms.js';
import type { ArmedTransfer } from './lease-manager.js';

/**
 * Lease arms: a transfer validated ahead of time, decided by one CAS in the shared arms file.
 * The "target" here is a second shared mapping of the file, as another process would map it.
 */

let dirs: TempDirs;
let m: Memstore;
let log: LogEntry[];
let clock: number;
const mappings: Mapping<SharedArrayBuffer>[] = [];
const region = { name: 'vm1-ram' };
const A = 'vmm-a/vm1';
const B = 'vmm-b/vm1';

function open(opts: { armTtlMs?: number } = {}): Memstore {
  const rec = recordingLogger();
  log = rec.entries;
  return openMemstore(testSettings(dirs), rec.logger, { ...opts, now: () => clock });
}

beforeEach(() => {
  dirs = makeTempDirs();
  clock = 1_000_000;
  m = open();
  m.regions.create({ name: region.name, size: 8192n, kind: 'volatile' });
  m.leases.acquire(region, A);
});

afterEach(() => {
  for (const x of mappings.splice(0)) x.close();
  m.close();
  dirs.cleanup();
});

/** The target's side: CAS on its own mapping of the arms file. True when it won. */
function flip(a: ArmedTransfer): boolean {
  const map = mapFile(a.armsPath);
  mappings.push(map);
  const words = new Int32Array(map.buffer);
  return (
    Atomics.compareExchange(words, a.slotOffset / 4, a.armedWord, a.flippedWord) === a.armedWord
  );
}

/** The slot word as another process sees it. */
function wordAt(a: ArmedTransfer): number {
  const map = mapFile(a.armsPath);
  mappings.push(map);
  return Atomics.load(new Int32Array(map.buffer), a.slotOffset / 4);
}

describe('the arms file', () => {
  it('is created 0600 in the volatile directory with the versioned header', () => {
    const path = m.leases.armsFile!.path;
    expect(path).toBe(join(dirs.volatileDir, leaseArmsFileName(m.catalog.catalogId)));
    const st = lstatSync(path);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.size).toBe(ARMS_FILE_BYTES);
    const map = mapFile(path);
    mappings.push(map);
    const view = new DataView(map.buffer);
    expect([0, 4, 8, 12].map((o) => view.getUint32(o, true))).toEqual([
      ARMS_MAGIC,
      1,
      ARMS_SLOT_COUNT,
      256,
    ]);
  });

  it('words pack a 23-bit generation and a state', () => {
    const w = armWord(0x7fffff, ARM_FLIPPED);
    expect(w).toBeGreaterThan(0);
    expect(armGeneration(w)).toBe(0x7fffff);
    expect(armState(w)).toBe(ARM_FLIPPED);
  });
});

describe('ArmTransfer', () => {
  it('validates like TransferLease: same codes and messages', () => {
    const cases: [string, number, string][] = [
      [A, 7, B], // stale epoch
      [B, 1, B], // wrong holder
      ['', 1, B], // invalid holder
    ];
    for (const [from, epoch, to] of cases) {
      const viaTransfer = codeOf(() => m.leases.transfer(region, from, epoch, to));
      expect(codeOf(() => m.leases.arm(region, from, epoch, to))).toBe(viaTransfer);
    }
    expect(codeOf(() => m.leases.arm(region, A, 7, B))).toBe('LEASE_STALE_EPOCH');
    expect(codeOf(() => m.leases.arm(region, B, 1, B))).toBe('LEASE_WRONG_HOLDER');
    let armErr: unknown;
    let transferErr: unknown;
    try {
      m.leases.arm(region, A, 7, B);
    } catch (err) {
      armErr = err;
    }
    try {
      m.leases.transfer(region, A, 7, B);
    } catch (err) {
      transferErr = err;
    }
    expect((armErr as Error).message).toBe((transferErr as Error).message);
    m.leases.release(region, A, 1);
    expect(codeOf(() => m.leases.arm(region, A, 1, B))).toBe('LEASE_NOT_HELD');
    expect(codeOf(() => m.leases.arm({ name: 'nope' }, A, 1, B))).toBe('REGION_NOT_FOUND');
    expect(m.leases.armedCount).toBe(0);
  });

  it('a flip by CAS moves the lease to (to, epoch + 1): validate, get, resolve and the catalog agree', () => {
    const a = m.leases.arm(region, A, 1, B);
    expect(a).toMatchObject({ epoch: 2, slotOffset: slotOffset(0) });
    expect(armState(a.armedWord)).toBe(ARM_ARMED);
    expect(armState(a.flippedWord)).toBe(ARM_FLIPPED);
    expect(wordAt(a)).toBe(a.armedWord);
    // The record is in the slot for recovery.
    const map = mapFile(a.armsPath);
    mappings.push(map);
    const len = new DataView(map.buffer).getUint32(a.slotOffset + 4, true);
    const record = JSON.parse(
      new TextDecoder().decode(new Uint8Array(map.buffer, a.slotOffset + 8, len)),
    ) as unknown;
    expect(record).toEqual({
      regionId: m.catalog.getByName(region.name)!.id, // (GetRegion would resolve the arm)
      fromHolder: A,
      toHolder: B,
      epoch: '1',
    });

    expect(flip(a)).toBe(true);
    expect(m.leases.validate(region, B, 2)).toMatchObject({ valid: true });
    expect(m.leases.validate(region, A, 1)).toMatchObject({ valid: false });
    expect(m.regions.get(region).lease).toMatchObject({ holder: B, epoch: 2 });
    expect(m.leases.resolve(region)).toMatchObject({ holder: B, epoch: 2 });
    const row = m.catalog.getByName(region.name)!;
    expect([row.leaseHolder, row.leaseEpoch]).toEqual([B, 2]);
    expect(log.filter((e) => e.msg === 'lease transferred')).toHaveLength(1);
    expect(m.leases.armedCount).toBe(0);
    expect(armState(wordAt(a))).toBe(ARM_FREE);
    // The old source is fenced as after TransferLease.
    expect(codeOf(() => m.leases.transfer(region, A, 1, A))).toBe('LEASE_STALE_EPOCH');
  });

  it('a lease call by the source first cancels the arm: a later flip fails by CAS', () => {
    for (const sourceCall of [
      () => m.leases.validate(region, A, 1),
      () => m.leases.resolve(region),
    ]) {
      const a = m.leases.arm(region, A, 1, B);
      sourceCall();
      expect(armState(wordAt(a))).toBe(ARM_FREE);
      expect(flip(a)).toBe(false);
      expect(m.leases.validate(region, A, 1).valid).toBe(true);
    }
    // The source takes the lease back: the arm is void, the lease is the source's at epoch 2.
    const a = m.leases.arm(region, A, 1, B);
    expect(m.leases.transfer(region, A, 1, A)).toMatchObject({ holder: A, epoch: 2 });
    expect(flip(a)).toBe(false);
    expect(m.leases.resolve(region)).toMatchObject({ holder: A, epoch: 2 });
    expect(log.some((e) => e.msg === 'lease arm cancelled')).toBe(true);
  });

  it("looking decides nothing: GetRegion and another holder's ValidateLease leave the arm", () => {
    const a = m.leases.arm(region, A, 1, B);
    expect(m.regions.get(region).lease).toMatchObject({ holder: A, epoch: 1 });
    expect(m.leases.validate(region, B, 2).valid).toBe(false); // not flipped yet
    expect(armState(wordAt(a))).not.toBe(ARM_FREE);
    expect(flip(a)).toBe(true);
    // Now both see the flip, committed.
    expect(m.regions.get(region).lease).toMatchObject({ holder: B, epoch: 2 });
    expect(m.leases.validate(region, B, 2).valid).toBe(true);
    expect(armState(wordAt(a))).toBe(ARM_FREE);
  });

  it('release, seal and delete resolve the arm first', async () => {
    const a = m.leases.arm(region, A, 1, B);
    expect(flip(a)).toBe(true);
    // The source's release presents the lease it no longer holds.
    expect(codeOf(() => m.leases.release(region, A, 1))).toBe('LEASE_STALE_EPOCH');
    const b = m.leases.arm(region, B, 2, A);
    expect(flip(b)).toBe(true);
    expect(codeOf(() => m.regions.delete(region))).toBe('LEASE_HELD');
    const c = m.leases.arm(region, A, 3, B);
    expect(flip(c)).toBe(true);
    const sealed = await m.templates.seal(region, { holder: B, epoch: 4 });
    expect(sealed.state).toBe('sealed');
  });

  it('re-arming resolves the previous arm and bumps the generation', () => {
    const first = m.leases.arm(region, A, 1, B);
    const second = m.leases.arm(region, A, 1, B);
    expect(second.slotOffset).toBe(first.slotOffset); // the freed slot is reused
    expect(armGeneration(second.armedWord)).toBe(armGeneration(first.armedWord) + 1);
    expect(flip(first)).toBe(false); // the old word no longer matches
    expect(flip(second)).toBe(true);
    expect(m.leases.resolve(region)).toMatchObject({ holder: B, epoch: 2 });
  });

  it('ListRegions commits a flip but does not cancel an arm', () => {
    const a = m.leases.arm(region, A, 1, B);
    expect(m.regions.list()[0]!.lease).toMatchObject({ holder: A, epoch: 1 });
    expect(wordAt(a)).toBe(a.armedWord);
    expect(flip(a)).toBe(true);
    expect(m.regions.list()[0]!.lease).toMatchObject({ holder: B, epoch: 2 });
  });

  it('resolves arms older than the TTL (timer)', async () => {
    m.close();
    m = open({ armTtlMs: 50 });
    const a = m.leases.arm(region, A, 1, B);
    m.leases.resolveExpiredArms();
    expect(m.leases.armedCount).toBe(1); // the clock did not move
    clock += 60;
    // The unref'd timer resolves it (runs every ttl / 2 of real time).
    await new Promise((r) => setTimeout(r, 200));
    expect(m.leases.armedCount).toBe(0);
    expect(flip(a)).toBe(false);
    expect(log.some((e) => e.msg === 'lease arm expired and resolved')).toBe(true);
    expect(m.leases.resolve(region)).toMatchObject({ holder: A, epoch: 1 });
  });

  it('LEASE_ARM_UNSUPPORTED for a persistent region, and for holders too long for a slot', () => {
    const p = { name: 'disk' };
    m.regions.create({ name: p.name, size: 8192n, kind: 'persistent' });
    m.leases.acquire(p, A);
    expect(() => m.leases.arm(p, A, 1, B)).toThrow(
      expect.objectContaining({
        code: 'LEASE_ARM_UNSUPPORTED',
        message: expect.stringContaining('use TransferLease'),
      }),
    );
    expect(codeOf(() => m.leases.arm(region, A, 1, 'x'.repeat(256)))).toBe('LEASE_ARM_UNSUPPORTED');
    // Validation comes first: a stale epoch is reported as such.
    expect(codeOf(() => m.leases.arm(p, A, 9, B))).toBe('LEASE_STALE_EPOCH');
  });

  it('LEASE_ARMS_FULL when every slot is armed', () => {
    for (let i = 0; i < ARMS_SLOT_COUNT; i++) {
      const r = { name: `r${i}` };
      m.regions.create({ name: r.name, size: 4096n, kind: 'volatile' });
      m.leases.acquire(r, A);
      m.leases.arm(r, A, 1, B);
    }
    expect(codeOf(() => m.leases.arm(region, A, 1, B))).toBe('LEASE_ARMS_FULL');
    // Resolving one frees its slot.
    m.leases.resolve({ name: 'r0' });
    expect(m.leases.arm(region, A, 1, B).slotOffset).toBe(slotOffset(0));
  });
});

describe('restart', () => {
  it('commits a flip that memstore never saw (crash between flip and commit)', () => {
    const a = m.leases.arm(region, A, 1, B);
    expect(flip(a)).toBe(true);
    m.close('leave-arms'); // no resolve: what a crash leaves (the catalog has the old lease)
    m = open();
    expect(m.catalog.getByName(region.name)).toMatchObject({ leaseHolder: B, leaseEpoch: 2 });
    expect(m.regions.get(region).lease).toMatchObject({ holder: B, epoch: 2 });
    expect(log.some((e) => e.msg === 'lease transferred' && e.fields.via === 'start-up')).toBe(
      true,
    );
    expect(armState(wordAt(a))).toBe(ARM_FREE);
    expect(m.leases.arm(region, B, 2, A).slotOffset).toBe(slotOffset(0));
  });

  it('cancels an arm left ARMED: the lease is unchanged and a late flip fails', () => {
    const a = m.leases.arm(region, A, 1, B);
    m.close('leave-arms');
    m = open();
    expect(m.regions.get(region).lease).toMatchObject({ holder: A, epoch: 1 });
    expect(flip(a)).toBe(false);
    expect(armState(wordAt(a))).toBe(ARM_FREE);
  });

  it('drops garbled slots and flips that do not match the catalog, without crashing', () => {
    const a = m.leases.arm(region, A, 1, B);
    expect(flip(a)).toBe(true);
    const regionId = m.catalog.getByName(region.name)!.id;
    m.close('leave-arms');
    const map = mapFile(a.armsPath);
    const view = new DataView(map.buffer);
    const w = new Int32Array(map.buffer);
    const put = (slot: number, word: number, record: Uint8Array): void => {
      new Uint8Array(map.buffer, slotOffset(slot) + 8, record.length).set(record);
      view.setUint32(slotOffset(slot) + 4, record.length, true);
      Atomics.store(w, slotOffset(slot) / 4, word);
    };
    const json = (o: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(o));
    put(1, armWord(5, ARM_FLIPPED), new Uint8Array([0xff, 0x7b, 0x22, 0x00])); // not UTF-8 JSON
    put(2, armWord(1, 77), json({})); // unknown state
    put(3, armWord(2, ARM_CANCELLED), json({}));
    put(
      4,
      armWord(3, ARM_FLIPPED),
      json({ regionId: 'gone', fromHolder: A, toHolder: B, epoch: '1' }),
    );
    put(5, armWord(4, ARM_FLIPPED), json({ regionId, fromHolder: A, toHolder: B, epoch: '5' }));
    put(6, armWord(4, ARM_FLIPPED), json({ regionId, fromHolder: A, toHolder: B, epoch: 1 })); // not a string
    view.setUint32(slotOffset(7) + 4, 0xffffffff, true);
    Atomics.store(w, slotOffset(7) / 4, armWord(1, ARM_FLIPPED)); // absurd length
    map.close();
    m = open();
    expect(m.regions.get(region).lease).toMatchObject({ holder: B, epoch: 2 });
    const warns = log.filter((e) => e.level === 'warn').map((e) => e.msg);
    expect(warns).toEqual(
      expect.arrayContaining([
        expect.stringContaining('garbled record'),
        expect.stringContaining('unknown state'),
        expect.stringContaining('names no region'),
        expect.stringContaining('does not match the catalog'),
      ]),
    );
    expect(m.leases.armsFile!.freeSlots).toBe(ARMS_SLOT_COUNT);
  });

  it('recreates a file with an unknown header or size', () => {
    const path = m.leases.armsFile!.path;
    m.close();
    writeFileSync(path, 'not an arms file');
    m = open();
    expect(log.some((e) => e.level === 'warn' && e.msg.includes('lease arms file'))).toBe(true);
    expect(lstatSync(path).size).toBe(ARMS_FILE_BYTES);
    m.close('leave-arms');
    const map = mapFile(path);
    new DataView(map.buffer).setUint32(4, 99, true); // a future layout version
    map.close();
    m = open();
    expect(log.some((e) => e.level === 'warn' && e.msg.includes('unknown header'))).toBe(true);
    expect(m.leases.arm(region, A, 1, B).slotOffset).toBe(slotOffset(0));
  });

  it('without an arms file, arm is LEASE_ARM_UNSUPPORTED (the rest works)', () => {
    m.close('leave-arms');
    const path = join(dirs.volatileDir, leaseArmsFileName(m.catalog.catalogId));
    // A directory in the way: the file cannot be created.
    rmSync(path);
    mkdirSync(path);
    m = open();
    expect(m.leases.armsFile).toBeUndefined();
    expect(codeOf(() => m.leases.arm(region, A, 1, B))).toBe('LEASE_ARM_UNSUPPORTED');
    expect(m.leases.transfer(region, A, 1, B)).toMatchObject({ epoch: 2 });
    expect(readdirSync(dirs.volatileDir)).toContain(leaseArmsFileName(m.catalog.catalogId));
  });
});
