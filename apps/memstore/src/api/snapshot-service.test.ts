import * as grpc from '@grpc/grpc-js';
import { memstore as pb } from '@handoff/proto';
import type { RemoteError } from '@handoff/service';
import { createClient, unaryCall } from '@handoff/service';
import { testCredentials, testTlsDir } from '@handoff/service/testing';
import { writeFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { memstoreConfig } from '../config.js';
import { startMemstore, type MemstoreHandle } from '../start.js';
import { byName, failure, makeTempDirs, type TempDirs } from '../testing/fixtures.js';
import { crc32c } from '../snapshots/crc32c.js';

/**
 * The snapshot calls over gRPC with mutual TLS: a vmm (vmm-a) saves its own VMs, an operator
 * reads and deletes, and the errors arrive with their codes and gRPC statuses.
 */

let dirs: TempDirs;
let handle: MemstoreHandle;
let vmm: pb.MemstoreServiceClient;
let operator: pb.MemstoreServiceClient;

const MiB = 1n << 20n;
const STATE = new Uint8Array(3000).map((_, i) => (i * 7) & 0xff);
const bySnapshot = (name: string): pb.SnapshotSelector => ({
  selector: { $case: 'name', value: name },
});

beforeEach(async () => {
  dirs = makeTempDirs();
  handle = await startMemstore(
    memstoreConfig({
      port: 0,
      'state-dir': dirs.stateDir,
      'volatile-dir': dirs.volatileDir,
      'shutdown-timeout-ms': 1000,
      'lease-socket': 'off',
      'tls-dir': await testTlsDir({ id: 'memstore', role: 'memstore' }),
    }),
  );
  const as = async (id: string, role: 'vmm' | 'operator') =>
    createClient(
      pb.MemstoreServiceClient,
      handle.address,
      await testCredentials({ id, role }, { serverRole: 'memstore' }),
    );
  vmm = await as('vmm-a', 'vmm');
  operator = await as('operator', 'operator');
});

afterEach(async () => {
  vmm.close();
  operator.close();
  await handle.stop('test done');
  dirs.cleanup();
});

/** A VM's region `name` leased by vmm-a/vm1 at epoch 1. */
async function vmRegion(name: string): Promise<pb.Region> {
  const { region } = await unaryCall(vmm, 'createRegion', {
    name,
    size: MiB,
    kind: pb.RegionKind.REGION_KIND_VOLATILE,
  });
  await unaryCall(vmm, 'acquireLease', { region: byName(name), holder: 'vmm-a/vm1' });
  return region!;
}

function createRequest(over: Partial<pb.CreateSnapshotRequest> = {}): pb.CreateSnapshotRequest {
  return {
    name: 'golden',
    template: true,
    kind: pb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
    vmName: 'vm1',
    vmSpec: new Uint8Array([1, 2, 3]),
    deviceState: STATE,
    blocks: [
      {
        id: 'ram0',
        guestBase: 0x8000_0000n,
        size: MiB,
        region: byName('ram'),
        epoch: 1n,
        owned: true,
        layerPages: new Uint8Array(0),
      },
    ],
    holder: 'vmm-a/vm1',
    parent: '',
    ...over,
  };
}

describe('snapshots over gRPC', () => {
  it('creates, gets (with checked state), lists and deletes a snapshot', async () => {
    const region = await vmRegion('ram');
    const { snapshot } = await unaryCall(vmm, 'createSnapshot', createRequest());
    expect(snapshot).toMatchObject({
      name: 'golden',
      kind: pb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
      template: true,
      vmName: 'vm1',
      vmmId: 'vmm-a',
      deviceStateBytes: BigInt(STATE.length),
      deviceStateCrc32c: crc32c(STATE),
      clones: [],
      parent: '',
      blocks: [
        {
          id: 'ram0',
          guestBase: 0x8000_0000n,
          size: MiB,
          regionId: region.id,
          regionName: 'ram',
          identity: region.identity,
          owned: true,
          layerPages: new Uint8Array(0),
        },
      ],
    });
    const sealed = await unaryCall(vmm, 'getRegion', { region: byName('ram') });
    expect(sealed.region).toMatchObject({
      state: pb.RegionState.REGION_STATE_SEALED,
      lease: undefined,
    });

    const plain = await unaryCall(operator, 'getSnapshot', {
      snapshot: bySnapshot('golden'),
      withDeviceState: false,
    });
    expect(plain.deviceState).toEqual(new Uint8Array(0));
    const full = await unaryCall(vmm, 'getSnapshot', {
      snapshot: { selector: { $case: 'id', value: snapshot!.id } },
      withDeviceState: true,
    });
    expect(new Uint8Array(full.deviceState)).toEqual(STATE);
    expect(new Uint8Array(full.snapshot!.vmSpec)).toEqual(new Uint8Array([1, 2, 3]));

    await unaryCall(vmm, 'attachClone', { template: byName('ram'), holder: 'vmm-a/clone1' });
    const listed = await unaryCall(operator, 'listSnapshots', { templatesOnly: true });
    expect(listed.snapshots.map((s) => [s.name, s.clones])).toEqual([['golden', ['vmm-a/clone1']]]);
    const inUse = await failure<RemoteError>(
      unaryCall(operator, 'deleteSnapshot', { snapshot: bySnapshot('golden') }),
    );
    expect(inUse).toMatchObject({
      code: 'SNAPSHOT_IN_USE',
      status: grpc.status.FAILED_PRECONDITION,
      message: expect.stringContaining('vmm-a/clone1'),
    });
    const regionInUse = await failure<RemoteError>(
      unaryCall(operator, 'deleteRegion', { region: byName('ram') }),
    );
    expect(regionInUse).toMatchObject({ code: 'REGION_IN_USE' });
    await unaryCall(vmm, 'detachClone', { template: byName('ram'), holder: 'vmm-a/clone1' });
    await unaryCall(operator, 'deleteSnapshot', { snapshot: bySnapshot('golden') });
    expect(
      (await unaryCall(operator, 'listSnapshots', { templatesOnly: false })).snapshots,
    ).toEqual([]);
    // The snapshot owned the region: deleted with it.
    const gone = await failure<RemoteError>(unaryCall(vmm, 'getRegion', { region: byName('ram') }));
    expect(gone).toMatchObject({ code: 'REGION_NOT_FOUND' });
  });

  it('maps snapshot errors to their codes and statuses', async () => {
    await vmRegion('ram');
    const cases: [Partial<pb.CreateSnapshotRequest>, string, grpc.status][] = [
      [{ name: '' }, 'SNAPSHOT_INVALID', grpc.status.INVALID_ARGUMENT],
      [
        { kind: pb.SnapshotKind.SNAPSHOT_KIND_UNSPECIFIED },
        'SNAPSHOT_INVALID',
        grpc.status.INVALID_ARGUMENT,
      ],
      [
        { deviceState: new Uint8Array((4 << 20) + 1) },
        'SNAPSHOT_INVALID',
        grpc.status.INVALID_ARGUMENT,
      ],
    ];
    for (const [over, code, status] of cases) {
      expect(await failure(unaryCall(vmm, 'createSnapshot', createRequest(over)))).toMatchObject({
        code,
        status,
      });
    }
    const stale = createRequest();
    stale.blocks[0]!.epoch = 9n;
    expect(await failure(unaryCall(vmm, 'createSnapshot', stale))).toMatchObject({
      code: 'LEASE_STALE_EPOCH',
      status: grpc.status.ABORTED,
    });
    await unaryCall(vmm, 'createSnapshot', createRequest());
    expect(await failure(unaryCall(vmm, 'createSnapshot', createRequest()))).toMatchObject({
      code: 'SNAPSHOT_EXISTS',
      status: grpc.status.ALREADY_EXISTS,
    });
    expect(
      await failure(
        unaryCall(operator, 'getSnapshot', {
          snapshot: bySnapshot('nope'),
          withDeviceState: false,
        }),
      ),
    ).toMatchObject({ code: 'SNAPSHOT_NOT_FOUND', status: grpc.status.NOT_FOUND });
    expect(
      await failure(
        unaryCall(operator, 'getSnapshot', { snapshot: undefined, withDeviceState: false }),
      ),
    ).toMatchObject({ code: 'SNAPSHOT_INVALID', status: grpc.status.INVALID_ARGUMENT });
  });

  it('lets a vmm snapshot only its own VMs, and only vmms create snapshots', async () => {
    await vmRegion('ram');
    const foreign = await failure<RemoteError>(
      unaryCall(vmm, 'createSnapshot', createRequest({ holder: 'vmm-b/vm1' })),
    );
    expect(foreign).toMatchObject({
      code: 'LEASE_FOREIGN_HOLDER',
      status: grpc.status.PERMISSION_DENIED,
    });
    const byOperator = await failure<RemoteError>(
      unaryCall(operator, 'createSnapshot', createRequest()),
    );
    expect(byOperator).toMatchObject({ status: grpc.status.PERMISSION_DENIED });
    const deleteByVmm = await failure<RemoteError>(
      unaryCall(vmm, 'deleteSnapshot', { snapshot: bySnapshot('golden') }),
    );
    expect(deleteByVmm).toMatchObject({ status: grpc.status.PERMISSION_DENIED });
    // Nothing was sealed by the refused calls.
    const region = await unaryCall(vmm, 'getRegion', { region: byName('ram') });
    expect(region.region).toMatchObject({
      state: pb.RegionState.REGION_STATE_ACTIVE,
      lease: { epoch: 1n },
    });
  });

  it('a layer: CreateSnapshot with parent and layer_pages, its depth and bitmap in answers, AttachClone answers the chain', async () => {
    const base = await vmRegion('ram');
    await unaryCall(vmm, 'createSnapshot', createRequest());
    const top = await vmRegion('top');
    writeFileSync(top.path, Buffer.alloc(4096, 0x5a), { flag: 'r+' });
    const pages = new Uint8Array(Number(MiB / 4096n / 8n));
    pages[0] = 0b1;
    const layerBlock = { ...createRequest().blocks[0]!, region: byName('top'), layerPages: pages };
    const { snapshot } = await unaryCall(
      vmm,
      'createSnapshot',
      createRequest({ name: 'layer', parent: 'golden', blocks: [layerBlock] }),
    );
    expect(snapshot).toMatchObject({
      parent: 'golden',
      depth: 1,
      blocks: [{ regionName: 'top', layerPageCount: 1n }],
    });
    expect(new Uint8Array(snapshot!.blocks[0]!.layerPages)).toEqual(pages);
    const listed = await unaryCall(operator, 'listSnapshots', { templatesOnly: false });
    expect(listed.snapshots.map((s) => [s.name, s.depth, s.blocks[0]!.layerPageCount])).toEqual([
      ['golden', 0, 0n],
      ['layer', 1, 1n],
    ]);

    const attached = await unaryCall(vmm, 'attachClone', {
      template: byName('top'),
      holder: 'vmm-a/c1',
    });
    expect(attached.template!.name).toBe('top');
    expect(attached.layers.map((l) => ({ ...l, pages: new Uint8Array(l.pages) }))).toEqual([
      { regionId: base.id, path: base.path, identity: base.identity, pages: new Uint8Array(0) },
      { regionId: top.id, path: top.path, identity: top.identity, pages },
    ]);
    const root = await unaryCall(vmm, 'attachClone', {
      template: byName('ram'),
      holder: 'vmm-a/c2',
    });
    expect(root.layers.map((l) => l.regionId)).toEqual([base.id]);

    await unaryCall(vmm, 'detachClone', { template: byName('ram'), holder: 'vmm-a/c2' });
    const refused = await failure<RemoteError>(
      unaryCall(operator, 'deleteSnapshot', { snapshot: bySnapshot('golden') }),
    );
    expect(refused).toMatchObject({
      code: 'SNAPSHOT_IN_USE',
      status: grpc.status.FAILED_PRECONDITION,
    });
    expect(refused.message).toContain('"layer" layer on snapshot "golden"');
    const bad = await failure<RemoteError>(
      unaryCall(
        vmm,
        'createSnapshot',
        createRequest({
          name: 'bad',
          parent: 'golden',
          blocks: [{ ...layerBlock, layerPages: new Uint8Array(1) }],
        }),
      ),
    );
    expect(bad).toMatchObject({ code: 'SNAPSHOT_INVALID', status: grpc.status.INVALID_ARGUMENT });
  });
});
