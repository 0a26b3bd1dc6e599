import * as grpc from '@grpc/grpc-js';
import { vmm as pb } from '@handoff/proto';
import type { RemoteError } from '@handoff/service';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoGuestElf } from './helpers/guest-elf.js';
import {
  memstoreDirs,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { migrateVm } from './helpers/migration.js';
import { openConsole, startVmmProcess, vmSpec, vmmCall, type VmmUnderTest } from './helpers/vmm.js';

/**
 * CreateVm with the guest ELF in the request (`guest_image`): what a vmctl on another host or a
 * vmm in a container relies on. Neither vmm has a guest folder, so nothing here can come from a
 * file of the vmm's host: the image travels in the request, and a VM made from it migrates,
 * saves, restores and clones without any vmm loading the guest again.
 */

const { VmState, RamBackend } = pb;
const MiB = 1024 * 1024;
/** The vmm's limit of a sent image (apps/vmm/src/guests/catalog.ts, MAX_SENT_GUEST_IMAGE). */
const LIMIT = 16 * MiB;

async function refusal(p: Promise<unknown>): Promise<{ status: string; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as RemoteError;
    return { status: grpc.status[e.status] ?? String(e.status), message: e.message };
  }
  throw new Error('the call succeeded but should have been refused');
}

/** The echo guest with its ELF header changed by `edit`. */
function editedEcho(edit: (dv: DataView, bytes: Uint8Array) => void): Uint8Array {
  const bytes = echoGuestElf();
  edit(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), bytes);
  return bytes;
}

