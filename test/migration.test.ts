import { closeSync, openSync, writeSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { memstore as msPb, migration as mpb, vmm as pb, type vmmStream } from '@handoff/proto';
import { RemoteError, unaryCall } from '@handoff/service';
import { resolveCapabilities } from '@handoff/qapi';
import type { MigrationInfo } from '@handoff/qapi';
import { capabilitiesToWire, migrationInfoFromWire, parametersToWire } from '@handoff/qapi/wire';
import { mapFile } from '@handoff/shm';
import { checkAbConsistency } from '@handoff/vmm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AB_BASE,
  AB_PAGES,
  abArgs,
  expectRetired,
  headerFor,
  migrateVm,
  migrateVmCall,
  rawIncoming,
  readPrivateRam,
  refused,
} from './helpers/migration.js';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { openConsole, startVmmProcess, vmmCall, vmSpec, type VmmUnderTest } from './helpers/vmm.js';

const { RamBackend } = pb;
const ROUNDS = 20;
/** Where a switchover slot's header lists the compact state layouts its target reads. */
const COMPACT_LAYOUTS_AT = 52;

/**
 * A completed migration's milestones are in order: the source stopped, its state left, the
 * target ran the guest; and the pause between the first and the last is the reported downtime.
 */
function expectTimeline(info: MigrationInfo): void {
  const t = info.timeline!;
  expect(t.stoppedMs).toBeGreaterThan(0);
  expect(t.statePublishedMs).toBeGreaterThanOrEqual(t.stoppedMs);
  expect(t.targetRunningMs).toBeGreaterThanOrEqual(t.statePublishedMs);
  expect(t.targetRunningMs).toBeLessThanOrEqual(info.totalTimeMs + 1);
  expect(Math.abs((t.targetRunningMs - t.stoppedMs) * 1000 - info.downtimeUs)).toBeLessThan(2);
}

