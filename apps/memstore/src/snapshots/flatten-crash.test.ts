import { memstore as pb } from '@handoff/proto';
import { createClient, unaryCall } from '@handoff/service';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FAILPOINT_VARIABLE } from '../failpoints.js';
import { byName, makeTempDirs, type TempDirs } from '../testing/fixtures.js';
import {
  bitmapOf,
  composedImage,
  fileBytes,
  LAYER_BLOCK,
  writePages,
  type PageFills,
} from '../testing/layers.js';
import { MEMSTORE_MAIN, startMemstoreProcess, type MemstoreProcess } from '../testing/process.js';
import { SNAPSHOT_DIR_NAME } from './naming.js';

/**
 * FlattenSnapshot killed (SIGKILL, at a failpoint) after its regions are written, and inside
 * its transaction, then a restart: start-up leaves the chain as it was and no trace of the
 * copy — no region row or file, no device-state file — and the flatten can simply be made
 * again. Needs the build (apps/memstore/dist), like snapshot-crash.test.ts.
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

const BASE: PageFills = [
  [0, 1],
  [4, 2],
];
const TOP: PageFills = [
  [4, 3],
  [9, 4],
];
const stateFiles = (): string[] => readdirSync(join(dirs.persistentDir, SNAPSHOT_DIR_NAME));
const regionFiles = (): string[] =>
  readdirSync(dirs.persistentDir).filter((f) => f.startsWith('region-'));
const bySnapshot = (name: string): pb.SnapshotSelector => ({
  selector: { $case: 'name', value: name },
});

/** A base snapshot and a layer "top" on it, from region files written by hand. */
async function chain(c: pb.MemstoreServiceClient): Promise<void> {
  for (const [name, fills, parent] of [
    ['base', BASE, ''],
    ['top', TOP, 'base'],
  ] as const) {
    const { region } = await unaryCall(c, 'createRegion', {
      name: `${name}-ram`,
      size: BigInt(LAYER_BLOCK.size),
      kind: pb.RegionKind.REGION_KIND_PERSISTENT,
    });
    writePages(region!.path, fills);
    await unaryCall(c, 'createSnapshot', {
      name,
      template: true,
      kind: pb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
      vmName: 'vm1',
      vmSpec: new Uint8Array([1]),
      deviceState: new Uint8Array(100).fill(5),
      blocks: [
        {
          id: LAYER_BLOCK.id,
          guestBase: BigInt(LAYER_BLOCK.guestBase),
          size: BigInt(LAYER_BLOCK.size),
          region: byName(`${name}-ram`),
          epoch: 0n,
          owned: true,
          layerPages: parent === '' ? new Uint8Array(0) : bitmapOf(fills),
        },
      ],
      holder: 'vmm-a/vm1',
      parent,
    });
  }
}

describe.skipIf(!built)(
  `FlattenSnapshot survives kill -9 of memstore mid-call (needs ${MEMSTORE_MAIN})`,
  { timeout: 120_000 },
  () => {
    it.each(['flatten-after-regions', 'flatten-before-commit'])(
      'killed at %s: start-up removes the copy, the chain is intact, the flatten can be made again',
      async (point) => {
        const c = await start(point);
        await chain(c);
        await expect(
          unaryCall(c, 'flattenSnapshot', { snapshot: bySnapshot('top'), name: 'flat' }),
        ).rejects.toThrow();
        await proc!.kill9();
        expect(regionFiles()).toHaveLength(3); // base, top and the copy's
        expect(stateFiles()).toHaveLength(3);
        if (point === 'flatten-before-commit') {
          const modes = regionFiles().map(
            (f) => statSync(join(dirs.persistentDir, f)).mode & 0o777,
          );
          expect(modes).toEqual([0o444, 0o444, 0o444]); // the copy's sealed, not committed
        }

        const after = await start();
        expect(regionFiles()).toHaveLength(2);
        expect(stateFiles()).toHaveLength(2);
        const listed = await unaryCall(after, 'listSnapshots', { templatesOnly: false });
        expect(listed.snapshots.map((s) => [s.name, s.parent, s.depth])).toEqual([
          ['base', '', 0],
          ['top', 'base', 1],
        ]);
        expect((await unaryCall(after, 'listRegions', { kind: 0 })).regions).toHaveLength(2);

        const { snapshot } = await unaryCall(after, 'flattenSnapshot', {
          snapshot: bySnapshot('top'),
          name: 'flat',
        });
        expect(snapshot).toMatchObject({ name: 'flat', parent: '', depth: 0 });
        const { region } = await unaryCall(after, 'getRegion', {
          region: { selector: { $case: 'id', value: snapshot!.blocks[0]!.regionId } },
        });
        expect(fileBytes(region!.path)).toEqual(composedImage([BASE, TOP]));
      },
    );
  },
);
