import * as grpc from '@grpc/grpc-js';
import { memstore as pb } from '@handoff/proto';
import { channelCredentials, createClient, RemoteError, unaryCall } from '@handoff/service';
import { openSync, writeSync, closeSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PageReader } from '../regions/page-reader.js';
import { memstoreConfig } from '../config.js';
import { startMemstore, type MemstoreHandle } from '../start.js';
import { byName, failure, makeTempDirs, type TempDirs } from '../testing/fixtures.js';
import { MAX_CHUNK_BYTES } from './read-pages.js';

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
      'max-region-size': '256M',
      'shutdown-timeout-ms': 1000,
    }),
  );
  client = createClient(pb.MemstoreServiceClient, handle.address, channelCredentials(null));
});

afterEach(async () => {
  client.close();
  await handle.stop('test done');
  dirs.cleanup();
});

function readAll(req: pb.ReadPagesRequest): Promise<pb.ReadPagesResponse[]> {
  return new Promise((resolve, reject) => {
    const out: pb.ReadPagesResponse[] = [];
    const stream = client.readPages(req, { deadline: Date.now() + 20_000 });
    stream.on('data', (m: pb.ReadPagesResponse) => out.push(m));
    stream.on('error', (e) => reject(RemoteError.fromGrpc(e, 'readPages')));
    stream.on('end', () => resolve(out));
  });
}

