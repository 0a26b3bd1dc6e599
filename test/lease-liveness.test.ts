import { memstore as pb, vmm as vmmPb } from '@handoff/proto';
import { createClient, unaryCall } from '@handoff/service';
import { testCredentials, testTlsArgs } from '@handoff/service/testing';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoGuestElf, TEST_GUEST_DIR, writeEchoGuest } from './helpers/guest-elf.js';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { serviceMain, startService, type ServiceProcess } from './helpers/services.js';
import { vmctlRunner } from './helpers/vmctl.js';
import { startVmmProcess, vmmCall, vmSpec, type VmmUnderTest } from './helpers/vmm.js';

/**
 * Lease liveness across real processes: a vmm killed with -9 does not keep its leases. memstore
 * knows the vmm's process from its lease-holder session, finds it gone when its lease-channel
 * connection drops, and fences its leases (holder cleared, epoch + 1, region and memory kept);
 * the restarted vmm can create its VM again; an operator can take a lease from a holder that is
 * not alive, and not from one that is.
 */

/** The contents of `path` once it exists (a ready file is written atomically). */
async function waitForFile(path: string, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} never appeared`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return readFileSync(path, 'utf8');
}

interface RegionJson {
  name: string;
  lease: { holder: string; epoch: number } | null;
  holder: { liveness: string; vmm: string; pid: number; connected: boolean } | null;
  fenced: { holder: string; epoch: number; reason: string } | null;
  path: string;
}

describe('lease liveness: a vmm killed with -9', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let migrator: ServiceProcess;
  let migratorState: string;
  let vmm: VmmUnderTest | undefined;
  let env: NodeJS.ProcessEnv;
  const guest = writeEchoGuest();
  const { run: vmctl, json } = vmctlRunner(() => env);

  const startVmm = async (): Promise<VmmUnderTest> => {
    vmm = await startVmmProcess([
      '--id',
      'vmm-a',
      '--memstore',
      memstore.process.address,
      '--migrator',
      migrator.address,
      '--guest-dir',
      TEST_GUEST_DIR,
    ]);
    // Registered with the migrator (vmctl finds it there).
    for (let i = 0; ; i++) {
      const r = await vmctl('status', '--output', 'json');
      const status = JSON.parse(r.stdout || '{}') as { vmms?: { id: string; health: string }[] };
      if (status.vmms?.some((v) => v.id === 'vmm-a' && v.health === 'SERVING')) break;
      if (i > 200) throw new Error(`vmm-a did not register: ${r.stdout} ${r.stderr}`);
      await new Promise((res) => setTimeout(res, 50));
    }
    return vmm;
  };

  const region = async (name: string): Promise<RegionJson> =>
    (await json<{ region: RegionJson }>('region', 'show', name)).region;

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    migratorState = mkdtempSync(join(tmpdir(), 'handoff-lease-liveness-'));
    migrator = await startService('migrator', [
      '--state-dir',
      migratorState,
      '--heartbeat-interval-ms',
      '200',
    ]);
    env = {
      ...process.env,
      HANDOFF_MEMSTORE_ADDR: memstore.process.address,
      HANDOFF_MIGRATOR_ADDR: migrator.address,
    };
    await startVmm();
  });

  afterAll(async () => {
    await vmm?.stop().catch(() => undefined);
    await migrator?.stop().catch(() => undefined);
    await memstore?.stop().catch(() => undefined);
    dirs?.cleanup();
    rmSync(migratorState, { recursive: true, force: true });
  });

  it('fences its leases within ~1 s, keeps the region and its memory, and lets the restarted vmm create the VM again', async () => {
    const created = await vmctl(
      'vm',
      'create',
      'hi',
      '--guest',
      guest,
      '--memory',
      '16M',
      '--shared',
    );
    expect(created.code, created.stderr).toBe(0);
    const held = await region('hi-ram0');
    expect(held.lease).toMatchObject({ holder: 'vmm-a/hi' });
    // The session opened at the vmm's start: memstore knows the holder's process.
    expect(held.holder).toEqual({
      liveness: 'alive',
      vmm: 'vmm-a',
      pid: vmm!.process.pid,
      connected: true,
      since: expect.any(String) as string,
    });
    const shown = await vmctl('region', 'show', 'hi-ram0');
    expect(shown.stdout).toMatch(/holder:\s+alive; vmm vmm-a, pid \d+, connected/);

    // An operator cannot take the lease of a live VM; without --force vmctl explains.
    const bare = await vmctl('region', 'release', 'hi-ram0');
    expect(bare.code).toBe(2);
    expect(bare.stderr).toContain('--force');
    const refused = await vmctl('region', 'release', 'hi-ram0', '--force', '-o', 'json');
    expect(refused.code).toBe(1);
    expect(JSON.parse(refused.stdout).error.code).toBe('LEASE_HOLDER_ALIVE');
    expect(refused.stderr).toContain('alive');

    // The guest's image is in the region's memory (RAM starts with the loaded code).
    const code = echoGuestElf().subarray(0x1000, 0x1000 + 64);
    const memory = () => new Uint8Array(readFileSync(held.path).subarray(0, 64));
    expect(memory()).toEqual(code);

    // kill -9: memstore finds the process gone and fences its lease.
    const epoch = held.lease!.epoch;
    const killedAt = performance.now();
    vmm!.client.close();
    await vmm!.process.kill9();
    vmm = undefined;
    let after: pb.Region;
    for (;;) {
      after = (await unaryCall(memstore.client, 'getRegion', { region: regionNamed('hi-ram0') }))
        .region!;
      if (after.lease === undefined) break;
      if (performance.now() - killedAt > 5_000) throw new Error('the lease was not fenced');
      await new Promise((r) => setTimeout(r, 10));
    }
    const fenceMs = performance.now() - killedAt;
    console.log(`kill -9 of the vmm to its lease fenced: ${fenceMs.toFixed(0)} ms`);
    expect(fenceMs).toBeLessThan(2_000);
    expect(after.fenced).toMatchObject({
      holder: 'vmm-a/hi',
      epoch: BigInt(epoch) + 1n,
      reason: pb.FenceReason.FENCE_REASON_HOLDER_GONE,
    });
    expect(after.state).toBe(pb.RegionState.REGION_STATE_ACTIVE);
    expect(memory()).toEqual(code); // kept for a later restore
    const fenced = await region('hi-ram0');
    expect(fenced).toMatchObject({ lease: null, holder: null });
    expect((await vmctl('region', 'show', 'hi-ram0')).stdout).toMatch(
      /fenced:\s+vmm-a\/hi at .*: its vmm process was gone/,
    );
    expect(memstore.process.output()).toContain('lease fenced');

    // The restarted vmm: creating the VM again names the kept region and how to get out.
    await startVmm();
    const again = await vmctl(
      'vm',
      'create',
      'hi',
      '--guest',
      guest,
      '--memory',
      '16M',
      '--shared',
    );
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('region hi-ram0 already exists');
    expect(again.stderr).toContain('vmctl region delete hi-ram0');
    expect(again.stderr).toContain('--region hi-ram0');
    expect(again.stderr).toContain('another name');
    // Reuse it: map the kept region (the lease is free at epoch + 2) ...
    const reused = await vmctl(
      'vm',
      'create',
      'hi',
      '--guest',
      guest,
      '--memory',
      '16M',
      '--region',
      'hi-ram0',
    );
    expect(reused.code, reused.stderr).toBe(0);
    expect((await region('hi-ram0')).lease).toMatchObject({
      holder: 'vmm-a/hi',
      epoch: epoch + 2,
    });
    expect((await region('hi-ram0')).holder).toMatchObject({
      liveness: 'alive',
      pid: vmm!.process.pid,
    });
    // ... or delete it and create the VM with a region of its own again.
    expect((await vmctl('vm', 'destroy', 'hi')).code).toBe(0);
    expect((await vmctl('region', 'delete', 'hi-ram0')).code).toBe(0);
    const fresh = await vmctl(
      'vm',
      'create',
      'hi',
      '--guest',
      guest,
      '--memory',
      '16M',
      '--shared',
    );
    expect(fresh.code, fresh.stderr).toBe(0);
    expect((await vmctl('vm', 'destroy', 'hi')).code).toBe(0);
  });

  it('across a restart of memstore: a live vmm keeps its lease and re-opens its session; one that died meanwhile is fenced at start-up', async () => {
    const port = memstore.process.address.split(':').pop()!;
    const restartMemstore = async (): Promise<void> => {
      memstore = await startMemstoreProcess(dirs, ['--port', port]);
    };
    expect(
      (await vmctl('vm', 'create', 'kept', '--guest', guest, '--memory', '16M', '--shared')).code,
    ).toBe(0);
    const pid = vmm!.process.pid;
    await memstore.stop();
    await restartMemstore();
    // The vmm reconnects by itself (backoff); its lease was never in doubt.
    for (let i = 0; ; i++) {
      const r = await region('kept-ram0');
      expect(r.lease).toMatchObject({ holder: 'vmm-a/kept' });
      if (r.holder?.connected === true) {
        expect(r.holder).toMatchObject({ liveness: 'alive', pid });
        break;
      }
      if (i > 300) throw new Error(`the vmm did not re-open its session: ${JSON.stringify(r)}`);
      await new Promise((res) => setTimeout(res, 20));
    }
    // Down again; the vmm dies while memstore is away.
    await memstore.stop();
    vmm!.client.close();
    await vmm!.process.kill9();
    vmm = undefined;
    await restartMemstore();
    const after = await region('kept-ram0');
    expect(after).toMatchObject({
      lease: null,
      fenced: { holder: 'vmm-a/kept', reason: 'holder-gone' },
    });
    expect(memstore.process.output()).toContain('lease fenced');
    await startVmm();
    expect((await vmctl('region', 'delete', 'kept-ram0')).code).toBe(0);
  });

  it('fences the leases of a vmm left a zombie (its parent does not reap it)', async () => {
    // sh starts the vmm in the background, then becomes `sleep`, which never waits for it.
    const readyFile = join(migratorState, 'zombie-ready.json');
    const parent = spawn(
      'sh',
      [
        '-c',
        '"$0" "$@" & exec sleep 600',
        process.execPath,
        serviceMain('vmm'),
        '--ready-file',
        readyFile,
        '--port',
        '0',
        '--log-format',
        'json',
        '--id',
        'vmm-z',
        '--memstore',
        memstore.process.address,
        '--migrator',
        '127.0.0.1:9',
        '--guest-dir',
        TEST_GUEST_DIR,
        ...(await testTlsArgs({ id: 'vmm-z', role: 'vmm' })),
      ],
      { stdio: 'ignore' },
    );
    let pid = 0;
    try {
      const ready = JSON.parse(await waitForFile(readyFile)) as { pid: number; address: string };
      pid = ready.pid;
      const address = ready.address;
      const client = createClient(
        vmmPb.VmmServiceClient,
        address,
        await testCredentials({ id: 'test-migrator', role: 'migrator' }),
      );
      try {
        await vmmCall(client, 'createVm', {
          spec: vmSpec('zed', guest, { backend: vmmPb.RamBackend.RAM_BACKEND_SHARED }),
          start: true,
        });
      } finally {
        client.close();
      }
      expect((await region('zed-ram0')).holder).toMatchObject({ liveness: 'alive', pid });
      const killedAt = performance.now();
      process.kill(pid, 'SIGKILL');
      for (;;) {
        const r = (
          await unaryCall(memstore.client, 'getRegion', { region: regionNamed('zed-ram0') })
        ).region!;
        if (r.lease === undefined) {
          expect(r.fenced).toMatchObject({
            holder: 'vmm-z/zed',
            reason: pb.FenceReason.FENCE_REASON_HOLDER_GONE,
          });
          break;
        }
        if (performance.now() - killedAt > 5_000) throw new Error('the lease was not fenced');
        await new Promise((res) => setTimeout(res, 10));
      }
      // It was a zombie all along: the process table still shows it.
      const fenceMs = performance.now() - killedAt;
      console.log(`kill -9 of a vmm left a zombie to its lease fenced: ${fenceMs.toFixed(0)} ms`);
      expect(readFileSync(`/proc/${pid}/stat`, 'utf8')).toMatch(/\) Z /);
      expect(fenceMs).toBeLessThan(2_000);
    } finally {
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGKILL'); // when the test failed before its kill
        } catch {
          // gone already
        }
      }
      parent.kill('SIGKILL');
    }
    expect((await vmctl('region', 'delete', 'zed-ram0')).code).toBe(0);
  });

  it('region release --force takes a lease from a holder no live process stands behind', async () => {
    expect((await vmctl('region', 'create', 'orphan', '--size', '1M')).code).toBe(0);
    // A holder of a vmm that never opened a session (e.g. a vmm of an older version); a vmm
    // takes leases only for its own holders, so with vmm-old's certificate.
    const old = createClient(
      pb.MemstoreServiceClient,
      memstore.process.address,
      await testCredentials({ id: 'vmm-old', role: 'vmm' }),
    );
    try {
      await unaryCall(old, 'acquireLease', {
        region: regionNamed('orphan'),
        holder: 'vmm-old/vm1',
      });
    } finally {
      old.close();
    }
    expect((await region('orphan')).holder?.liveness).toBe('unknown');
    const deleted = await vmctl('region', 'delete', 'orphan');
    expect(deleted.code).toBe(1);
    expect(deleted.stderr).toContain('vmctl region release orphan --force');
    const released = await vmctl('region', 'release', 'orphan', '--force');
    expect(released.code, released.stderr).toBe(0);
    expect(released.stdout).toContain('took the lease from vmm-old/vm1');
    expect(await region('orphan')).toMatchObject({
      lease: null,
      fenced: { holder: 'vmm-old/vm1', epoch: 2, reason: 'operator' },
    });
    // Nothing leased: said so, not an error.
    const twice = await vmctl('region', 'release', 'orphan', '--force');
    expect(twice.code).toBe(0);
    expect(twice.stdout).toContain('not leased');
    expect((await vmctl('region', 'delete', 'orphan')).code).toBe(0);
  });
});
