import { memstore as pb } from '@handoff/proto';
import { createClient, unaryCall } from '@handoff/service';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FAILPOINT_VARIABLE } from '../failpoints.js';
import { byName, makeTempDirs, type TempDirs } from '../testing/fixtures.js';
import { MEMSTORE_MAIN, startMemstoreProcess, type MemstoreProcess } from '../testing/process.js';
import { SNAPSHOT_DIR_NAME } from './naming.js';
import { fixtureFileName } from './testing/make-fixture.js';

const FIXTURE = readFileSync(
  fileURLToPath(new URL(`./fixtures/${fixtureFileName(1, 0)}`, import.meta.url)),
);

/**
 * CreateSnapshot and DeleteSnapshot killed (SIGKILL, at a failpoint) in the middle, then a
 * restart: start-up leaves either the whole snapshot or none of it — no state file without a
 * row, no region left read-only or sealed by a snapshot that was not recorded. Needs the build
 * (apps/memstore/dist), like lease-crash.test.ts.
 */

const built = existsSync(MEMSTORE_MAIN);

let dirs: TempDirs;
let proc: MemstoreProcess | undefined;
let client: pb.MemstoreServiceClient | undefined;
const live = new Set<ChildProcess>();

beforeEach(() => {
  dirs = makeTempDirs();
});

afterEach(async () => {
  client?.close();
  await proc?.stop();
  proc = undefined;
  dirs.cleanup();
});

afterAll(() => {
  for (const child of live) child.kill('SIGKILL');
});

async function start(failpoint?: string): Promise<pb.MemstoreServiceClient> {
  client?.close();
  proc = await startMemstoreProcess(dirs, {
    insecure: true,
    env: failpoint === undefined ? {} : { [FAILPOINT_VARIABLE]: failpoint },
  });
  const child = proc.child;
  live.add(child);
  child.once('exit', () => live.delete(child));
  client = createClient(pb.MemstoreServiceClient, proc.address, proc.credentials);
  return client;
}

const stateFiles = (): string[] => readdirSync(join(dirs.persistentDir, SNAPSHOT_DIR_NAME));

function request(): pb.CreateSnapshotRequest {
  return {
    name: 'snap',
    template: false,
    kind: pb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
    vmName: 'vm1',
    vmSpec: new Uint8Array([1]),
    deviceState: new Uint8Array(512).fill(9),
    blocks: [
      {
        id: 'ram0',
        guestBase: 0x80000000n,
        size: 1n << 20n,
        region: byName('ram'),
        epoch: 1n,
        owned: true,
        layerPages: new Uint8Array(0),
      },
      {
        id: 'ram1',
        guestBase: 0n,
        size: 1n << 20n,
        region: byName('copy'),
        epoch: 0n,
        owned: true,
        layerPages: new Uint8Array(0),
      },
    ],
    holder: 'vmm-a/vm1',
    parent: '',
  };
}

async function prepare(c: pb.MemstoreServiceClient, kind: pb.RegionKind): Promise<string[]> {
  const paths: string[] = [];
  for (const name of ['ram', 'copy']) {
    const { region } = await unaryCall(c, 'createRegion', { name, size: 1n << 20n, kind });
    paths.push(region!.path);
  }
  await unaryCall(c, 'acquireLease', { region: byName('ram'), holder: 'vmm-a/vm1' });
  return paths;
}

const KINDS = [
  ['volatile', pb.RegionKind.REGION_KIND_VOLATILE],
  ['persistent', pb.RegionKind.REGION_KIND_PERSISTENT],
] as const;

describe.skipIf(!built)(
  `snapshots survive kill -9 of memstore mid-call (needs ${MEMSTORE_MAIN})`,
  { timeout: 120_000 },
  () => {
    for (const point of ['snapshot-after-state-file', 'snapshot-before-commit']) {
      it.each(KINDS)(
        `%s regions: killed at ${point}, the snapshot is not there at all`,
        async (_k, kind) => {
          const c = await start(point);
          const paths = await prepare(c, kind);
          await expect(unaryCall(c, 'createSnapshot', request())).rejects.toThrow();
          await proc!.kill9();
          expect(stateFiles()).toHaveLength(1); // written before the kill, no row names it
          if (point === 'snapshot-before-commit') {
            // Killed inside the transaction: both files were made read-only, nothing committed.
            for (const p of paths) expect(statSync(p).mode & 0o777).toBe(0o444);
          }

          const after = await start();
          expect(stateFiles()).toEqual([]);
          expect(
            (await unaryCall(after, 'listSnapshots', { templatesOnly: false })).snapshots,
          ).toEqual([]);
          const ram = (await unaryCall(after, 'getRegion', { region: byName('ram') })).region!;
          expect(ram).toMatchObject({
            state: pb.RegionState.REGION_STATE_ACTIVE,
            lease: { holder: 'vmm-a/vm1', epoch: 1n },
          });
          for (const p of paths) expect(statSync(p).mode & 0o777).toBe(0o600);
          // The save can simply be made again.
          await unaryCall(after, 'createSnapshot', request());
          expect(stateFiles()).toHaveLength(1);
        },
      );
    }

    it('killed after an import wrote its regions and state, before recording it: start-up removes them', async () => {
      const c = await start('import-after-regions');
      const err = await new Promise<unknown>((resolve) => {
        const call = c.importSnapshot((e: unknown) => resolve(e));
        call.write({ part: { $case: 'start', value: { name: '', template: false } } });
        call.write({ part: { $case: 'data', value: FIXTURE } });
        call.end();
      });
      expect(err, 'the import should fail: memstore died before recording it').toBeTruthy();
      await proc!.kill9();
      const regionFiles = (): string[] =>
        readdirSync(dirs.persistentDir).filter((f) => f.startsWith('region-'));
      expect(regionFiles()).toHaveLength(1);
      expect(stateFiles()).toHaveLength(1);

      const after = await start();
      expect(regionFiles()).toEqual([]);
      expect(stateFiles()).toEqual([]);
      expect((await unaryCall(after, 'listRegions', { kind: 0 })).regions).toEqual([]);
      expect((await unaryCall(after, 'listSnapshots', { templatesOnly: false })).snapshots).toEqual(
        [],
      );
    });

    it('killed after DeleteSnapshot committed: start-up removes its state file and owned region files', async () => {
      const c = await start('snapshot-delete-after-row');
      const paths = await prepare(c, pb.RegionKind.REGION_KIND_PERSISTENT);
      await unaryCall(c, 'createSnapshot', request());
      await expect(
        unaryCall(c, 'deleteSnapshot', {
          snapshot: { selector: { $case: 'name', value: 'snap' } },
        }),
      ).rejects.toThrow();
      await proc!.kill9();
      expect(stateFiles()).toHaveLength(1);
      expect(paths.every((p) => existsSync(p))).toBe(true);

      const after = await start();
      expect((await unaryCall(after, 'listSnapshots', { templatesOnly: false })).snapshots).toEqual(
        [],
      );
      expect((await unaryCall(after, 'listRegions', { kind: 0 })).regions).toEqual([]);
      expect(stateFiles()).toEqual([]);
      expect(paths.some((p) => existsSync(p))).toBe(false);
    });
  },
);
