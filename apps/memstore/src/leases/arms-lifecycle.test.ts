import { mapFile, type Mapping } from '@handoff/shm';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { leaseArmsFileName, openMemstore, type Memstore } from '../memstore.js';
import {
  makeTempDirs,
  recordingLogger,
  testSettings,
  type LogEntry,
  type TempDirs,
} from '../testing/fixtures.js';
import { ARM_FLIPPED, ARMS_SLOT_COUNT, armGeneration, armWord, slotOffset } from './arms.js';
import { flippedSlots, mappedByAnyProcess, sweepStaleArmsFiles } from './arms-sweep.js';

/**
 * The arms file's lifecycle: a clean stop settles every arm and removes the file; a start removes
 * the files of other catalogs that killed memstores left, unless a process maps them or they hold
 * flips not yet committed.
 */

let dirs: TempDirs;
let m: Memstore | undefined;
let log: LogEntry[];
const mappings: Mapping<SharedArrayBuffer>[] = [];
const region = { name: 'vm1-ram' };
const A = 'vmm-a/vm1';
const B = 'vmm-b/vm1';

function open(stateDir = dirs.stateDir): Memstore {
  const rec = recordingLogger();
  log = rec.entries;
  return openMemstore(
    testSettings({ ...dirs, stateDir, persistentDir: join(stateDir, 'regions') }),
    rec.logger,
  );
}

const armsFiles = (): string[] =>
  readdirSync(dirs.volatileDir)
    .filter((n) => n.startsWith('lease-arms-'))
    .sort();

beforeEach(() => {
  dirs = makeTempDirs();
  m = open();
  m.regions.create({ name: region.name, size: 8192n, kind: 'volatile' });
  m.leases.acquire(region, A);
});

afterEach(() => {
  for (const x of mappings.splice(0)) x.close();
  m?.close();
  dirs.cleanup();
});

describe('a clean stop', () => {
  it('commits a flipped arm, cancels an armed one, and removes the file', () => {
    const own = leaseArmsFileName(m!.catalog.catalogId);
    expect(armsFiles()).toEqual([own]);
    const a = m!.leases.arm(region, A, 1, B);
    const map = mapFile(a.armsPath);
    mappings.push(map);
    const words = new Int32Array(map.buffer);
    expect(Atomics.compareExchange(words, a.slotOffset / 4, a.armedWord, a.flippedWord)).toBe(
      a.armedWord,
    );
    m!.regions.create({ name: 'other', size: 8192n, kind: 'volatile' });
    m!.leases.acquire({ name: 'other' }, A);
    const b = m!.leases.arm({ name: 'other' }, A, 1, B);
    m!.close();
    m = undefined;
    expect(armsFiles()).toEqual([]);
    // the target that arrived late loses: its mapping (of the removed file) says cancelled
    expect(Atomics.compareExchange(words, b.slotOffset / 4, b.armedWord, b.flippedWord)).not.toBe(
      b.armedWord,
    );
    m = open();
    expect(m.regions.get(region).lease).toMatchObject({ holder: B, epoch: 2 });
    expect(m.regions.get({ name: 'other' }).lease).toMatchObject({ holder: A, epoch: 1 });
  });

  it('a new file starts its slots at random generations (no word of a removed file matches)', () => {
    const path = m!.leases.armsFile!.path;
    const before = readFileSync(path);
    m!.close();
    m = open();
    const after = readFileSync(path);
    const gens = (bytes: Buffer) =>
      Array.from({ length: ARMS_SLOT_COUNT }, (_, i) =>
        armGeneration(bytes.readInt32LE(slotOffset(i))),
      );
    expect(new Set(gens(after)).size).toBeGreaterThan(ARMS_SLOT_COUNT / 2);
    expect(gens(after)).not.toEqual(gens(before));
  });
});

describe('a start', () => {
  it("removes another catalog's file that a killed memstore left (kill -9, then a restart)", () => {
    const first = leaseArmsFileName(m!.catalog.catalogId);
    m!.leases.arm(region, A, 1, B); // left ARMED: void once nobody maps the file
    m!.close('leave-arms');
    // the same catalog restarted: its own file is reconciled, not removed
    m = open();
    expect(armsFiles()).toEqual([first]);
    m.close('leave-arms');
    // another catalog in the same volatile directory: the first one's file is stale
    m = open(join(dirs.stateDir, 'second'));
    expect(armsFiles()).toEqual([leaseArmsFileName(m.catalog.catalogId)]);
    expect(log.some((e) => e.msg.startsWith('stale lease arms file removed'))).toBe(true);
  });

  it("keeps a live memstore's file, one with flips to commit, and files not of the layout", () => {
    const own = leaseArmsFileName(m!.catalog.catalogId);
    const path = join(dirs.volatileDir, own);
    const flipped = join(dirs.volatileDir, 'lease-arms-00000000000000f1');
    copyFileSync(path, flipped);
    const map = mapFile(flipped);
    new Int32Array(map.buffer)[slotOffset(3) / 4] = armWord(7, ARM_FLIPPED);
    map.close();
    const junk = join(dirs.volatileDir, 'lease-arms-00000000000000aa');
    writeFileSync(junk, 'not an arms file');
    const rec = recordingLogger();
    const report = sweepStaleArmsFiles(dirs.volatileDir, 'lease-arms-none', rec.logger);
    // this process (the live memstore m) maps its own file
    expect(report).toEqual({ removed: [], inUse: [path], unsettled: [flipped] });
    expect(existsSync(junk)).toBe(true);
    expect(
      rec.entries.some((e) => e.level === 'warn' && e.msg.includes('flips not committed')),
    ).toBe(true);
    expect(flippedSlots(readFileSync(flipped))).toBe(1);
    expect(flippedSlots(new Uint8Array(16))).toBeUndefined();
  });

  it('tells a mapped file from one nobody maps (/proc/<pid>/maps)', () => {
    const path = m!.leases.armsFile!.path;
    const copy = join(dirs.volatileDir, 'lease-arms-00000000000000c0');
    copyFileSync(path, copy);
    const ino = (p: string) => lstatSync(p).ino;
    expect(mappedByAnyProcess(path, ino(path))).toBe(true);
    expect(mappedByAnyProcess(copy, ino(copy))).toBe(false);
    const map = mapFile(copy);
    mappings.push(map);
    expect(mappedByAnyProcess(copy, ino(copy))).toBe(true);
  });
});