describe('CreateVm with the guest image in the request', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let a: VmmUnderTest;
  let b: VmmUnderTest;

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    const vmm = (id: string) =>
      startVmmProcess(['--id', id, '--memstore', memstore.process.address, '--vcpu-threads', '1']);
    [a, b] = await Promise.all([vmm('vmm-ga'), vmm('vmm-gb')]);
  });

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await memstore?.stop();
    dirs?.cleanup();
  });

  const create = (at: VmmUnderTest, spec: pb.VmSpec, guestImage: Uint8Array) =>
    vmmCall(at.client, 'createVm', { spec, start: true, guestImage });

  /** Types `text` on VM `name`'s console on `at` and waits for the echo guest to echo it. */
  async function echoes(at: VmmUnderTest, name: string, text: string): Promise<void> {
    const c = openConsole(at.client, name);
    try {
      c.send(text);
      await c.waitFor(text);
    } finally {
      c.close();
    }
  }

  it('runs the image it was sent; the spec only names it (not looked up, even a built-in name)', async () => {
    const { vm } = await create(a, vmSpec('sent', 'hello'), echoGuestElf());
    expect(vm!.spec!.guest).toBe('hello');
    await echoes(a, 'sent', 'ping');
    const listed = await vmmCall(a.client, 'listVms', {});
    expect(listed.vms.map((v) => [v.name, v.spec!.guest])).toEqual([['sent', 'hello']]);
    await vmmCall(a.client, 'destroyVm', { name: 'sent' });
  });

  it('refuses hostile images with INVALID_ARGUMENT and says what is wrong', async () => {
    const cases: [string, Uint8Array, RegExp][] = [
      ['empty', new Uint8Array(0), /is empty/],
      ['truncated', echoGuestElf().subarray(0, 40), /not an ELF file/],
      [
        'cut-segment',
        echoGuestElf().subarray(0, 0x1000 + 8),
        /segment 0: file bytes run past the end/,
      ],
      ['garbage', new Uint8Array(4096).map((_, k) => (k * 131 + 7) & 0xff), /not an ELF file/],
      ['elf64', editedEcho((_, x) => (x[4] = 2)), /not a 32-bit ELF/],
      ['big-endian', editedEcho((_, x) => (x[5] = 2)), /not a little-endian ELF/],
      ['x86', editedEcho((dv) => dv.setUint16(18, 62, true)), /machine is 62, not RISC-V/],
      ['shared-object', editedEcho((dv) => dv.setUint16(16, 3, true)), /not an executable/],
      ['no-phdrs', editedEcho((dv) => dv.setUint16(44, 0, true)), /no program headers/],
      [
        'phdrs-outside',
        editedEcho((dv) => dv.setUint32(28, 0xffff_fff0, true)),
        /program header table runs past/,
      ],
      [
        'outside-ram',
        editedEcho((dv) => {
          dv.setUint32(52 + 8, 0x4000_0000, true);
          dv.setUint32(52 + 12, 0x4000_0000, true);
        }),
        /segment at 0x40000000 .* is not inside the VM's RAM/,
      ],
      [
        'huge-bss',
        editedEcho((dv) => dv.setUint32(52 + 20, 0x7fff_0000, true)),
        /not inside the VM's RAM/,
      ],
      [
        'entry-outside',
        editedEcho((dv) => dv.setUint32(24, 0x1000, true)),
        /entry point 0x1000 is not inside the VM's RAM/,
      ],
    ];
    for (const [name, image, message] of cases) {
      const r = await refusal(create(a, vmSpec(`bad-${name}`, `${name}.elf`), image));
      expect(r.status, name).toBe('INVALID_ARGUMENT');
      expect(r.message, name).toMatch(message);
      expect(r.message, name).toContain(`guest ${name}.elf`);
    }
    expect((await vmmCall(a.client, 'listVms', {})).vms).toEqual([]);
  });

  it("takes an image of exactly 16 MiB; one byte more is the vmm's refusal, not gRPC's", async () => {
    const padded = new Uint8Array(LIMIT);
    padded.set(echoGuestElf());
    await create(a, vmSpec('big', 'big.elf', { memory: 32 * MiB }), padded);
    await echoes(a, 'big', 'x');
    await vmmCall(a.client, 'destroyVm', { name: 'big' });

    const over = new Uint8Array(LIMIT + 1);
    over.set(echoGuestElf());
    const r = await refusal(create(a, vmSpec('too-big', 'too-big.elf'), over));
    expect(r.status).toBe('INVALID_ARGUMENT');
    expect(r.message).toMatch(/16777217 bytes, over the 16777216-byte \(16 MiB\) limit/);
    expect(r.message).toContain('--guest-dir');
  });

  it('a VM made from sent bytes migrates, saves, restores and clones without its image', async () => {
    await create(
      a,
      vmSpec('roam', 'roam.elf', { backend: RamBackend.RAM_BACKEND_SHARED }),
      echoGuestElf(),
    );
    await echoes(a, 'roam', 'one');
    // All RAM shared: the live-update route (switchover slot), then back over the data channel.
    await migrateVm(a, b, 'roam', { via: 'slot' });
    await echoes(b, 'roam', 'two');
    await migrateVm(b, a, 'roam');
    await echoes(a, 'roam', 'three');

    await vmmCall(a.client, 'saveVm', {
      name: 'roam',
      snapshot: 'roam-snap',
      full: false,
      stop: true,
      template: true,
      jobId: '',
    });
    const restored = await vmmCall(b.client, 'restoreVm', {
      snapshot: 'roam-snap',
      name: 'roam2',
      paused: false,
      jobId: '',
    });
    expect(restored.vm!.state).toBe(VmState.VM_STATE_RUNNING);
    expect(restored.vm!.spec!.guest).toBe('roam.elf');
    await echoes(b, 'roam2', 'four');
    const cloned = await vmmCall(b.client, 'cloneVms', {
      snapshot: 'roam-snap',
      count: 1,
      namePrefix: '',
      firstIndex: 0,
      paused: false,
      jobId: '',
    });
    await echoes(b, cloned.vms[0]!.name, 'five');
    for (const name of ['roam2', cloned.vms[0]!.name]) {
      await vmmCall(b.client, 'destroyVm', { name });
    }
  });
});