describe('vmm-to-vmm migration, real processes on loopback', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let a: VmmUnderTest;
  let b: VmmUnderTest;

  const startVmm = (id: string, ...more: string[]) =>
    startVmmProcess([
      '--id',
      id,
      '--memstore',
      memstore.process.address,
      '--max-vm-memory',
      '1G',
      ...more,
    ]);

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    // vmm-b offers no switchover slot: migrations to it carry the device state on the stream
    // and take the lease with TransferLease; those to vmm-a hand over vCPU to vCPU.
    // (Slots in the test's folder: a killed target leaves its slot behind.)
    [a, b] = await Promise.all([
      startVmm('vmm-a', '--switchover-dir', dirs.volatileDir),
      startVmm('vmm-b', '--switchover-dir', 'off'),
    ]);
  });

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await memstore?.stop();
    dirs?.cleanup();
  });

  async function startAb(
    on: VmmUnderTest,
    name: string,
    backend: pb.RamBackend,
    memory?: number,
    args: Record<string, string> = abArgs,
  ) {
    await vmmCall(on.client, 'createVm', {
      spec: vmSpec(name, 'ab', { backend, args, ...(memory ? { memory } : {}) }),
      start: true,
    });
    const console = openConsole(on.client, name);
    await console.waitFor('BB');
    console.close();
  }

  /** Pauses `name` on `on`, checks ab's range with `read`, resumes it. */
  async function checkPaused(on: VmmUnderTest, name: string, read: () => Uint8Array) {
    await vmmCall(on.client, 'pauseVm', { name });
    const r = checkAbConsistency(read());
    expect(r.consistent, r.description).toBe(true);
    await vmmCall(on.client, 'resumeVm', { name });
    return r;
  }

  it(`hands shared RAM off by reference, back and forth ${ROUNDS} times, consistent each time`, async () => {
    const name = 'ab-bypass';
    await startAb(a, name, RamBackend.RAM_BACKEND_SHARED);
    const { region } = await unaryCall(memstore.client, 'getRegion', {
      region: regionNamed(`${name}-ram0`),
    });
    const mapping = mapFile(region!.path, { sharing: 'shared' });
    const range = () => new Uint8Array(mapping.buffer, AB_BASE, AB_PAGES * 4096).slice();
    let epoch = region!.lease!.epoch;
    const seen: number[] = [];
    try {
      let [from, to] = [a, b];
      for (let round = 0; round < ROUNDS; round++) {
        // Every way in: the switchover slot alone (as the migrator does; only vmm-a offers one,
        // vmm-b's source falls back to the data channel), the data channel and gRPC, with the
        // machine built ahead by PrepareIncoming and by the header, and the state handed over
        // directly (to vmm-a) and on the stream (to vmm-b).
        const via = (['slot', 'data', 'grpc'] as const)[Math.floor(round / 2) % 3]!;
        const prebuild = via === 'slot' || round % 4 < 2;
        const jobId = `bypass-${round}`;
        const info = await migrateVm(from, to, name, { via, jobId, prebuild });
        expect(info.status).toBe('completed');
        const slotted = via === 'slot' && to === a;
        expect(info.route?.transport).toBe(
          slotted ? 'switchover-slot' : via === 'grpc' ? 'grpc' : 'data-channel',
        );
        expect(info.route?.targetPrebuilt).toBe(prebuild);
        expect(info.route?.leaseMove).toBe(to === a ? 'armed' : 'stream');
        // Through the slot (vmm-a's), in the compact layout both builds read.
        expect(info.route?.stateEncoding).toBe(to === a ? 'compact' : 'container');
        expectTimeline(info);
        expect(info.ram.transferred).toBe(0);
        expect(info.ram.bypassedBytes).toBe(16 * 1024 * 1024);
        expect(info.deviceBytes).toBeGreaterThan(0);
        expect(info.downtimeUs).toBeGreaterThan(0);
        seen.push(info.downtimeUs);
        if (round === 0) {
          // The stale holder never runs again (refused while listed, then gone).
          const r = await refused(vmmCall(from.client, 'resumeVm', { name }));
          expect(['VMM_LEASE_LOST', 'VMM_VM_NOT_FOUND']).toContain(r.code);
        }
        await expectRetired(from, name);
        const lease = (
          await unaryCall(memstore.client, 'getRegion', { region: regionNamed(`${name}-ram0`) })
        ).region!.lease!;
        expect(lease.holder).toBe(`${to === a ? 'vmm-a' : 'vmm-b'}/${name}`);
        expect(lease.epoch).toBe(epoch + 1n);
        epoch = lease.epoch;
        const dst = (await vmmCall(to.client, 'getVm', { name })).vm!;
        expect(dst.state).toBe(pb.VmState.VM_STATE_RUNNING);
        await checkPaused(to, name, range);
        [from, to] = [to, from];
      }
      // The last source still reports its migration (GetMigration outlives the VM there).
      const last = (await vmmCall(to.client, 'getMigration', { name })).info!;
      expect(last.status).toBe(mpb.MigrationStatus.MIGRATION_STATUS_COMPLETED);
      expect(Number(last.downtimeUs)).toBe(seen.at(-1));
      console.log(
        `bypass 16 MiB: downtime µs median ${seen.sort((x, y) => x - y)[seen.length >> 1]}`,
      );
      await vmmCall(from.client, 'destroyVm', { name });
    } finally {
      mapping.close();
    }
  });

  it(`copies private RAM with pre-copy, back and forth ${ROUNDS} times, consistent each time`, async () => {
    const name = 'ab-copy';
    await startAb(a, name, RamBackend.RAM_BACKEND_PRIVATE);
    let [from, to] = [a, b];
    for (let round = 0; round < ROUNDS; round++) {
      const via = round % 2 === 0 ? 'data' : 'grpc';
      const prebuild = round % 4 < 2;
      const jobId = `copy-${round}`;
      const info = await migrateVm(from, to, name, { via, jobId, prebuild });
      expect(info.status).toBe('completed');
      expect(info.route?.transport).toBe(via === 'data' ? 'data-channel' : 'grpc');
      expect(info.route?.targetPrebuilt).toBe(prebuild);
      expect(info.route?.leaseMove).toBe('none');
      expect(info.route?.stateEncoding).toBe('container');
      expectTimeline(info);
      expect(info.ram.normal).toBeGreaterThanOrEqual(AB_PAGES);
      expect(info.ram.zeroPages + info.ram.normal + info.ram.duplicate).toBeGreaterThanOrEqual(
        4096,
      );
      expect(info.ram.transferred).toBeGreaterThan(AB_PAGES * 4096);
      expect(info.ram.transferred).toBeLessThan(16 * 1024 * 1024);
      await expectRetired(from, name);
      const pid = to.process.pid;
      await checkPaused(to, name, () =>
        readPrivateRam(pid, name, 'ram0', AB_BASE, AB_PAGES * 4096),
      );
      [from, to] = [to, from];
    }
    await vmmCall(from.client, 'destroyVm', { name });
  });

  /**
   * `name`, migrated from vmm-b, runs on vmm-a and ab's memory (the region file at `path`) is
   * consistent; then it is destroyed on both.
   */
  async function expectArrivedOnA(name: string, path: string) {
    const mapping = mapFile(path, { sharing: 'shared' });
    try {
      expect((await vmmCall(a.client, 'getVm', { name })).vm!.state).toBe(
        pb.VmState.VM_STATE_RUNNING,
      );
      await checkPaused(a, name, () =>
        new Uint8Array(mapping.buffer, AB_BASE, AB_PAGES * 4096).slice(),
      );
    } finally {
      mapping.close();
    }
    await expectRetired(b, name);
    await vmmCall(a.client, 'destroyVm', { name });
  }

  it('hands over through the slot alone with TransferLease from the vCPU thread when memstore cannot arm (persistent region)', async () => {
    const name = 'ab-persistent';
    const regionName = 'ab-persistent-ram';
    await unaryCall(memstore.client, 'createRegion', {
      name: regionName,
      size: 16n * 1024n * 1024n,
      kind: msPb.RegionKind.REGION_KIND_PERSISTENT,
    });
    await vmmCall(b.client, 'createVm', {
      spec: vmSpec(name, 'ab', {
        backend: RamBackend.RAM_BACKEND_SHARED,
        region: regionName,
        args: abArgs,
      }),
      start: true,
    });
    const console = openConsole(b.client, name);
    await console.waitFor('BB');
    console.close();
    const region = async () =>
      (await unaryCall(memstore.client, 'getRegion', { region: regionNamed(regionName) })).region!;
    const before = (await region()).lease!;
    const info = await migrateVm(b, a, name, { jobId: 'persistent-0', via: 'slot' });
    expect(info.status).toBe('completed');
    expect(info.route?.transport).toBe('switchover-slot');
    expect(info.route?.leaseMove).toBe('lease-channel');
    expectTimeline(info);
    expect(info.ram.transferred).toBe(0);
    const lease = (await region()).lease!;
    expect(lease.holder).toBe(`vmm-a/${name}`);
    expect(lease.epoch).toBe(before.epoch + 1n);
    await expectArrivedOnA(name, (await region()).path);
  });

  it('hands over a VM that was paused before the migration through the slot alone too', async () => {
    const name = 'ab-paused';
    await startAb(b, name, RamBackend.RAM_BACKEND_SHARED);
    await vmmCall(b.client, 'pauseVm', { name });
    const info = await migrateVm(b, a, name, { jobId: 'paused-0', via: 'slot' });
    expect(info.status).toBe('completed');
    expect(info.route?.transport).toBe('switchover-slot');
    expect(info.route?.leaseMove).toBe('armed');
    expect(info.route?.stateEncoding).toBe('compact');
    expect(info.deviceBytes).toBeGreaterThan(0);
    const { region } = await unaryCall(memstore.client, 'getRegion', {
      region: regionNamed(`${name}-ram0`),
    });
    expect(region!.lease!.holder).toBe(`vmm-a/${name}`);
    // Like a migration on the stream, the target runs the guest it took over.
    await expectArrivedOnA(name, region!.path);
  });

  it('writes a snapshot container into the slot of a target that reads no compact layout', async () => {
    const name = 'ab-container';
    await startAb(b, name, RamBackend.RAM_BACKEND_SHARED);
    const info = await migrateVm(b, a, name, {
      jobId: 'container-0',
      via: 'slot',
      onPrepared: (prep) => {
        // As a target of a build before the compact layout: its slot's header lists none.
        const f = openSync(prep.handoffSlot, 'r+');
        try {
          writeSync(f, new Uint8Array(4), 0, 4, COMPACT_LAYOUTS_AT);
        } finally {
          closeSync(f);
        }
      },
    });
    expect(info.status).toBe('completed');
    expect(info.route?.transport).toBe('switchover-slot');
    expect(info.route?.stateEncoding).toBe('container');
    const { region } = await unaryCall(memstore.client, 'getRegion', {
      region: regionNamed(`${name}-ram0`),
    });
    expect(region!.lease!.holder).toBe(`vmm-a/${name}`);
    await expectArrivedOnA(name, region!.path);
  });

  it('moves a 512 MiB shared-RAM VM with bypass sending < 1 MiB', async () => {
    const name = 'big-shared';
    await startAb(a, name, RamBackend.RAM_BACKEND_SHARED, 512 * 1024 * 1024);
    const info = await migrateVm(a, b, name);
    expect(info.status).toBe('completed');
    expect(info.ram.transferred + info.deviceBytes).toBeLessThan(1024 * 1024);
    expect(info.ram.bypassedBytes).toBe(512 * 1024 * 1024);
    console.log(
      `bypass 512 MiB: total ${info.totalTimeMs.toFixed(1)} ms, downtime ${info.downtimeUs} µs, ` +
        `device ${info.deviceBytes} B, setup ${info.setupTimeMs.toFixed(1)} ms`,
    );
    await expectRetired(a, name);
    await vmmCall(b.client, 'destroyVm', { name });
  });

  it('serves a stream that differs from what PrepareIncoming built, and refuses a hint that cannot fit', async () => {
    const name = 'misfit';
    await startAb(a, name, RamBackend.RAM_BACKEND_SHARED);
    const spec = (await vmmCall(a.client, 'getVm', { name })).vm!.spec!;
    let [from, to] = [a, b];
    // Built for bypass, then sent without it: the region was mapped for nothing.
    const bypass = capabilitiesToWire(resolveCapabilities({ 'bypass-shared-memory': true }));
    const copy = capabilitiesToWire(resolveCapabilities({ 'bypass-shared-memory': false }));
    for (const [k, hint] of [
      { spec, capabilities: bypass },
      // Fits the board but differs from the stream: built for nothing.
      {
        spec: { ...spec, ram: [{ ...spec.ram[0]!, size: spec.ram[0]!.size / 2n }] },
        capabilities: copy,
      },
    ].entries()) {
      const jobId = `misfit-${k}`;
      const prep = await vmmCall(to.client, 'prepareIncoming', {
        name,
        jobId,
        ...hint,
        sourceVmm: from.id,
      });
      const info = await migrateVmCall(from.client, {
        name,
        jobId,
        targetAddress: prep.address,
        token: prep.token,
        capabilities: copy,
        parameters: undefined,
        targetDataAddress: prep.dataAddress,
        // Offered for a bypass, ignored by a copy: the stream carries it.
        targetHandoffSlot: prep.handoffSlot,
      });
      expect(info.status).toBe('completed');
      expect(info.route?.targetPrebuilt).toBe(false);
      const pid = to.process.pid;
      await checkPaused(to, name, () =>
        readPrivateRam(pid, name, 'ram0', AB_BASE, AB_PAGES * 4096),
      );
      await expectRetired(from, name);
      [from, to] = [to, from];
    }
    // A hint that fits no machine here is refused before anything is reserved or built.
    for (const [block, text] of [
      [{ size: 1n << 40n }, 'is over the 2 GiB'],
      [{ guestBase: 0n }, "overlaps the board's test-finisher device window"],
    ] as const) {
      const unfit = { ...spec, ram: [{ ...spec.ram[0]!, ...block }] };
      await expect(
        vmmCall(to.client, 'prepareIncoming', {
          name,
          jobId: 'unfit',
          spec: unfit,
          capabilities: copy,
          sourceVmm: from.id,
        }),
      ).rejects.toMatchObject({
        status: grpc.status.INVALID_ARGUMENT,
        message: expect.stringContaining(text),
      });
    }
    // Nothing of the discarded machines is left: only the VM itself runs, on the original source.
    expect((await vmmCall(a.client, 'listVms', {})).vms.map((v) => v.spec!.name)).toContain(name);
    expect((await vmmCall(b.client, 'listVms', {})).vms.map((v) => v.spec!.name)).not.toContain(
      name,
    );
    await vmmCall(a.client, 'destroyVm', { name });
  });

  it("does not use a switchover slot prepared for another VM, nor that VM's token", async () => {
    // vmm-a prepares a slot (and a token) for ab-x; ab-y's source is handed both. It must see
    // that the slot was prepared for another lease holder and regions, fall back to the stream,
    // and be refused there: the token names another VM. Nothing moves; both keep running.
    const [x, y] = ['ab-slot-x', 'ab-slot-y'];
    await startAb(b, x, RamBackend.RAM_BACKEND_SHARED);
    await startAb(b, y, RamBackend.RAM_BACKEND_SHARED);
    const lease = async (n: string) =>
      (await unaryCall(memstore.client, 'getRegion', { region: regionNamed(`${n}-ram0`) })).region!
        .lease!;
    const before = await lease(x);
    const spec = (await vmmCall(b.client, 'getVm', { name: x })).vm!.spec!;
    const capabilities = capabilitiesToWire(resolveCapabilities({ 'bypass-shared-memory': true }));
    const prep = await vmmCall(a.client, 'prepareIncoming', {
      name: x,
      jobId: 'slot-x',
      spec,
      capabilities,
      sourceVmm: b.id,
    });
    expect(prep.handoffSlot).not.toBe('');
    const err = await refused(
      migrateVmCall(b.client, {
        name: y,
        jobId: 'slot-y',
        targetAddress: prep.address,
        token: prep.token,
        capabilities,
        parameters: undefined,
        targetDataAddress: prep.dataAddress,
        targetHandoffSlot: prep.handoffSlot,
      }),
    );
    expect(err.message).toMatch(/token was issued for VM ab-slot-x/);
    expect(err.message).toMatch(/kept running, unchanged/);
    const failed = migrationInfoFromWire(
      (await vmmCall(b.client, 'getMigration', { name: y })).info!,
    );
    expect(failed.status).toBe('failed');
    expect(failed.route?.transport).toBe('data-channel');
    for (const n of [x, y]) {
      expect((await vmmCall(b.client, 'getVm', { name: n })).vm!.state).toBe(
        pb.VmState.VM_STATE_RUNNING,
      );
    }
    expect(await lease(x)).toEqual(before);
    expect((await lease(y)).holder).toBe(`vmm-b/${y}`);
    const onA = (await vmmCall(a.client, 'listVms', {})).vms.map((v) => v.spec!.name);
    expect(onA).not.toContain(x);
    expect(onA).not.toContain(y);
    await vmmCall(b.client, 'destroyVm', { name: x });
    await vmmCall(b.client, 'destroyVm', { name: y });
  });

  it('uses a prepared slot alone only with the data channel to watch the target by', async () => {
    const name = 'ab-slot-no-probe';
    await startAb(b, name, RamBackend.RAM_BACKEND_SHARED);
    const spec = (await vmmCall(b.client, 'getVm', { name })).vm!.spec!;
    const capabilities = capabilitiesToWire(resolveCapabilities({ 'bypass-shared-memory': true }));
    const prep = await vmmCall(a.client, 'prepareIncoming', {
      name,
      jobId: 'no-probe',
      spec,
      capabilities,
      sourceVmm: b.id,
    });
    expect(prep.handoffSlot).not.toBe('');
    const info = await migrateVmCall(b.client, {
      name,
      jobId: 'no-probe',
      targetAddress: prep.address,
      token: prep.token,
      capabilities,
      parameters: undefined,
      targetDataAddress: '',
      targetHandoffSlot: prep.handoffSlot,
    });
    expect(info.status).toBe('completed');
    // On the gRPC stream, with the same slot named in the header's answer.
    expect(info.route?.transport).toBe('grpc');
    expect(info.route?.leaseMove).toBe('armed');
    expect(info.route?.stateEncoding).toBe('compact');
    await expectRetired(b, name);
    await vmmCall(a.client, 'destroyVm', { name });
  });

  it('falls back to the gRPC stream when the data channel cannot be reached', async () => {
    const name = 'fallback';
    await startAb(a, name, RamBackend.RAM_BACKEND_PRIVATE);
    const defaults = capabilitiesToWire(resolveCapabilities({}));
    const prep = await vmmCall(b.client, 'prepareIncoming', {
      name,
      jobId: 'fallback',
      spec: undefined,
      capabilities: defaults,
      sourceVmm: a.id,
    });
    const info = await migrateVmCall(a.client, {
      name,
      jobId: 'fallback',
      targetAddress: prep.address,
      token: prep.token,
      capabilities: defaults,
      parameters: undefined,
      targetDataAddress: 'unix:/nonexistent/handoff-data.sock',
      targetHandoffSlot: '',
    });
    expect(info.status).toBe('completed');
    expect(info.route?.transport).toBe('grpc');
    await checkPaused(b, name, () =>
      readPrivateRam(b.process.pid, name, 'ram0', AB_BASE, AB_PAGES * 4096),
    );
    await expectRetired(a, name);
    await vmmCall(b.client, 'destroyVm', { name });
  });

  describe.each(['grpc', 'data channel'] as const)(
    'hostile streams over %s fail only that migration',
    (via) => {
      const spec = vmSpec('hostile', 'ab', { memory: 1024 * 1024 });
      const block = (over: Partial<vmmStream.StreamBlock> = {}) => ({
        index: 0,
        id: 'ram0',
        guestBase: 0x8000_0000n,
        size: 1024n * 1024n,
        backend: RamBackend.RAM_BACKEND_PRIVATE,
        regionRef: undefined,
        templateRef: undefined,
        ...over,
      });
      let dataAddress = '';
      /** A token for `name` on vmm-b; with `spec` the target builds that machine ahead. */
      const token = async (spec?: pb.VmSpec, name = 'hostile') => {
        const prep = await vmmCall(b.client, 'prepareIncoming', {
          name,
          jobId: 'h',
          spec: spec === undefined ? undefined : { ...spec, name },
          capabilities: capabilitiesToWire(resolveCapabilities({ 'bypass-shared-memory': true })),
          sourceVmm: 'vmm-x', // the raw streams' certificate
        });
        dataAddress = prep.dataAddress;
        return prep.token;
      };
      /** A raw stream to vmm-b over this describe's transport. */
      const raw = async () => {
        if (via === 'grpc') return rawIncoming(b.process.address);
        if (dataAddress === '')
          await vmmCall(b.client, 'prepareIncoming', {
            name: 'hostile-probe',
            jobId: 'p',
            spec: undefined,
            capabilities: [],
            sourceVmm: 'vmm-x',
          }).then((p) => (dataAddress = p.dataAddress));
        return rawIncoming(b.process.address, dataAddress);
      };

      it('refuses a bad token', async () => {
        const s = await raw();
        s.send(headerFor('not-a-token', spec, [block()]));
        const out = await s.outcome();
        s.close();
        expect(out.error?.code).toBe('MIGRATION_BAD_TOKEN');
      });

      it('refuses a token twice (one-time)', async () => {
        const t = await token();
        const s1 = await raw();
        s1.send(headerFor(t, spec, [block()]));
        s1.end();
        const o1 = await s1.outcome();
        s1.close();
        expect(o1.error?.code).toBe('MIGRATION_BAD_STREAM'); // truncated after the header
        const s2 = await raw();
        s2.send(headerFor(t, spec, [block()]));
        const o2 = await s2.outcome();
        s2.close();
        expect(o2.error?.code).toBe('MIGRATION_BAD_TOKEN');
      });

      it('refuses a newer format', async () => {
        const s = await raw();
        s.send(headerFor(await token(), spec, [block()], { major: 2 }));
        const out = await s.outcome();
        s.close();
        expect(out.error?.code).toBe('MIGRATION_VERSION_MISMATCH');
      });

      it('refuses a block whose size differs from the spec', async () => {
        const s = await raw();
        s.send(headerFor(await token(), spec, [block({ size: 2048n * 1024n })]));
        const out = await s.outcome();
        s.close();
        expect(out.error?.code).toBe('MIGRATION_BAD_STREAM');
      });

      it('refuses out-of-range pages and wrong data sizes before writing', async () => {
        for (const frame of [
          {
            runs: [{ block: 0, firstPage: 255n, pageCount: 2, flags: 0 }],
            data: new Uint8Array(8192),
          },
          {
            runs: [{ block: 1, firstPage: 0n, pageCount: 1, flags: 0 }],
            data: new Uint8Array(4096),
          },
          {
            runs: [{ block: 0, firstPage: 0n, pageCount: 2, flags: 0 }],
            data: new Uint8Array(4096),
          },
          { runs: [{ block: 0, firstPage: 0n, pageCount: 1, flags: 8 }], data: new Uint8Array(0) },
        ]) {
          const s = await raw();
          s.send(headerFor(await token(), spec, [block()]));
          s.send({ frame: { $case: 'pages', value: frame } });
          const out = await s.outcome();
          s.close();
          expect(out.acked).toBe(true);
          expect(out.error?.code).toBe('MIGRATION_BAD_STREAM');
        }
      });

      it('refuses a RegionRef with the wrong identity or epoch', async () => {
        const src = via === 'grpc' ? 'shared-src' : 'shared-src-dc';
        await startAb(a, src, RamBackend.RAM_BACKEND_SHARED);
        const vm = (await vmmCall(a.client, 'getVm', { name: src })).vm!;
        const ref = vm.ram[0]!.regionRef!;
        const sharedSpec = { ...vm.spec!, name: src };
        const unbuilt = () => b.process.output().split('could not build the machine ahead').length;
        const unbuiltBefore = unbuilt();
        // Each bad ref goes to a target that asks memstore at the header, and to one that
        // built the machine ahead (it checks the ref against what it read from memstore then).
        for (const [bad, ahead] of [
          { ...ref, identity: 'someone-else' },
          { ...ref, epoch: ref.epoch + 7n },
        ].flatMap((r) => [[r, false] as const, [r, true] as const])) {
          const s = await raw();
          s.send(
            headerFor(
              await token(ahead ? sharedSpec : undefined, src),
              sharedSpec,
              [
                block({
                  size: ref.size,
                  backend: RamBackend.RAM_BACKEND_SHARED,
                  regionRef: bad,
                }),
              ],
              { source: 'vmm-a' },
            ),
          );
          const out = await s.outcome();
          s.close();
          expect(out.error?.code).toBe('MIGRATION_REGION_MISMATCH');
        }
        // The targets that built ahead did build (the refs were checked against what they read).
        expect(unbuilt()).toBe(unbuiltBefore);
        // The source still holds its lease and runs; the target still serves.
        expect((await vmmCall(a.client, 'getVm', { name: src })).vm!.state).toBe(
          pb.VmState.VM_STATE_RUNNING,
        );
        expect((await vmmCall(b.client, 'getInfo', {})).vmmId).toBe('vmm-b');
        const info = await migrateVm(a, b, src);
        expect(info.status).toBe('completed');
        await expectRetired(a, src);
        await vmmCall(b.client, 'destroyVm', { name: src });
      });
    },
  );

  const busyArgs = { 'ab.start': '0x80100000', 'ab.pages': '4096' }; // 16 MiB rewritten all the time

  it('refuses events, and post-copy of private RAM, which it does not implement; the busy VM keeps running', async () => {
    const name = 'ab-unsupported';
    await startAb(a, name, RamBackend.RAM_BACKEND_PRIVATE, 64 * 1024 * 1024, busyArgs);
    // Post-copy here is for shared RAM filled across hosts: private RAM would be copied, and
    // vmm-to-vmm post-copy is not built, so the target refuses at PrepareIncoming, before it
    // reserves the name (the source would refuse it the same way).
    const early = await refused(migrateVm(a, b, name, { capabilities: { 'postcopy-ram': true } }));
    expect(early.code).toBe('MIGRATION_UNSUPPORTED');
    expect(early.message).toMatch(/postcopy-ram: block\(s\) ram0 would be copied/);
    expect((await vmmCall(b.client, 'listVms', {})).vms.map((v) => v.name)).not.toContain(name);
    // The target refuses events at PrepareIncoming; the source at MigrateVm too (a coordinator
    // that skipped the target's check).
    const prep = await vmmCall(b.client, 'prepareIncoming', {
      name,
      jobId: 'unsupported',
      spec: undefined,
      capabilities: [],
      sourceVmm: a.id,
    });
    const late = await refused(
      migrateVmCall(a.client, {
        name,
        jobId: 'unsupported',
        targetAddress: prep.address,
        token: prep.token,
        capabilities: capabilitiesToWire(resolveCapabilities({ events: true })),
        parameters: parametersToWire({ 'max-postcopy-bandwidth': 1_000_000 }),
        targetDataAddress: prep.dataAddress,
        targetHandoffSlot: '',
      }),
    );
    expect(late.code).toBe('MIGRATION_UNSUPPORTED');
    expect(late.message).toMatch(/events: this vmm emits no migration events/);
    expect(late.message).not.toMatch(/max-postcopy-bandwidth/); // honoured by post-copy now
    expect((await vmmCall(a.client, 'getVm', { name })).vm!.state).toBe(
      pb.VmState.VM_STATE_RUNNING,
    );
    await vmmCall(a.client, 'destroyVm', { name });
  });

  it('fails a copy that cannot fit downtime-limit within max-iterations; the VM keeps running', async () => {
    const name = 'ab-busy';
    await startAb(a, name, RamBackend.RAM_BACKEND_PRIVATE, 64 * 1024 * 1024, busyArgs);
    const err = await refused(
      migrateVm(a, b, name, {
        capabilities: { 'auto-converge': false }, // today's failure, deliberately
        parameters: { 'downtime-limit': 1, 'max-iterations': 2 },
      }),
    );
    expect(err.code).toBe('MIGRATION_NOT_CONVERGED');
    expect(err.message).toMatch(/auto-converge is off: turn it on .*kept running/);
    const info = (await vmmCall(a.client, 'getMigration', { name })).info!;
    expect(info.iteration).toBe(2);
    expect((await vmmCall(a.client, 'getVm', { name })).vm!.state).toBe(
      pb.VmState.VM_STATE_RUNNING,
    );
    // The target releases the name once it has cleaned up (asynchronously, after the source
    // gave up); then the same VM can arrive there.
    let ok: Awaited<ReturnType<typeof migrateVm>> | undefined;
    for (let t = 0; ok === undefined; t++) {
      try {
        ok = await migrateVm(a, b, name, { parameters: { 'downtime-limit': 2000 } });
      } catch (e) {
        if (t > 50 || !(e instanceof RemoteError) || e.code !== 'VMM_VM_EXISTS') throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    expect(ok.status).toBe('completed');
    console.log(
      `copy 64 MiB (16 MiB busy): total ${ok.totalTimeMs} ms, downtime ${ok.downtimeUs} µs, ` +
        `${ok.ram.transferred} B, ${ok.ram.normal} pages, ${ok.ram.zeroPages} zero pages, ` +
        `${ok.iteration} passes`,
    );
    console.log(
      a.process
        .output()
        .split('\n')
        .filter((l) => l.includes('migration completed'))
        .slice(-1)
        .join(''),
    );
    await checkPaused(b, name, () =>
      readPrivateRam(b.process.pid, name, 'ram0', AB_BASE, 4096 * 4096),
    );
    await expectRetired(a, name);
    await vmmCall(b.client, 'destroyVm', { name });
  });

  it('cancels a running migration; the VM keeps running', async () => {
    const name = 'ab-cancel';
    await startAb(a, name, RamBackend.RAM_BACKEND_PRIVATE, 64 * 1024 * 1024, busyArgs);
    // The progress arrives on the MigrateVm stream while the migration runs.
    let sawProgress!: () => void;
    const progressed = new Promise<void>((resolve) => (sawProgress = resolve));
    const migration = refused(
      migrateVm(a, b, name, {
        parameters: { 'max-bandwidth': 4 * 1024 * 1024 },
        onInfo: (info) => {
          if (info.status === 'active' && info.ram.transferred > 0) sawProgress();
        },
      }),
    );
    await progressed;
    expect((await vmmCall(a.client, 'getMigration', { name })).info!.status).toBe(
      mpb.MigrationStatus.MIGRATION_STATUS_ACTIVE,
    );
    await vmmCall(a.client, 'cancelMigration', { name });
    const err = await migration;
    expect(err.code).toBe('MIGRATION_CANCELLED');
    const info = (await vmmCall(a.client, 'getMigration', { name })).info!;
    expect(info.status).toBe(mpb.MigrationStatus.MIGRATION_STATUS_CANCELLED);
    expect((await vmmCall(a.client, 'getVm', { name })).vm!.state).toBe(
      pb.VmState.VM_STATE_RUNNING,
    );
    await vmmCall(a.client, 'destroyVm', { name });
  });

  it('keeps the source running, unchanged, when the target is killed mid-stream', async () => {
    const c = await startVmm('vmm-c', '--switchover-dir', dirs.volatileDir);
    const name = 'ab-kill';
    try {
      // 16 MiB of pages the guest keeps writing, at 4 MiB/s: the stream lasts seconds.
      await startAb(a, name, RamBackend.RAM_BACKEND_PRIVATE, 64 * 1024 * 1024, busyArgs);
      const migration = migrateVm(a, c, name, {
        parameters: { 'max-bandwidth': 4 * 1024 * 1024 },
      }).then(
        () => null,
        (e: unknown) => e as RemoteError,
      );
      // Kill the target once pages flow (a fixed delay could kill it before PrepareIncoming
      // answered on a loaded machine: then no migration began, and the error is another).
      for (let t = 0; t < 400; t++) {
        const info = await vmmCall(a.client, 'getMigration', { name }).then(
          (r) => r.info,
          () => undefined,
        );
        if ((info?.ram?.transferred ?? 0n) > 0n) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      await c.process.kill9();
      const err = await migration;
      expect(err).toBeInstanceOf(RemoteError);
      expect(err!.code).toBe('MIGRATION_TARGET_FAILED');
      expect(err!.status).toBe(grpc.status.ABORTED);
      const vm = (await vmmCall(a.client, 'getVm', { name })).vm!;
      expect(vm.state).toBe(pb.VmState.VM_STATE_RUNNING);
      const info = (await vmmCall(a.client, 'getMigration', { name })).info!;
      expect(info.errorDesc).toContain('kept running');
      await checkPaused(a, name, () =>
        readPrivateRam(a.process.pid, name, 'ram0', AB_BASE, 4096 * 4096),
      );
      await vmmCall(a.client, 'destroyVm', { name });
    } finally {
      await c.stop().catch(() => undefined);
    }
  });

  it.each([
    ['on the stream', 'b', 'vmm-d', 'data'],
    ['by switchover', 'a', 'vmm-e', 'data'],
    ['through the slot alone', 'a', 'vmm-g', 'slot'],
  ] as const)(
    'keeps the target running when the source is killed right after the lease moved (state %s)',
    async (_, target, sourceId, via) => {
      const d = await startVmm(sourceId);
      const to = target === 'a' ? a : b;
      const toId = target === 'a' ? 'vmm-a' : 'vmm-b';
      const name = `ab-orphan-${target}-${via}`;
      try {
        await startAb(d, name, RamBackend.RAM_BACKEND_SHARED);
        const region = () =>
          unaryCall(memstore.client, 'getRegion', { region: regionNamed(`${name}-ram0`) });
        const migration = migrateVm(d, to, name, { via }).catch(() => null);
        // Kill -9 the source as soon as memstore shows the lease on the target and the target runs
        // the VM. (On the stream the target takes the lease at the final marker, before the
        // device state has arrived; a source killed in between leaves nothing to run, and the
        // lease goes back. By switchover the target's vCPU thread takes it once it has the
        // state.)
        const runsOnTarget = () =>
          vmmCall(to.client, 'getVm', { name }).then(
            (r) => r.vm?.state === pb.VmState.VM_STATE_RUNNING,
            () => false,
          );
        for (let t = 0; t < 2000; t++) {
          if (
            (await region()).region!.lease?.holder === `${toId}/${name}` &&
            (await runsOnTarget())
          ) {
            break;
          }
        }
        await d.process.kill9();
        await migration;
        expect((await region()).region!.lease!.holder).toBe(`${toId}/${name}`);
        await new Promise((r) => setTimeout(r, 100));
        expect((await vmmCall(to.client, 'getVm', { name })).vm!.state).toBe(
          pb.VmState.VM_STATE_RUNNING,
        );
        const mapping = mapFile((await region()).region!.path, { sharing: 'shared' });
        try {
          await checkPaused(to, name, () =>
            new Uint8Array(mapping.buffer, AB_BASE, AB_PAGES * 4096).slice(),
          );
        } finally {
          mapping.close();
        }
        await vmmCall(to.client, 'destroyVm', { name });
      } finally {
        await d.stop().catch(() => undefined);
      }
    },
  );
});
