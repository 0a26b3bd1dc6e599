import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { vmm as pb } from '@handoff/proto';
import { resolveCapabilities } from '@handoff/qapi';
import { capabilitiesToWire } from '@handoff/qapi/wire';
import { RemoteError, unaryCall } from '@handoff/service';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  memstoreDirs,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { abArgs, migrateVmCall } from './helpers/migration.js';
import { startVmmProcess, vmmCall, vmSpec, type VmmUnderTest } from './helpers/vmm.js';

/**
 * A source that stalls in the middle of a data-channel frame (here: the vmm's
 * `data-channel-mid-frame` failpoint sends half of its first page frame and SIGSTOPs itself once
 * those bytes are on the wire — a signal sent from outside could land between two frames) no
 * longer holds the target forever: the target fails that migration once the frame is
 * `--data-channel-frame-timeout-ms` late, logs it and closes the connection; the source, woken
 * up, finds the stream gone and keeps running the VM; and the target is clean for the next try.
 */

const MiB = 1024 * 1024;
const RAM = 64 * MiB;
const FRAME_TIMEOUT_MS = 1000;

/** True when the process is stopped by a signal (state `T` in /proc/PID/stat). */
function isStopped(pid: number): boolean {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).startsWith('T');
}

describe('a migration source that stalls mid-frame', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let a: VmmUnderTest;
  let b: VmmUnderTest;

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    const vmm = (id: string, env: NodeJS.ProcessEnv, ...more: string[]) =>
      startVmmProcess(
        ['--id', id, '--memstore', memstore.process.address, '--max-vm-memory', '1G', ...more],
        { env },
      );
    [a, b] = await Promise.all([
      vmm('vmm-a', { HANDOFF_VMM_FAILPOINT: 'data-channel-mid-frame:stop' }),
      vmm(
        'vmm-b',
        {},
        '--switchover-dir',
        'off',
        '--data-channel-frame-timeout-ms',
        String(FRAME_TIMEOUT_MS),
      ),
    ]);
  });

  afterAll(async () => {
    try {
      process.kill(a.process.pid, 'SIGCONT');
    } catch {
      // already gone
    }
    await Promise.all([a?.stop(), b?.stop()]);
    await memstore?.stop();
    dirs?.cleanup();
  });

  it('fails on the target after the bound, closes it, and the source keeps running the VM', async () => {
    // RAM full of non-zero bytes, so the copy sends page frames.
    const region = (
      await unaryCall(memstore.client, 'createRegion', {
        name: 'stall-ram',
        size: BigInt(RAM),
        kind: 1,
      })
    ).region!;
    const fd = openSync(region.path, 'r+');
    const chunk = new Uint8Array(MiB).fill(0x5a);
    for (let at = 0; at < RAM; at += MiB) writeSync(fd, chunk, 0, MiB, at);
    closeSync(fd);
    const spec = vmSpec('stall', 'ab', {
      memory: RAM,
      backend: pb.RamBackend.RAM_BACKEND_SHARED,
      region: 'stall-ram',
      args: abArgs,
    });
    await vmmCall(a.client, 'createVm', { spec, start: true });
    const copy = capabilitiesToWire(resolveCapabilities({ 'bypass-shared-memory': false }));
    const prep = await vmmCall(b.client, 'prepareIncoming', {
      name: 'stall',
      jobId: 'stall',
      spec: undefined,
      capabilities: copy,
      sourceVmm: a.id,
    });
    expect(prep.dataAddress).not.toBe('');

    const migration = migrateVmCall(a.client, {
      name: 'stall',
      jobId: 'stall',
      targetAddress: prep.address,
      token: prep.token,
      capabilities: copy,
      parameters: undefined,
      targetDataAddress: prep.dataAddress,
      targetHandoffSlot: '',
    }).catch((err: unknown) => err);

    // The source stops itself half-way through its first page frame.
    for (let i = 0; i < 400 && !isStopped(a.process.pid); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const stoppedAt = performance.now();
    expect(isStopped(a.process.pid), 'the source never reached its first page frame').toBe(true);
    const stalled = 'data channel: a source stalled mid-frame';
    for (let i = 0; i < 200 && !b.process.output().includes(stalled); i++) {
      await new Promise((r) => setTimeout(r, 25));
    }
    const noticedAfter = performance.now() - stoppedAt;
    process.kill(a.process.pid, 'SIGCONT');
    expect(b.process.output()).toContain(stalled);
    expect(b.process.output()).toMatch(/was still incomplete 1000 ms after it began/);
    expect(noticedAfter).toBeGreaterThanOrEqual(FRAME_TIMEOUT_MS / 2); // not at once
    expect(noticedAfter).toBeLessThan(FRAME_TIMEOUT_MS * 1.5 + 2000);

    // The source finds the stream gone: the migration fails and the VM runs on where it was.
    const outcome = await migration;
    expect(outcome).toBeInstanceOf(RemoteError);
    expect((outcome as RemoteError).message).toMatch(/pre-copy: .* the VM kept running/);
    expect(b.process.output()).toMatch(
      /"code":"MIGRATION_BAD_STREAM".*"msg":"incoming migration failed"/,
    );
    const vm = (await vmmCall(a.client, 'getVm', { name: 'stall' })).vm!;
    expect(pb.VmState[vm.state]).toBe('VM_STATE_RUNNING');
    const instret = vm.instret;
    await new Promise((r) => setTimeout(r, 200));
    expect((await vmmCall(a.client, 'getVm', { name: 'stall' })).vm!.instret).toBeGreaterThan(
      instret,
    );
    // Nothing of it stays on the target, whose name is free for the next try.
    expect((await vmmCall(b.client, 'listVms', {})).vms.map((v) => v.spec!.name)).not.toContain(
      'stall',
    );
    const again = await vmmCall(b.client, 'prepareIncoming', {
      name: 'stall',
      jobId: 'stall-2',
      spec: undefined,
      capabilities: copy,
      sourceVmm: a.id,
    });
    expect(again.token).not.toBe('');
    await vmmCall(a.client, 'destroyVm', { name: 'stall' });
  });
});
