import * as grpc from '@grpc/grpc-js';
import { memstore as msPb } from '@handoff/proto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { VmSpec } from '../model/types.js';
import { closeRamBlocks, type RamBacking, type RamContext } from '../ram/index.js';
import { encodeDeviceState } from '../snapshot/index.js';
import type { VmHost } from '../vm/host.js';
import { encodeSpecBytes } from '../wire/spec.js';
import { SaveRestore } from './save-restore.js';
import { logger, machineState, SIZE, snapshotPb } from './test-support.js';

const dir = mkdtempSync(join(tmpdir(), 'handoff-clone-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const regionFile = join(dir, 'region.mem');
writeFileSync(regionFile, Buffer.alloc(SIZE));

type Callback = (err: Partial<grpc.ServiceError> | null, res?: unknown) => void;

/**
 * A host whose memstore answers the snapshot and lets `failAttach`'s AttachClone (counted from
 * 1) fail; it records the VMs started, destroyed, and the names reserved and released.
 */
function cloneHost(failAttach: number) {
  const events: string[] = [];
  const spec: VmSpec = {
    name: 'kv',
    guest: 'kvserver',
    ram: [{ id: 'ram0', guestBase: 0x8000_0000, size: SIZE, backend: 'shared', region: 'kv-ram0' }],
    args: {},
  };
  const state = encodeDeviceState(machineState);
  let attaches = 0;
  const client = {
    getSnapshot(_req: unknown, _md: unknown, _o: unknown, cb: Callback) {
      const snapshot = snapshotPb('tpl', {
        vmSpec: encodeSpecBytes(spec),
        deviceStateBytes: BigInt(state.length),
      });
      cb(null, { snapshot, deviceState: state });
    },
    attachClone(req: msPb.AttachCloneRequest, _md: unknown, _o: unknown, cb: Callback) {
      if (++attaches === failAttach) {
        cb({
          code: grpc.status.UNAVAILABLE,
          details: 'memstore went away',
          metadata: new grpc.Metadata(),
        });
        return;
      }
      events.push(`attach ${req.holder}`);
      const template = msPb.Region.fromPartial({
        id: 'r1',
        name: 'kv-ram0',
        state: msPb.RegionState.REGION_STATE_SEALED,
        size: BigInt(SIZE),
        identity: 'i1',
        path: regionFile,
      });
      cb(null, { template });
    },
    detachClone(req: msPb.DetachCloneRequest, _md: unknown, _o: unknown, cb: Callback) {
      events.push(`detach ${req.holder}`);
      cb(null, {});
    },
  };
  const ctx = (vmName: string) =>
    ({
      vmmId: 'vmm-a',
      vmName,
      memstore: () => client,
      memstoreAddress: '127.0.0.1:1',
      deadlineMs: 1000,
      logger,
    }) as unknown as RamContext;
  const host = {
    reserveNames: (names: string[]) => {
      events.push(`reserve ${names.join(',')}`);
      return () => events.push('release');
    },
    ramContext: ctx,
    checkIncomingSpec: (s: VmSpec) => s,
    spawnIncoming: (s: VmSpec, ram: RamBacking[]) => ({
      name: s.name,
      log: logger,
      spawned: () => Promise.resolve(),
      runsFrom: () => undefined,
      info: () => ({ name: s.name }),
      destroy: () => closeRamBlocks(ram),
    }),
    adoptAndRun: (vm: { name: string }) => {
      events.push(`run ${vm.name}`);
      return Promise.resolve(Date.now());
    },
    destroy: (name: string) => {
      events.push(`destroy ${name}`);
      return Promise.resolve();
    },
  };
  return { host: host as unknown as VmHost, events };
}

describe('CloneVms', () => {
  it('starts every clone from one read of the snapshot', async () => {
    const { host, events } = cloneHost(0);
    const started = await new SaveRestore(host).clone({
      snapshot: 'tpl',
      count: 3,
      namePrefix: '',
      firstIndex: 7,
      paused: false,
      jobId: '',
    });
    expect(started.map((s) => s.vm.name)).toEqual(['tpl-7', 'tpl-8', 'tpl-9']);
    expect(events[0]).toBe('reserve tpl-7,tpl-8,tpl-9');
    expect(events.filter((e) => e.startsWith('run')).sort()).toEqual([
      'run tpl-7',
      'run tpl-8',
      'run tpl-9',
    ]);
    expect(events.at(-1)).toBe('release');
  });

  it('takes the started clones down when one fails, and starts no more', async () => {
    const { host, events } = cloneHost(3);
    await expect(
      new SaveRestore(host).clone({
        snapshot: 'tpl',
        count: 8,
        namePrefix: 'c',
        firstIndex: 0,
        paused: false,
        jobId: '',
      }),
    ).rejects.toMatchObject({ code: 'VMM_MEMSTORE_UNAVAILABLE' });
    const ran = events.filter((e) => e.startsWith('run ')).map((e) => e.slice(4));
    const destroyed = events.filter((e) => e.startsWith('destroy ')).map((e) => e.slice(8));
    expect(ran.length).toBeGreaterThan(0);
    expect(ran.length).toBeLessThan(8); // four at a time: the failure stopped the rest
    expect(destroyed.sort()).toEqual(ran.sort());
    expect(events.at(-1)).toBe('release');
  });

  it('refuses a prefix that makes a name no VM may have, before anything is asked', async () => {
    const { host, events } = cloneHost(0);
    await expect(
      new SaveRestore(host).clone({
        snapshot: 'tpl',
        count: 10,
        namePrefix: 'x'.repeat(46), // "x…x-10" is 49 characters
        firstIndex: 0,
        paused: false,
        jobId: '',
      }),
    ).rejects.toMatchObject({
      code: 'VMM_INVALID_ARGUMENT',
      message: expect.stringContaining('-10'),
    });
    expect(events).toEqual([]);
  });
});
