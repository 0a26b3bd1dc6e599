import * as grpc from '@grpc/grpc-js';
import { vmm as pb } from '@handoff/proto';
import { unaryCall, type RemoteError } from '@handoff/service';
import { mapFile } from '@handoff/shm';
import { checkAbConsistency } from '@handoff/vmm';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeEchoGuest } from './helpers/guest-elf.js';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { repoRoot } from './helpers/services.js';
import {
  openConsole,
  processCpuSeconds,
  startVmmProcess,
  vmSpec,
  vmmCall,
  waitForVmState,
  watchVm,
  type VmmUnderTest,
} from './helpers/vmm.js';

const { VmState, VmEventKind, RamBackend } = pb;
const MiB = 1024 * 1024;
const kvserverElf = join(repoRoot, 'guests/kvserver/kvserver.elf');

/** The gRPC status a call failed with, and its message. */
async function refusal(p: Promise<unknown>): Promise<{ status: string; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as RemoteError;
    return { status: grpc.status[e.status] ?? String(e.status), message: e.message };
  }
  throw new Error('the call succeeded but should have been refused');
}

describe('VMs on a vmm instance, over gRPC', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let vmm: VmmUnderTest;
  let client: pb.VmmServiceClient;
  let echo: string;
  let scratch: string;

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    // The vmm's guest folder: the echo guest and the other files the tests name.
    scratch = mkdtempSync(join(tmpdir(), 'handoff-vm-test-'));
    echo = writeEchoGuest(scratch);
    vmm = await startVmmProcess([
      '--id',
      'vmm-t',
      '--memstore',
      memstore.process.address,
      '--max-vm-memory',
      '256M',
      '--guest-dir',
      scratch,
    ]);
    client = vmm.client;
  });

  afterAll(async () => {
    await vmm?.stop();
    await memstore?.stop();
    dirs?.cleanup();
    if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  });

  const create = (spec: pb.VmSpec, start = true) => vmmCall(client, 'createVm', { spec, start });
  const destroy = (name: string) => vmmCall(client, 'destroyVm', { name });

  it('runs hello to power-off with exit code 0; a console attached afterwards gets its output', async () => {
    const { vm } = await create(vmSpec('hello', 'hello'), false);
    expect(vm!.state).toBe(VmState.VM_STATE_CREATED);
    const watch = watchVm(client, 'hello');
    await watch.waitFor(VmEventKind.VM_EVENT_KIND_UNSPECIFIED); // subscribed
    await vmmCall(client, 'startVm', { name: 'hello' });
    const off = await watch.waitFor(VmEventKind.VM_EVENT_KIND_POWERED_OFF);
    expect(off.detail).toBe('exit code 0');
    expect(off.vm!.state).toBe(VmState.VM_STATE_POWERED_OFF);
    expect(off.vm!.exitCode).toBe(0);
    expect(off.vm!.instret).toBeGreaterThan(1000n);
    expect(watch.kinds().slice(0, 3)).toEqual([
      VmEventKind.VM_EVENT_KIND_UNSPECIFIED, // the current state comes first
      VmEventKind.VM_EVENT_KIND_STARTED,
      VmEventKind.VM_EVENT_KIND_POWERED_OFF,
    ]);
    const console = openConsole(client, 'hello');
    await console.ended; // a powered-off VM's console replays the backlog and ends
    expect(console.output()).toContain('hello from a Handoff guest');
    expect(console.output()).toContain('bye\n');
    await destroy('hello');
    await watch.waitFor(VmEventKind.VM_EVENT_KIND_DESTROYED);
    await watch.ended;
  });

  it('carries console input to the guest and output to every attached console', async () => {
    await create(vmSpec('echo', echo));
    const first = openConsole(client, 'echo');
    await first.waitFor('echo ready\n');
    const second = openConsole(client, 'echo');
    await second.waitFor('echo ready\n'); // the backlog
    first.send('ping\n');
    await first.waitFor('ping\n');
    await second.waitFor('ping\n');
    second.send('pong\n');
    await first.waitFor('pong\n');
    first.send('q'); // the echo guest powers off with exit code 5
    await Promise.all([first.ended, second.ended]);
    const vm = await waitForVmState(client, 'echo', VmState.VM_STATE_POWERED_OFF);
    expect(vm.exitCode).toBe(5);
    expect(await refusal(vmmCall(client, 'pauseVm', { name: 'echo' }))).toMatchObject({
      status: 'FAILED_PRECONDITION',
      message: expect.stringContaining('powered off'),
    });
    await destroy('echo');
  });

  it.skipIf(!existsSync(kvserverElf))('serves kvserver GET and PUT over the console', async () => {
    await create(
      vmSpec('kv', 'kvserver', {
        memory: 128 * MiB,
        args: { 'kv.slots_log2': '12', 'kv.work': '4' },
      }),
    );
    const kv = openConsole(client, 'kv');
    await kv.waitFor('kvserver: ready\n', 30_000);
    kv.send('PING\nPUT color blue\nGET color\nGET nosuchkey\n');
    await kv.waitFor('NOT_FOUND\n');
    expect(kv.output()).toContain('PONG\nOK\nVALUE blue\nNOT_FOUND\n');
    const { vm } = await vmmCall(client, 'getVm', { name: 'kv' });
    expect(vm!.ready).toBe(true);
    kv.close();
    await destroy('kv');
  });

  it('pauses at an instruction boundary at once, resumes, reports MIPS, and destroys', async () => {
    await create(vmSpec('ab', 'ab', { args: { 'ab.pages': '64' } }));
    const watch = watchVm(client, 'ab');
    await watch.waitFor(VmEventKind.VM_EVENT_KIND_UNSPECIFIED); // subscribed
    await new Promise((r) => setTimeout(r, 800));
    const running = (await vmmCall(client, 'getVm', { name: 'ab' })).vm!;
    expect(running.state).toBe(VmState.VM_STATE_RUNNING);
    expect(running.mips).toBeGreaterThan(1);
    expect(running.ram[0]!.touchedPages).toBeGreaterThan(64n);

    const t0 = performance.now();
    const paused = (await vmmCall(client, 'pauseVm', { name: 'ab' })).vm!;
    const pauseMs = performance.now() - t0;
    expect(paused.state).toBe(VmState.VM_STATE_PAUSED);
    expect(pauseMs).toBeLessThan(250); // a gRPC round trip plus at most one ~1 ms slice
    await new Promise((r) => setTimeout(r, 200));
    const still = (await vmmCall(client, 'getVm', { name: 'ab' })).vm!;
    expect(still.instret).toBe(paused.instret);
    expect(still.mips).toBe(0);

    await vmmCall(client, 'resumeVm', { name: 'ab' });
    await new Promise((r) => setTimeout(r, 200));
    const again = (await vmmCall(client, 'getVm', { name: 'ab' })).vm!;
    expect(again.instret).toBeGreaterThan(paused.instret);

    await destroy('ab');
    await watch.ended;
    expect(watch.kinds()).toEqual([
      VmEventKind.VM_EVENT_KIND_UNSPECIFIED,
      VmEventKind.VM_EVENT_KIND_PAUSED,
      VmEventKind.VM_EVENT_KIND_RESUMED,
      VmEventKind.VM_EVENT_KIND_DESTROYED,
    ]);
    expect(await refusal(vmmCall(client, 'getVm', { name: 'ab' }))).toMatchObject({
      status: 'NOT_FOUND',
    });
  });

  it('keeps a shared block in its memstore region, where a second mapper sees the guest write', async () => {
    const base = 0x100000; // ab's range starts 1 MiB into RAM
    await create(
      vmSpec('abshared', 'ab', {
        backend: RamBackend.RAM_BACKEND_SHARED,
        args: { 'ab.start': '0x80100000', 'ab.pages': '32' },
      }),
    );
    const console = openConsole(client, 'abshared');
    await console.waitFor('BB');
    const vm = (await vmmCall(client, 'pauseVm', { name: 'abshared' })).vm!;
    console.close();
    const block = vm.ram[0]!;
    expect(block.spec!.region).toBe('abshared-ram0');
    const { region } = await unaryCall(memstore.client, 'getRegion', {
      region: regionNamed('abshared-ram0'),
    });
    expect(region!.lease!.holder).toBe('vmm-t/abshared');
    expect(block.regionRef!.regionId).toBe(region!.id);
    expect(block.regionRef!.epoch).toBe(region!.lease!.epoch);

    const mapping = mapFile(region!.path, { sharing: 'shared' });
    try {
      const range = () => new Uint8Array(mapping.buffer, base, 32 * 4096);
      const before = checkAbConsistency(range());
      expect(before.consistent, before.description).toBe(true);
      expect(before.newer).not.toBe(0);
      await vmmCall(client, 'resumeVm', { name: 'abshared' });
      // The guest keeps writing into the file. Watched while it runs: a byte counter read once
      // after a fixed wait could have wrapped back to the same value (1 in 256).
      let changed = false;
      for (const end = Date.now() + 5000; !changed && Date.now() < end;) {
        await new Promise((r) => setTimeout(r, 5));
        changed = range()[0] !== before.newer;
      }
      await vmmCall(client, 'pauseVm', { name: 'abshared' });
      expect(changed).toBe(true);
      const after = checkAbConsistency(range());
      expect(after.consistent, after.description).toBe(true);
    } finally {
      mapping.close();
    }
    await destroy('abshared');
    // The region was created for the VM: it goes with it.
    expect(
      await refusal(
        unaryCall(memstore.client, 'getRegion', { region: regionNamed('abshared-ram0') }),
      ),
    ).toMatchObject({ status: 'NOT_FOUND' });
  });

  it('maps a named region under a lease, refuses a second VM on it, and keeps it on destroy', async () => {
    await unaryCall(memstore.client, 'createRegion', {
      name: 'named-ram',
      size: BigInt(16 * MiB),
      kind: 1,
    });
    const spec = (name: string) =>
      vmSpec(name, echo, { backend: RamBackend.RAM_BACKEND_SHARED, region: 'named-ram' });
    await create(spec('named1'));
    const held = await unaryCall(memstore.client, 'getRegion', {
      region: regionNamed('named-ram'),
    });
    expect(held.region!.lease!.holder).toBe('vmm-t/named1');
    expect(await refusal(create(spec('named2')))).toMatchObject({
      status: 'FAILED_PRECONDITION',
      message: expect.stringContaining('named-ram'),
    });
    await destroy('named1');
    const kept = await unaryCall(memstore.client, 'getRegion', {
      region: regionNamed('named-ram'),
    });
    expect(kept.region!.lease?.holder ?? '').toBe('');
    await unaryCall(memstore.client, 'deleteRegion', { region: regionNamed('named-ram') });
  });

  it('maps a sealed template copy-on-write for a clone block and detaches on destroy', async () => {
    const size = BigInt(16 * MiB);
    await unaryCall(memstore.client, 'createRegion', { name: 'tpl', size, kind: 1 });
    const { lease } = await unaryCall(memstore.client, 'acquireLease', {
      region: regionNamed('tpl'),
      holder: 'test-vmm/template', // the test client's own holder (it is vmm test-vmm)
    });
    await unaryCall(memstore.client, 'sealTemplate', {
      region: regionNamed('tpl'),
      holder: 'test-vmm/template',
      epoch: lease!.epoch,
    });
    const { vm } = await create(
      vmSpec('clone1', echo, { backend: RamBackend.RAM_BACKEND_CLONE, region: 'tpl' }),
    );
    expect(vm!.ram[0]!.spec!.backend).toBe(RamBackend.RAM_BACKEND_CLONE);
    const console = openConsole(client, 'clone1');
    await console.waitFor('echo ready\n');
    console.send('cow\n');
    await console.waitFor('cow\n');
    console.close();
    const attached = await unaryCall(memstore.client, 'getRegion', { region: regionNamed('tpl') });
    expect(attached.region!.cloneCount).toBe(1);
    expect(attached.region!.mappedBy).toContain('vmm-t/clone1');
    // The guest's image and writes stayed in the clone: the template file is still all zero.
    const template = mapFile(attached.region!.path, { sharing: 'private' });
    try {
      expect(new Uint8Array(template.buffer).every((b) => b === 0)).toBe(true);
    } finally {
      template.close();
    }
    await destroy('clone1');
    const detached = await unaryCall(memstore.client, 'getRegion', { region: regionNamed('tpl') });
    expect(detached.region!.cloneCount).toBe(0);
    await unaryCall(memstore.client, 'deleteRegion', { region: regionNamed('tpl') });
  });

  it('refuses bad specs with INVALID_ARGUMENT or NOT_FOUND and a message that says why', async () => {
    const notElf = join(scratch, 'not-an-elf.txt');
    writeFileSync(notElf, 'hello, I am text\n');
    const ram0 = {
      id: 'ram0',
      guestBase: 0x8000_0000n,
      size: BigInt(16 * MiB),
      backend: RamBackend.RAM_BACKEND_PRIVATE,
      region: '',
    };
    const cases: [string, pb.VmSpec, string, string][] = [
      ['bad name', vmSpec('Bad Name', 'hello'), 'INVALID_ARGUMENT', 'VM name'],
      ['size', vmSpec('x', 'hello', { memory: 5000 }), 'INVALID_ARGUMENT', 'multiple of 4 KiB'],
      [
        'over the limit',
        vmSpec('x', 'hello', { memory: 512 * MiB }),
        'INVALID_ARGUMENT',
        '--max-vm-memory',
      ],
      [
        'device window',
        vmSpec('x', 'hello', {
          blocks: [ram0, { ...ram0, id: 'low', guestBase: 0x0fff_0000n, size: 0x20000n }],
        }),
        'INVALID_ARGUMENT',
        "overlaps the board's uart0 device window",
      ],
      [
        'overlapping blocks',
        vmSpec('x', 'hello', { blocks: [ram0, { ...ram0, id: 'ram1', guestBase: 0x8080_0000n }] }),
        'INVALID_ARGUMENT',
        'overlap',
      ],
      [
        'duplicate ids',
        vmSpec('x', 'hello', { blocks: [ram0, { ...ram0, guestBase: 0x9000_0000n }] }),
        'INVALID_ARGUMENT',
        'used twice',
      ],
      [
        'a second block',
        vmSpec('x', 'hello', { blocks: [ram0, { ...ram0, id: 'ram1', guestBase: 0x9000_0000n }] }),
        'INVALID_ARGUMENT',
        'one RAM block',
      ],
      [
        'private with a region',
        vmSpec('x', 'hello', { region: 'r' }),
        'INVALID_ARGUMENT',
        'private block takes no region',
      ],
      [
        'no RAM',
        { ...vmSpec('x', 'hello'), ram: [] },
        'INVALID_ARGUMENT',
        'the spec names no RAM; give one block "ram0" at 0x80000000',
      ],
      [
        'main RAM at base 0',
        vmSpec('x', 'hello', { blocks: [{ ...ram0, guestBase: 0n }] }),
        'INVALID_ARGUMENT',
        "overlaps the board's test-finisher device window",
      ],
      [
        'a 2^63-byte block',
        vmSpec('x', 'hello', { blocks: [{ ...ram0, size: 1n << 63n }] }),
        'INVALID_ARGUMENT',
        'is over the 2 GiB',
      ],
      [
        'unknown guest',
        vmSpec('x', 'no-such-guest'),
        'NOT_FOUND',
        `guest no-such-guest is not available on vmm-t: name a built-in guest (hello, ab, ` +
          `kvserver, bench, conformance/<test>) or put the ELF in ${scratch}`,
      ],
      [
        'a file outside the guest folder',
        vmSpec('x', kvserverElf),
        'NOT_FOUND',
        `guest ${kvserverElf} is not available on vmm-t`,
      ],
      [
        'not an ELF',
        vmSpec('x', 'not-an-elf.txt'),
        'INVALID_ARGUMENT',
        'not a loadable RV32 executable',
      ],
      [
        'unknown region',
        vmSpec('x', 'hello', { backend: RamBackend.RAM_BACKEND_SHARED, region: 'nosuch' }),
        'NOT_FOUND',
        'nosuch',
      ],
      [
        'unknown template',
        vmSpec('x', 'hello', { backend: RamBackend.RAM_BACKEND_CLONE, region: 'nosuch' }),
        'NOT_FOUND',
        'nosuch',
      ],
    ];
    for (const [what, spec, status, text] of cases) {
      const r = await refusal(create(spec));
      expect({ what, ...r }).toMatchObject({
        what,
        status,
        message: expect.stringContaining(text),
      });
    }
    await create(vmSpec('twice', echo));
    expect(await refusal(create(vmSpec('twice', echo)))).toMatchObject({
      status: 'ALREADY_EXISTS',
    });
    await destroy('twice');
    expect(await refusal(destroy('twice'))).toMatchObject({ status: 'NOT_FOUND' });
    const info = await vmmCall(client, 'getInfo', {});
    expect(info.vmCount).toBe(0);
  });

  it('uses almost no CPU while its VMs idle in WFI or sit paused', async () => {
    for (const name of ['idle1', 'idle2', 'idle3']) await create(vmSpec(name, echo));
    await create(vmSpec('busy', 'ab', { args: { 'ab.pages': '16' } }));
    await vmmCall(client, 'pauseVm', { name: 'busy' });
    const info = await vmmCall(client, 'getInfo', {});
    expect([info.vmCount, info.runningVmCount]).toEqual([4, 3]);
    await new Promise((r) => setTimeout(r, 300));
    const pid = vmm.process.pid;
    const cpu0 = processCpuSeconds(pid);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 2000));
    const share = (processCpuSeconds(pid) - cpu0) / ((performance.now() - t0) / 1000);
    expect(share).toBeLessThan(0.2); // of one core; measured ≈ 0.01–0.03
    for (const name of ['idle1', 'idle2', 'idle3', 'busy']) await destroy(name);
  });
});
