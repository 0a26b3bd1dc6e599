import * as grpc from '@grpc/grpc-js';
import { memstore as pb } from '@handoff/proto';
import { channelCredentials, createClient, RemoteError, unaryCall } from '@handoff/service';
import { closeSync, openSync, readdirSync, readFileSync, statSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { memstoreConfig } from '../config.js';
import { encodePreamble } from '../snapshots/export-format.js';
import { SnapshotFileParser } from '../snapshots/export-parser.js';
import {
  FIXTURE_DEVICE_STATE,
  FIXTURE_VM_SPEC,
  fixtureFileName,
  fixtureMemory,
} from '../snapshots/testing/make-fixture.js';
import { startMemstore, type MemstoreHandle } from '../start.js';
import { byName, failure, makeTempDirs, type TempDirs } from '../testing/fixtures.js';
import { MAX_CHUNK_BYTES } from './read-pages.js';

/**
 * ExportSnapshot and ImportSnapshot over gRPC: the golden 1.0 fixture imported and checked byte
 * by byte, a round trip, refused files leaving nothing behind, and an export that waits for a
 * slow reader.
 */

const FIXTURE = new Uint8Array(
  readFileSync(
    fileURLToPath(new URL(`../snapshots/fixtures/${fixtureFileName(1, 0)}`, import.meta.url)),
  ),
);

let dirs: TempDirs;
let handle: MemstoreHandle;
let client: pb.MemstoreServiceClient;

beforeEach(async () => {
  dirs = makeTempDirs();
  handle = await startMemstore(
    memstoreConfig({
      port: 0,
      'state-dir': dirs.stateDir,
      'volatile-dir': dirs.volatileDir,
      'persistent-dir': dirs.persistentDir,
      'max-region-size': '256M',
      'shutdown-timeout-ms': 1000,
      'lease-socket': 'off',
    }),
  );
  client = createClient(pb.MemstoreServiceClient, handle.address, channelCredentials(null));
});

afterEach(async () => {
  client.close();
  await handle.stop('test done');
  dirs.cleanup();
});

const bySnapshot = (name: string): pb.SnapshotSelector => ({
  selector: { $case: 'name', value: name },
});

/** ImportSnapshot of `file` in pieces of `step` bytes, after a start message. */
function importFile(
  file: Uint8Array,
  start: pb.ImportSnapshotStart = { name: '', template: false },
  step = MAX_CHUNK_BYTES,
): Promise<pb.ImportSnapshotResponse> {
  return new Promise((resolve, reject) => {
    const call = client.importSnapshot(
      { deadline: Date.now() + 20_000 },
      (err: grpc.ServiceError | null, res?: pb.ImportSnapshotResponse) =>
        err === null ? resolve(res!) : reject(RemoteError.fromGrpc(err, 'importSnapshot')),
    );
    call.write({ part: { $case: 'start', value: start } });
    for (let at = 0; at < file.length; at += step) {
      call.write({ part: { $case: 'data', value: file.subarray(at, at + step) } });
    }
    call.end();
  });
}

/** ExportSnapshot's messages. */
function exportAll(name: string): Promise<pb.ExportSnapshotResponse[]> {
  return new Promise((resolve, reject) => {
    const out: pb.ExportSnapshotResponse[] = [];
    const stream = client.exportSnapshot(
      { snapshot: bySnapshot(name) },
      { deadline: Date.now() + 20_000 },
    );
    stream.on('data', (m: pb.ExportSnapshotResponse) => out.push(m));
    stream.on('error', (e) => reject(RemoteError.fromGrpc(e, 'exportSnapshot')));
    stream.on('end', () => resolve(out));
  });
}

/** The memory of a snapshot's block, read from its region's file. */
async function blockMemory(s: pb.Snapshot, block = 0): Promise<Uint8Array> {
  const { region } = await unaryCall(client, 'getRegion', {
    region: { selector: { $case: 'id', value: s.blocks[block]!.regionId } },
  });
  return new Uint8Array(readFileSync(region!.path));
}

/** Nothing of a refused import may remain: no snapshot, region, region file or state file. */
async function expectNothingLeft(): Promise<void> {
  expect((await unaryCall(client, 'listSnapshots', { templatesOnly: false })).snapshots).toEqual(
    [],
  );
  expect((await unaryCall(client, 'listRegions', { kind: 0 })).regions).toEqual([]);
  expect(readdirSync(dirs.persistentDir).filter((f) => f.startsWith('region-'))).toEqual([]);
  expect(readdirSync(join(dirs.persistentDir, 'snapshots'))).toEqual([]);
}

describe('ImportSnapshot', () => {
  it('loads the golden 1.0 fixture: every byte of memory, state and spec as the generator wrote them', async () => {
    const { snapshot } = await importFile(FIXTURE, { name: '', template: false }, 1000);
    expect(snapshot).toMatchObject({
      name: 'fixture',
      kind: pb.SnapshotKind.SNAPSHOT_KIND_IMPORTED,
      template: true,
      vmName: 'fixture-vm',
      vmmId: '',
      createdAt: { seconds: BigInt(Date.UTC(2025, 0, 2, 3, 4, 5) / 1000), nanos: 0 },
      deviceStateBytes: BigInt(FIXTURE_DEVICE_STATE.length),
      blocks: [{ id: 'ram0', guestBase: 0x8000_0000n, size: 65536n, owned: true }],
    });
    expect(new Uint8Array(snapshot!.vmSpec)).toEqual(FIXTURE_VM_SPEC);
    const memory = await blockMemory(snapshot!);
    expect(Buffer.from(memory).equals(Buffer.from(fixtureMemory()))).toBe(true);
    const { region } = await unaryCall(client, 'getRegion', {
      region: { selector: { $case: 'id', value: snapshot!.blocks[0]!.regionId } },
    });
    expect(region).toMatchObject({
      kind: pb.RegionKind.REGION_KIND_PERSISTENT,
      state: pb.RegionState.REGION_STATE_SEALED,
    });
    expect(statSync(region!.path).mode & 0o777).toBe(0o444);
    const got = await unaryCall(client, 'getSnapshot', {
      snapshot: bySnapshot('fixture'),
      withDeviceState: true,
    });
    expect(new Uint8Array(got.deviceState)).toEqual(FIXTURE_DEVICE_STATE);
    // Its regions are its own: deleting the snapshot deletes them.
    await unaryCall(client, 'deleteSnapshot', { snapshot: bySnapshot('fixture') });
    await expectNothingLeft();
  });

  it('takes the name and template flag of the start message; refuses a name in use', async () => {
    const { snapshot } = await importFile(FIXTURE, { name: 'other', template: true });
    expect(snapshot).toMatchObject({ name: 'other', template: true });
    const again = await failure<RemoteError>(
      importFile(FIXTURE, { name: 'other', template: false }),
    );
    expect(again).toMatchObject({ code: 'SNAPSHOT_EXISTS', status: grpc.status.ALREADY_EXISTS });
    expect((await unaryCall(client, 'listRegions', { kind: 0 })).regions).toHaveLength(1);
  });

  const damaged: [string, () => Uint8Array, RegExp][] = [
    ['a file truncated in a run', () => FIXTURE.subarray(0, FIXTURE.length - 5000), /truncated/],
    [
      'truncated before the trailer',
      () => FIXTURE.subarray(0, FIXTURE.length - 28),
      /before its trailer/,
    ],
    [
      'a file with a flipped byte in a page',
      () => {
        const f = FIXTURE.slice();
        f[f.length - 100]! ^= 1;
        return f;
      },
      /page run section .* fails its CRC-32C/,
    ],
    [
      'a file of a newer major version',
      () => {
        const f = FIXTURE.slice();
        f.set(encodePreamble(2, 0));
        return f;
      },
      /format version 2\.0 .* newer memstore/,
    ],
    ['an empty file', () => new Uint8Array(0), /truncated/],
  ];

  it.each(damaged)(
    'refuses %s with SNAPSHOT_FORMAT and leaves nothing behind',
    async (_what, file, message) => {
      const err = await failure<RemoteError>(importFile(file()));
      expect(err).toMatchObject({
        code: 'SNAPSHOT_FORMAT',
        status: grpc.status.INVALID_ARGUMENT,
        message: expect.stringMatching(message),
      });
      await expectNothingLeft();
    },
  );

  it('refuses a stream that does not start with `start`', async () => {
    const err = await new Promise<RemoteError>((resolve) => {
      const call = client.importSnapshot((e: grpc.ServiceError | null) =>
        resolve(RemoteError.fromGrpc(e!, 'importSnapshot')),
      );
      call.write({ part: { $case: 'data', value: FIXTURE } });
      call.end();
    });
    expect(err).toMatchObject({
      code: 'SNAPSHOT_INVALID',
      message: expect.stringContaining('start'),
    });
    await expectNothingLeft();
  });
});

describe('ExportSnapshot', () => {
  /** A snapshot of a 4 MiB region with a few pages written (sealed in place, full save). */
  async function savedSnapshot(name: string, size: bigint, pages: number[]): Promise<void> {
    const { region } = await unaryCall(client, 'createRegion', {
      name: `${name}-ram`,
      size,
      kind: pb.RegionKind.REGION_KIND_VOLATILE,
    });
    const fd = openSync(region!.path, 'r+');
    const page = Buffer.alloc(4096);
    for (const p of pages) {
      page.fill(p & 0xff);
      page.writeUInt32LE(p, 0);
      writeSync(fd, page, 0, 4096, p * 4096);
    }
    closeSync(fd);
    await unaryCall(client, 'createSnapshot', {
      name,
      template: false,
      kind: pb.SnapshotKind.SNAPSHOT_KIND_FULL,
      vmName: 'vm1',
      vmSpec: new Uint8Array([5]),
      deviceState: new Uint8Array(100).fill(3),
      blocks: [
        {
          id: 'ram0',
          guestBase: 0x80000000n,
          size,
          region: byName(`${name}-ram`),
          epoch: 0n,
          owned: true,
          layerPages: new Uint8Array(0),
        },
      ],
      holder: 'vmm-a/vm1',
      parent: '',
    });
  }

  it('streams only the written pages in chunks of at most 1 MiB; the file imports to the same memory', async () => {
    const pages = [0, 1, 2, 700, 1023, ...Array.from({ length: 300 }, (_, i) => 300 + i)];
    await savedSnapshot('saved', 4n << 20n, pages);
    const msgs = await exportAll('saved');
    const file = new Uint8Array(Buffer.concat(msgs.map((m) => m.data)));
    expect(msgs[0]!.totalBytes).toBe(BigInt(file.length));
    expect(msgs.slice(1).every((m) => m.totalBytes === 0n)).toBe(true);
    expect(msgs.every((m) => m.data.length <= MAX_CHUNK_BYTES)).toBe(true);
    expect(msgs.slice(0, -1).every((m) => m.data.length === MAX_CHUNK_BYTES)).toBe(true);
    // Holes cost nothing: 305 pages written of 1024.
    expect(file.length).toBeLessThan(306 * 4096 + 4096);
    const parser = new SnapshotFileParser({ maxBlockSize: 1 << 30 });
    const runs = parser.push(file).filter((s) => s.type === 'run');
    parser.finish();
    expect(runs.map((r) => [r.firstPage, r.pageCount])).toEqual([
      [0, 3],
      [300, 256],
      [556, 44],
      [700, 1],
      [1023, 1],
    ]);

    const { snapshot } = await importFile(file, { name: 'copy', template: false }, 777_777);
    const original = (
      await unaryCall(client, 'getSnapshot', {
        snapshot: bySnapshot('saved'),
        withDeviceState: false,
      })
    ).snapshot!;
    const [a, b] = [await blockMemory(original), await blockMemory(snapshot!)];
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    expect(snapshot).toMatchObject({ kind: pb.SnapshotKind.SNAPSHOT_KIND_IMPORTED, vmName: 'vm1' });
  });

  it('answers SNAPSHOT_NOT_FOUND for an unknown snapshot', async () => {
    expect(await failure(exportAll('nope'))).toMatchObject({ code: 'SNAPSHOT_NOT_FOUND' });
  });

  it('waits for a slow reader instead of reading ahead, and stops when cancelled', async () => {
    await savedSnapshot(
      'big',
      64n << 20n,
      Array.from({ length: 16384 }, (_, i) => i),
    );
    const handle = await open(join(dirs.stateDir, 'catalog.db'), 'r');
    const reads = vi.spyOn(Object.getPrototypeOf(handle) as { read: () => unknown }, 'read');
    await handle.close();
    const stream = client.exportSnapshot({ snapshot: bySnapshot('big') });
    let received = 0;
    await new Promise<void>((resolve) => {
      stream.on('data', () => {
        received++;
        if (received === 1) {
          stream.pause();
          resolve();
        }
      });
      stream.on('error', () => undefined);
    });
    // The reader is paused: the export fills the transport's windows, then waits. Wait until it
    // has read nothing for 250 ms (it is then blocked on the paused reader, not between reads).
    let whilePaused = -1;
    for (let t = 0; t < 40 && reads.mock.calls.length !== whilePaused; t++) {
      whilePaused = reads.mock.calls.length;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(received).toBeLessThan(64);
    expect(whilePaused).toBeLessThan(64);
    stream.cancel();
    await new Promise((r) => setTimeout(r, 200));
    expect(reads.mock.calls.length).toBe(whilePaused);
    reads.mockRestore();
    expect((await unaryCall(client, 'getInfo', {})).regionCount).toBe(1);
  });
});