describe('MemstoreService over gRPC', () => {
  it('creates, reports and lists regions with wire types', async () => {
    const { region } = await unaryCall(client, 'createRegion', {
      name: 'vm1-ram',
      size: 1n << 20n,
      kind: pb.RegionKind.REGION_KIND_PERSISTENT,
    });
    expect(region).toMatchObject({
      name: 'vm1-ram',
      size: 1n << 20n,
      kind: pb.RegionKind.REGION_KIND_PERSISTENT,
      state: pb.RegionState.REGION_STATE_ACTIVE,
      allocatedBytes: 0n,
      cloneCount: 0,
      parentId: '',
    });
    const got = await unaryCall(client, 'getRegion', {
      region: { selector: { $case: 'id', value: region!.id } },
    });
    expect(got.region?.identity).toBe(region!.identity);
    const volatile = await unaryCall(client, 'listRegions', {
      kind: pb.RegionKind.REGION_KIND_VOLATILE,
    });
    expect(volatile.regions).toEqual([]);
    const info = await unaryCall(client, 'getInfo', {});
    expect(info).toMatchObject({
      regionCount: 1,
      totalSize: 1n << 20n,
      maxRegionSize: 256n << 20n,
    });
    expect(info.volatileDir).toBe(dirs.volatileDir);
  });

  it('defaults an unspecified kind to VOLATILE', async () => {
    const { region } = await unaryCall(client, 'createRegion', { name: 'v', size: 4096n, kind: 0 });
    expect(region?.kind).toBe(pb.RegionKind.REGION_KIND_VOLATILE);
  });

  it('maps domain errors to their stable code and gRPC status', async () => {
    const notFound = await failure<RemoteError>(
      unaryCall(client, 'getRegion', { region: byName('nope') }),
    );
    expect(notFound).toMatchObject({ code: 'REGION_NOT_FOUND', status: grpc.status.NOT_FOUND });
    const empty = await failure<RemoteError>(unaryCall(client, 'getRegion', { region: undefined }));
    expect(empty).toMatchObject({
      code: 'REGION_INVALID_ARGUMENT',
      status: grpc.status.INVALID_ARGUMENT,
    });
    const badSize = await failure<RemoteError>(
      unaryCall(client, 'createRegion', { name: 'x', size: 10n, kind: 1 }),
    );
    expect(badSize).toMatchObject({
      code: 'REGION_INVALID_SIZE',
      status: grpc.status.INVALID_ARGUMENT,
    });
  });

  it('runs the lease protocol: acquire, stale transfer (ABORTED), transfer, validate, release', async () => {
    await unaryCall(client, 'createRegion', { name: 'r', size: 4096n, kind: 1 });
    const { lease } = await unaryCall(client, 'acquireLease', {
      region: byName('r'),
      holder: 'vmm-a/vm1',
    });
    expect(lease).toMatchObject({ holder: 'vmm-a/vm1', epoch: 1n });
    const stale = await failure<RemoteError>(
      unaryCall(client, 'transferLease', {
        region: byName('r'),
        fromHolder: 'vmm-a/vm1',
        expectedEpoch: 0n,
        toHolder: 'vmm-b/vm1',
      }),
    );
    expect(stale).toMatchObject({ code: 'LEASE_STALE_EPOCH', status: grpc.status.ABORTED });
    const moved = await unaryCall(client, 'transferLease', {
      region: byName('r'),
      fromHolder: 'vmm-a/vm1',
      expectedEpoch: 1n,
      toHolder: 'vmm-b/vm1',
    });
    expect(moved.lease).toMatchObject({ holder: 'vmm-b/vm1', epoch: 2n });
    const old = await unaryCall(client, 'validateLease', {
      region: byName('r'),
      holder: 'vmm-a/vm1',
      epoch: 1n,
    });
    expect(old).toMatchObject({ valid: false, current: { holder: 'vmm-b/vm1', epoch: 2n } });
    await unaryCall(client, 'releaseLease', {
      region: byName('r'),
      holder: 'vmm-b/vm1',
      epoch: 2n,
    });
    const inUse = await unaryCall(client, 'getRegion', { region: byName('r') });
    expect(inUse.region?.lease).toBeUndefined();
  });

  it('ForceReleaseLease fences a lease whose holder is not known alive; the region reports the fence', async () => {
    await unaryCall(client, 'createRegion', {
      name: 'kept',
      size: 8192n,
      kind: pb.RegionKind.REGION_KIND_VOLATILE,
    });
    await unaryCall(client, 'acquireLease', { region: byName('kept'), holder: 'ghost/vm1' });
    const before = await unaryCall(client, 'getRegion', { region: byName('kept') });
    expect(before.region?.holder).toEqual({
      liveness: pb.HolderLiveness.HOLDER_LIVENESS_UNKNOWN,
      vmmId: 'ghost',
      pid: 0,
      since: undefined,
      connected: false,
    });
    const res = await unaryCall(client, 'forceReleaseLease', { region: byName('kept') });
    expect(res.fenced).toMatchObject({
      holder: 'ghost/vm1',
      epoch: 2n,
      reason: pb.FenceReason.FENCE_REASON_OPERATOR,
    });
    expect(res.region).toMatchObject({
      name: 'kept',
      state: pb.RegionState.REGION_STATE_ACTIVE,
      lease: undefined,
      holder: undefined,
      fenced: res.fenced,
    });
    const listed = await unaryCall(client, 'listRegions', {
      kind: pb.RegionKind.REGION_KIND_UNSPECIFIED,
    });
    expect(listed.regions[0]?.fenced?.holder).toBe('ghost/vm1');
    // Nothing leased any more: answered as it is.
    const again = await unaryCall(client, 'forceReleaseLease', { region: byName('kept') });
    expect(again.fenced).toBeUndefined();
    // The fenced holder cannot release or move its old epoch.
    await expect(
      unaryCall(client, 'releaseLease', { region: byName('kept'), holder: 'ghost/vm1', epoch: 1n }),
    ).rejects.toMatchObject({ code: 'LEASE_STALE_EPOCH' });
    await expect(
      unaryCall(client, 'forceReleaseLease', { region: byName('nope') }),
    ).rejects.toMatchObject({ code: 'REGION_NOT_FOUND', status: grpc.status.NOT_FOUND });
  });

  it('seals a template and tracks clones', async () => {
    await unaryCall(client, 'createRegion', { name: 't', size: 8192n, kind: 1 });
    const sealed = await unaryCall(client, 'sealTemplate', {
      region: byName('t'),
      holder: '',
      epoch: 0n,
    });
    expect(sealed.region?.state).toBe(pb.RegionState.REGION_STATE_SEALED);
    const attached = await unaryCall(client, 'attachClone', {
      template: byName('t'),
      holder: 'vmm-a/c1',
    });
    expect(attached.template).toMatchObject({ cloneCount: 1, mappedBy: ['vmm-a/c1'] });
    const refused = await failure<RemoteError>(
      unaryCall(client, 'deleteRegion', { region: byName('t') }),
    );
    expect(refused).toMatchObject({
      code: 'REGION_IN_USE',
      status: grpc.status.FAILED_PRECONDITION,
    });
    await unaryCall(client, 'detachClone', { template: byName('t'), holder: 'vmm-a/c1' });
    await unaryCall(client, 'deleteRegion', { region: byName('t') });
  });

  it('streams pages in chunks of at most 1 MiB with the right data', async () => {
    const pages = 3 * 256 + 5;
    const { region } = await unaryCall(client, 'createRegion', {
      name: 'p',
      size: BigInt(pages * 4096),
      kind: 1,
    });
    const fd = openSync(region!.path, 'r+');
    const page = Buffer.alloc(4096);
    for (let i = 0; i < pages; i++) {
      page.writeUInt32LE(i, 0);
      page.writeUInt32LE((i ^ 0xdeadbeef) >>> 0, 4092);
      writeSync(fd, page, 0, 4096, i * 4096);
    }
    closeSync(fd);
    const msgs = await readAll({
      region: byName('p'),
      firstPage: 3n,
      pageCount: BigInt(pages - 3),
    });
    expect(msgs.map((m) => m.data.length)).toEqual([
      MAX_CHUNK_BYTES,
      MAX_CHUNK_BYTES,
      MAX_CHUNK_BYTES,
      2 * 4096,
    ]);
    let expected = 3;
    for (const m of msgs) {
      expect(m.firstPage).toBe(BigInt(expected));
      const view = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.length);
      for (let off = 0; off < view.length; off += 4096, expected++) {
        expect(view.readUInt32LE(off)).toBe(expected);
        expect(view.readUInt32LE(off + 4092)).toBe((expected ^ 0xdeadbeef) >>> 0);
      }
    }
    expect(expected).toBe(pages);
  });

  it('refuses page ranges outside the region with OUT_OF_RANGE', async () => {
    await unaryCall(client, 'createRegion', { name: 'p', size: 8192n, kind: 1 });
    const err = await failure<RemoteError>(
      readAll({ region: byName('p'), firstPage: 1n, pageCount: 2n }),
    );
    expect(err).toMatchObject({ code: 'REGION_OUT_OF_RANGE', status: grpc.status.OUT_OF_RANGE });
  });

  it('honours a slow reader and a cancelled stream', async () => {
    await unaryCall(client, 'createRegion', { name: 'big', size: 64n << 20n, kind: 1 });
    const reads = vi.spyOn(PageReader.prototype, 'read');
    const stream = client.readPages({
      region: byName('big'),
      firstPage: 0n,
      pageCount: (64n << 20n) / 4096n,
    });
    let received = 0;
    await new Promise<void>((resolve) => {
      stream.on('data', (m: pb.ReadPagesResponse) => {
        received++;
        if (received === 1) {
          // Stop reading: the server must wait for 'drain' instead of buffering the rest.
          stream.pause();
          setTimeout(() => {
            stream.cancel();
            resolve();
          }, 300);
        }
        expect(m.data.length).toBeLessThanOrEqual(MAX_CHUNK_BYTES);
      });
      stream.on('error', () => undefined);
    });
    expect(received).toBeLessThan(64);
    // The server stopped reading the file while the client did not take messages.
    const readsWhilePaused = reads.mock.calls.length;
    expect(readsWhilePaused).toBeLessThan(64);
    await new Promise((r) => setTimeout(r, 100));
    expect(reads.mock.calls.length).toBe(readsWhilePaused);
    reads.mockRestore();
    // The service stays healthy and serves the next call.
    const info = await unaryCall(client, 'getInfo', {});
    expect(info.regionCount).toBe(1);
  });
});
