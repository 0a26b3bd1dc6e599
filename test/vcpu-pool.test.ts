import { readdirSync } from 'node:fs';
import { vmm as pb } from '@handoff/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  TEST_GUEST_DIR,
  crashGuestElf,
  idleGuestElf,
  spinGuestElf,
  writeEchoGuest,
  writeGuest,
} from './helpers/guest-elf.js';
import { migrateVm } from './helpers/migration.js';
import {
  memstoreDirs,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import {
  openConsole,
  processCpuSeconds,
  startVmmProcess,
  vmmCall,
  vmSpec,
  waitForVmState,
  type VmmUnderTest,
} from './helpers/vmm.js';

const MiB = 1024 * 1024;
const { VmState } = pb;

/** The process's threads, as the kernel lists them. */
const osThreads = (pid: number): number => readdirSync(`/proc/${pid}/task`).length;

const instret = async (vmm: VmmUnderTest, name: string): Promise<bigint> =>
  (await vmmCall(vmm.client, 'getVm', { name })).vm!.instret;

/** Names whose instret grows over `ms`, among `names`. */
async function progressing(vmm: VmmUnderTest, names: string[], ms = 300): Promise<string[]> {
  const before = await Promise.all(names.map((n) => instret(vmm, n)));
  await new Promise((r) => setTimeout(r, ms));
  const after = await Promise.all(names.map((n) => instret(vmm, n)));
  return names.filter((_, k) => after[k]! > before[k]!);
}

/**
 * A console round trip to an echo VM (`text` not sent to it before): it answers while its
 * thread-mates run.
 */
async function echoes(vmm: VmmUnderTest, name: string, text: string): Promise<void> {
  const console = openConsole(vmm.client, name);
  try {
    console.send(text);
    await console.waitFor(text, 10_000);
  } finally {
    console.close();
  }
}

/**
 * VMs sharing vCPU threads: a vmm runs many VMs on a few threads (GetInfo's vcpu_threads and the
 * process's own thread list say how many), idle VMs cost nothing, and one VM's load, pause,
 * destruction, crash or migration leaves the VMs on its thread running.
 */
describe('VMs sharing vCPU threads', () => {
  let guests: { idle: string; spin: string; crash: string; echo: string };

  beforeAll(() => {
    guests = {
      idle: writeGuest('idle.elf', idleGuestElf()),
      spin: writeGuest('spin.elf', spinGuestElf()),
      crash: writeGuest('crash.elf', crashGuestElf()),
      echo: writeEchoGuest(),
    };
  });

  const small = (name: string, guest: string, memory = MiB) => vmSpec(name, guest, { memory });

  describe('200 idle VMs on a vmm of 2 threads (at most 3)', () => {
    let vmm: VmmUnderTest;

    beforeAll(async () => {
      vmm = await startVmmProcess([
        '--guest-dir',
        TEST_GUEST_DIR,
        '--vcpu-threads',
        '2',
        '--max-vcpu-threads',
        '3',
      ]);
    });
    afterAll(async () => {
      await vmm?.stop();
    });

    it('runs them on its vCPU threads and they cost no CPU while they wait', async () => {
      const pid = vmm.process.pid;
      expect((await vmmCall(vmm.client, 'getInfo', {})).vcpuThreads).toBe(2);
      const threadsBefore = osThreads(pid);
      const names = Array.from({ length: 200 }, (_, k) => `idle-${k}`);
      for (let k = 0; k < names.length; k += 20) {
        await Promise.all(
          names
            .slice(k, k + 20)
            .map((n) =>
              vmmCall(vmm.client, 'createVm', { spec: small(n, guests.idle), start: true }),
            ),
        );
      }
      const info = await vmmCall(vmm.client, 'getInfo', {});
      expect([info.vmCount, info.runningVmCount]).toEqual([200, 200]);
      expect(info.vcpuThreads).toBeGreaterThanOrEqual(2);
      expect(info.vcpuThreads).toBeLessThanOrEqual(3);
      expect(osThreads(pid) - threadsBefore).toBeLessThanOrEqual(info.vcpuThreads - 2);
      // Every one of them ran: it printed its line and waits in WFI.
      const console = openConsole(vmm.client, 'idle-199');
      await console.waitFor('idle\n');
      console.close();
      await new Promise((r) => setTimeout(r, 300));
      const cpu0 = processCpuSeconds(pid);
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 1000));
      const share = (processCpuSeconds(pid) - cpu0) / ((performance.now() - t0) / 1000);
      expect(share).toBeLessThan(0.1); // of one core; measured ≈ 0–0.01
      expect(await progressing(vmm, ['idle-0', 'idle-100', 'idle-199'])).toEqual([]);
      await Promise.all(names.map((n) => vmmCall(vmm.client, 'destroyVm', { name: n })));
      expect((await vmmCall(vmm.client, 'getInfo', {})).vmCount).toBe(0);
    });
  });

  describe('VMs on one vCPU thread', () => {
    let vmm: VmmUnderTest;

    beforeAll(async () => {
      vmm = await startVmmProcess([
        '--guest-dir',
        TEST_GUEST_DIR,
        '--vcpu-threads',
        '1',
        '--max-vcpu-threads',
        '1',
      ]);
      for (const [name, guest] of [
        ['spin-1', guests.spin],
        ['spin-2', guests.spin],
        ['echo', guests.echo],
      ] as const) {
        await vmmCall(vmm.client, 'createVm', { spec: small(name, guest), start: true });
      }
    });
    afterAll(async () => {
      await vmm?.stop();
    });

    it('gives every VM its turn: two busy VMs both run, an echo VM answers', async () => {
      expect((await vmmCall(vmm.client, 'getInfo', {})).vcpuThreads).toBe(1);
      expect(await progressing(vmm, ['spin-1', 'spin-2'])).toEqual(['spin-1', 'spin-2']);
      await echoes(vmm, 'echo', 'ping\n');
    });

    it('pauses, resumes and destroys one VM while its thread-mates run', async () => {
      await vmmCall(vmm.client, 'pauseVm', { name: 'spin-1' });
      expect(await progressing(vmm, ['spin-1', 'spin-2'])).toEqual(['spin-2']);
      await echoes(vmm, 'echo', 'while paused\n');
      await vmmCall(vmm.client, 'resumeVm', { name: 'spin-1' });
      expect(await progressing(vmm, ['spin-1', 'spin-2'])).toEqual(['spin-1', 'spin-2']);
      await vmmCall(vmm.client, 'destroyVm', { name: 'spin-1' });
      expect(await progressing(vmm, ['spin-2'])).toEqual(['spin-2']);
      await echoes(vmm, 'echo', 'after the destroy\n');
      await vmmCall(vmm.client, 'createVm', { spec: small('spin-1', guests.spin), start: true });
    });

    it('crashes one VM alone: its thread-mates run on', async () => {
      await vmmCall(vmm.client, 'createVm', { spec: small('crash', guests.crash), start: true });
      const console = openConsole(vmm.client, 'crash');
      await console.waitFor('armed\n');
      console.send('x');
      await console.ended;
      const crashed = await waitForVmState(vmm.client, 'crash', VmState.VM_STATE_CRASHED);
      expect(crashed.error).toMatch(/trap vector/);
      expect(await progressing(vmm, ['spin-1', 'spin-2'])).toEqual(['spin-1', 'spin-2']);
      await echoes(vmm, 'echo', 'after the crash\n');
      await vmmCall(vmm.client, 'destroyVm', { name: 'crash' });
    });
  });

  describe('migrating a VM whose vCPU thread runs other VMs', () => {
    let dirs: MemstoreDirs;
    let memstore: MemstoreUnderTest;
    let a: VmmUnderTest;
    let b: VmmUnderTest;

    const startVmm = (id: string) =>
      startVmmProcess([
        '--id',
        id,
        '--memstore',
        memstore.process.address,
        '--guest-dir',
        TEST_GUEST_DIR,
        '--switchover-dir',
        dirs.volatileDir,
        '--vcpu-threads',
        '1',
        '--max-vcpu-threads',
        '1',
      ]);

    beforeAll(async () => {
      dirs = memstoreDirs();
      memstore = await startMemstoreProcess(dirs);
      [a, b] = await Promise.all([startVmm('vmm-a'), startVmm('vmm-b')]);
      for (const vmm of [a, b]) {
        for (const [name, guest] of [
          [`spin-${vmm.id}`, guests.spin],
          [`idle-${vmm.id}`, guests.idle],
        ] as const) {
          await vmmCall(vmm.client, 'createVm', { spec: small(name, guest), start: true });
        }
      }
    });
    afterAll(async () => {
      await Promise.all([a?.stop(), b?.stop()]);
      await memstore?.stop();
      dirs?.cleanup();
    });

    it('hands it over through the slot and back on the stream; the mates run throughout', async () => {
      const name = 'mover';
      await vmmCall(a.client, 'createVm', {
        spec: vmSpec(name, guests.echo, {
          memory: 16 * MiB,
          backend: pb.RamBackend.RAM_BACKEND_SHARED,
        }),
        start: true,
      });
      await echoes(a, name, 'before\n');
      const there = await migrateVm(a, b, name, { via: 'slot' });
      expect(there.status).toBe('completed');
      expect(there.route?.transport).toBe('switchover-slot');
      await echoes(b, name, 'on b\n');
      const back = await migrateVm(b, a, name, {
        capabilities: { 'bypass-shared-memory': false },
      });
      expect(back.status).toBe('completed');
      expect(back.route?.transport).toBe('data-channel');
      expect(back.route?.stateEncoding).toBe('container');
      await echoes(a, name, 'back on a\n');
      for (const vmm of [a, b]) {
        expect((await vmmCall(vmm.client, 'getInfo', {})).vcpuThreads).toBe(1);
        expect(await progressing(vmm, [`spin-${vmm.id}`])).toEqual([`spin-${vmm.id}`]);
        const idle = (await vmmCall(vmm.client, 'getVm', { name: `idle-${vmm.id}` })).vm!;
        expect(idle.state).toBe(VmState.VM_STATE_RUNNING);
      }
      await vmmCall(a.client, 'destroyVm', { name });
    });
  });
});
