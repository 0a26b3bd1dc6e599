import * as grpc from '@grpc/grpc-js';
import { PageBitmap } from '@handoff/bitmap';
import { describe, expect, it } from 'vitest';
import { ControlDevice } from '../devices/control.js';
import type { RamBacking } from '../ram/index.js';
import { encodeDeviceState } from '../snapshot/index.js';
import type { VmHost } from '../vm/host.js';
import { encodeSpecBytes } from '../wire/spec.js';
import { pagesToCopy } from './page-copy.js';
import { prepareSnapshot, withIdentity } from './restore.js';
import { fakeMemstore, machineState, SIZE, snapshotPb, type Answer } from './test-support.js';

const spec = {
  name: 'kv',
  guest: 'kvserver',
  ram: [
    {
      id: 'ram0',
      guestBase: 0x8000_0000,
      size: SIZE,
      backend: 'shared' as const,
      region: 'kv-ram0',
      regionOwned: true,
    },
  ],
  args: { 'kv.work': '2' },
};
const state = encodeDeviceState(machineState);

/** prepareSnapshot against a memstore that answers `answer` to GetSnapshot. */
function prepare(answer: Answer) {
  const memstore = fakeMemstore({ getSnapshot: [answer] });
  const host = { ramContext: () => memstore.ctx } as unknown as VmHost;
  return { result: prepareSnapshot(host, 'snap'), memstore };
}

const answer = (over: Parameters<typeof snapshotPb>[1] = {}, deviceState = state): Answer => ({
  ok: {
    snapshot: snapshotPb('snap', {
      vmSpec: encodeSpecBytes(spec),
      deviceStateBytes: BigInt(deviceState.length),
      ...over,
    }),
    deviceState,
  },
});

describe('a snapshot read for a restore', () => {
  it('is read once with its device state, and gives clone RAM of its regions and the saved state', async () => {
    const { result, memstore } = prepare(answer());
    const p = await result;
    expect(memstore.asked).toEqual([
      {
        method: 'getSnapshot',
        request: {
          snapshot: { selector: { $case: 'name', value: 'snap' } },
          withDeviceState: true,
        },
      },
    ]);
    expect(p.spec).toEqual(spec);
    expect(p.ram).toEqual([
      { id: 'ram0', guestBase: 0x8000_0000, size: SIZE, backend: 'clone', region: 'kv-ram0' },
    ]);
    expect(p.state).toEqual(machineState);
  });

  it.each([
    [
      'its blocks are not its VM’s',
      answer({
        blocks: [{ ...snapshotPb('x').blocks[0]!, size: BigInt(2 * SIZE) }],
      }),
      /blocks \(ram0:2097152\) are not its VM's \(ram0:1048576\)/,
    ],
    ['its spec does not decode', answer({ vmSpec: Uint8Array.of(0xff, 0xff, 0xff) }), /VM spec/],
    [
      'its device state is not the length recorded',
      answer({ deviceStateBytes: BigInt(state.length + 1) }),
      /device state is \d+ bytes, the snapshot records/,
    ],
    [
      'its device state does not load',
      answer({}, new TextEncoder().encode('not a device-state container')),
      /device state does not load/,
    ],
  ])('is refused with VMM_SNAPSHOT_INVALID when %s', async (_what, a, message) => {
    await expect(prepare(a).result).rejects.toMatchObject({
      code: 'VMM_SNAPSHOT_INVALID',
      message: expect.stringMatching(message),
    });
  });

  it('passes memstore’s refusals on', async () => {
    const corrupt: Answer = { status: grpc.status.DATA_LOSS, code: 'SNAPSHOT_CORRUPT' };
    await expect(prepare(corrupt).result).rejects.toMatchObject({ code: 'SNAPSHOT_CORRUPT' });
  });

  it('of a layer reads its chain of parents once and gives each block the identities it recorded', async () => {
    const block0 = snapshotPb('x').blocks[0]!;
    const parentOf = (name: string, parent: string, identity: string, size = SIZE): Answer => ({
      ok: {
        snapshot: snapshotPb(name, {
          parent,
          blocks: [{ ...block0, identity, size: BigInt(size) }],
        }),
        deviceState: new Uint8Array(0),
      },
    });
    const layer = answer({ parent: 'l1', depth: 2, blocks: [{ ...block0, identity: 'i2' }] });
    const memstore = fakeMemstore({
      getSnapshot: [layer, parentOf('l1', 't0', 'i1'), parentOf('t0', '', 'i0')],
    });
    const host = { ramContext: () => memstore.ctx } as unknown as VmHost;
    const p = await prepareSnapshot(host, 'snap');
    expect(p.chains).toEqual([['i0', 'i1', 'i2']]);
    expect(memstore.asked.map((a) => a.request)).toEqual([
      { snapshot: { selector: { $case: 'name', value: 'snap' } }, withDeviceState: true },
      { snapshot: { selector: { $case: 'name', value: 'l1' } }, withDeviceState: false },
      { snapshot: { selector: { $case: 'name', value: 't0' } }, withDeviceState: false },
    ]);

    const other = fakeMemstore({ getSnapshot: [layer, parentOf('l1', '', 'i1', 2 * SIZE)] });
    const otherHost = { ramContext: () => other.ctx } as unknown as VmHost;
    await expect(prepareSnapshot(otherHost, 'snap')).rejects.toMatchObject({
      code: 'VMM_SNAPSHOT_INVALID',
      message: expect.stringMatching(/blocks are not those of snapshot l1, which it layers on/),
    });
  });
});

describe('a restored VM’s identity', () => {
  it('replaces the generation id and entropy, and keeps everything else (the clock included)', () => {
    const identity = ControlDevice.randomIdentity();
    const restored = withIdentity(machineState, identity);
    expect(BigInt(`0x${restored.control.generationId}`)).toBe(identity.generationId);
    expect(restored.control.entropy).toEqual(Array.from(identity.entropy));
    expect(restored.control.entropy).not.toEqual(machineState.control.entropy);
    expect({ ...restored, control: undefined }).toEqual({ ...machineState, control: undefined });
    expect(restored.control.hostArgs).toEqual(machineState.control.hostArgs);
    expect(restored.clock).toEqual(machineState.clock);
  });
});

describe('the pages a full save copies', () => {
  const PAGES = SIZE / 4096;
  const block = (backend: 'private' | 'shared' | 'clone', ranges: [number, number][] | null) =>
    ({
      spec: { id: 'ram0', guestBase: 0x8000_0000, size: SIZE, backend, region: '' },
      dataRanges: () => (backend === 'clone' ? [[0, SIZE]] : ranges),
      templateDataRanges: () => (backend === 'clone' ? ranges : [[0, SIZE]]),
    }) as unknown as RamBacking;
  const touched = PageBitmap.fromIndices(PAGES, [3, 4, 200]);

  it('are the written pages when the others are known zero', () => {
    expect(pagesToCopy(block('private', null), touched, true).toIndices()).toEqual([3, 4, 200]);
  });

  it('add the file’s data ranges otherwise, and the template’s for clone RAM', () => {
    const data: [number, number][] = [[10 * 4096, 12 * 4096 + 1]];
    expect(pagesToCopy(block('shared', data), touched, false).toIndices()).toEqual([
      3, 4, 10, 11, 12, 200,
    ]);
    expect(pagesToCopy(block('clone', data), touched, false).toIndices()).toEqual([
      3, 4, 10, 11, 12, 200,
    ]);
  });

  it('are every page when nothing says where the data is', () => {
    expect(pagesToCopy(block('shared', null), touched, false).popcount()).toBe(PAGES);
    expect(pagesToCopy(block('clone', null), null, false).popcount()).toBe(PAGES);
  });
});
