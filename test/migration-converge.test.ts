/**
 * Auto-converge between two real vmm processes: an `ab` guest that rewrites (nearly) all of its
 * RAM all the time migrates by copy (no bypass) only because the source throttles its vCPU; the
 * throttle ends with the migration, whichever way it ends.
 */
import type { MigrationInfo } from '@handoff/qapi';
import { vmm as pb } from '@handoff/proto';
import { checkAbConsistency } from '@handoff/vmm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateVm, readPrivateRam, refused } from './helpers/migration.js';
import {
  memstoreDirs,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { openConsole, startVmmProcess, vmmCall, vmSpec, type VmmUnderTest } from './helpers/vmm.js';

const MiB = 1024 * 1024;
const AB_START = 0x100000; // offset in main RAM of the range ab rewrites (guest 0x80100000)

/** ab's arguments for `mib` MiB of RAM: every page from 1 MiB up to 8 MiB below the top. */
function allPages(mib: number): { args: Record<string, string>; pages: number } {
  const pages = ((mib - 9) * MiB) / 4096;
  return { args: { 'ab.start': '0x80100000', 'ab.pages': String(pages), 'ab.every': '1' }, pages };
}

describe('auto-converge: a copy of a guest that dirties all its RAM', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let a: VmmUnderTest;
  let b: VmmUnderTest;

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    const start = (id: string) =>
      startVmmProcess([
        '--id',
        id,
        '--memstore',
        memstore.process.address,
        '--max-vm-memory',
        '1G',
      ]);
    [a, b] = await Promise.all([start('vmm-a'), start('vmm-b')]);
  });

  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await memstore?.stop();
    dirs?.cleanup();
  });

  async function startBusy(name: string, mib: number): Promise<number> {
    const { args, pages } = allPages(mib);
    await vmmCall(a.client, 'createVm', {
      spec: vmSpec(name, 'ab', {
        backend: pb.RamBackend.RAM_BACKEND_PRIVATE,
        args,
        memory: mib * MiB,
      }),
      start: true,
    });
    const console = openConsole(a.client, name);
    await console.waitFor('BB');
    console.close();
    return pages;
  }

  /** Instructions per millisecond `name` on `on` retires now (over ~300 ms). */
  async function rate(on: VmmUnderTest, name: string): Promise<number> {
    const read = async () => {
      const vm = (await vmmCall(on.client, 'getVm', { name })).vm!;
      return { n: Number(vm.instret), t: performance.now() };
    };
    const first = await read();
    await new Promise((r) => setTimeout(r, 300));
    const last = await read();
    return (last.n - first.n) / (last.t - first.t);
  }

  async function expectRunning(on: VmmUnderTest, name: string): Promise<void> {
    expect((await vmmCall(on.client, 'getVm', { name })).vm!.state).toBe(
      pb.VmState.VM_STATE_RUNNING,
    );
  }

  /** Pauses `name` on vmm-b and checks ab's range, then resumes it. */
  async function expectConsistentOnB(name: string, pages: number): Promise<void> {
    await vmmCall(b.client, 'pauseVm', { name });
    const r = checkAbConsistency(
      readPrivateRam(b.process.pid, name, 'ram0', AB_START, pages * 4096),
    );
    expect(r.consistent, r.description).toBe(true);
    await vmmCall(b.client, 'resumeVm', { name });
  }

  it('256 MiB, by default: throttled until it converges; consistent and at full speed after', async () => {
    const name = 'ab-converge-256';
    const pages = await startBusy(name, 256);
    const before = await rate(a, name);
    const seen: MigrationInfo[] = [];
    const info = await migrateVm(a, b, name, {
      capabilities: { 'bypass-shared-memory': false },
      onInfo: (i) => seen.push(i),
    });
    expect(info.status).toBe('completed');
    expect(info.cpuThrottlePercentage).toBeGreaterThan(0);
    // the progress showed the throttle while it ran, rising pass by pass
    const shown = seen.filter((i) => i.status === 'active').map((i) => i.cpuThrottlePercentage);
    expect(Math.max(...shown)).toBeGreaterThan(0);
    for (let k = 1; k < shown.length; k++) expect(shown[k]).toBeGreaterThanOrEqual(shown[k - 1]!);
    console.log(
      `auto-converge 256 MiB all-dirty copy: total ${info.totalTimeMs} ms, ${info.iteration} ` +
        `passes, final throttle ${info.cpuThrottlePercentage} %, downtime ` +
        `${(info.downtimeUs / 1000).toFixed(1)} ms (expected ${info.expectedDowntimeMs} ms), ` +
        `${(info.ram.transferred / MiB).toFixed(0)} MiB sent, guest ${before.toFixed(0)} ` +
        `instructions/ms before`,
    );
    await expectRunning(b, name);
    await expectConsistentOnB(name, pages);
    // the target runs it unthrottled: within a factor of the source's speed before
    const after = await rate(b, name);
    expect(after).toBeGreaterThan(before / 4);
    await vmmCall(b.client, 'destroyVm', { name });
  });

  it('auto-converge off: fails after max-iterations saying what to do; the guest keeps its full speed', async () => {
    const name = 'ab-converge-off';
    await startBusy(name, 64);
    const before = await rate(a, name);
    const err = await refused(
      migrateVm(a, b, name, {
        capabilities: { 'bypass-shared-memory': false, 'auto-converge': false },
        // 1 ms cannot hold what an unthrottled all-dirtying guest writes in a pass, even when a
        // loaded machine starves it (with the default limit such a guest sometimes converged)
        parameters: { 'max-iterations': 3, 'downtime-limit': 1 },
      }),
    );
    expect(err.code).toBe('MIGRATION_NOT_CONVERGED');
    expect(err.message).toMatch(
      /still dirty after 3 passes.*auto-converge is off: turn it on \(--capability auto-converge=on\).*bypass-shared-memory.*kept running/,
    );
    const info = (await vmmCall(a.client, 'getMigration', { name })).info!;
    expect(info.cpuThrottlePercentage).toBe(0);
    await expectRunning(a, name);
    expect(await rate(a, name)).toBeGreaterThan(before / 4);
    await vmmCall(a.client, 'destroyVm', { name });
  });

  it('releases the throttle when a throttled migration fails or is cancelled', async () => {
    const name = 'ab-converge-released';
    await startBusy(name, 64);
    const before = await rate(a, name);

    // failed: it cannot fit 1 ms within 2 passes, throttled or not
    const failed = await refused(
      migrateVm(a, b, name, {
        capabilities: { 'bypass-shared-memory': false },
        parameters: { 'downtime-limit': 1, 'max-iterations': 2 },
      }),
    );
    expect(failed.code).toBe('MIGRATION_NOT_CONVERGED');
    expect(failed.message).toMatch(/even with the vCPU throttled to [\d.]+ %/);
    const failedInfo = (await vmmCall(a.client, 'getMigration', { name })).info!;
    expect(failedInfo.cpuThrottlePercentage).toBeGreaterThan(0);
    await expectRunning(a, name);
    const afterFailure = await rate(a, name);
    expect(afterFailure).toBeGreaterThan(before / 4);

    // cancelled while throttled to 75 % or more (a slow link: it would take many passes; the
    // first throttle of a guest that dirtied all it uses is 75 %)
    let throttledNow!: () => void;
    const throttled = new Promise<void>((resolve) => (throttledNow = resolve));
    let cancelled: Promise<unknown> | undefined;
    for (let t = 0; cancelled === undefined; t++) {
      const attempt = refused(
        migrateVm(a, b, name, {
          capabilities: { 'bypass-shared-memory': false },
          parameters: { 'max-bandwidth': 64 * MiB, 'downtime-limit': 1 },
          onInfo: (i) => {
            if (i.status === 'active' && i.cpuThrottlePercentage >= 75) throttledNow();
          },
        }),
      );
      // the target frees the name of the failed arrival asynchronously: retry until it did
      const first = await Promise.race([attempt, throttled.then(() => null)]);
      if (first === null) cancelled = attempt;
      else if (first.code !== 'VMM_VM_EXISTS' || t > 50) throw first;
      else await new Promise((r) => setTimeout(r, 20));
    }
    const whileThrottled = await rate(a, name);
    expect(whileThrottled).toBeLessThan(afterFailure / 2);
    await vmmCall(a.client, 'cancelMigration', { name });
    const err = (await cancelled) as Awaited<ReturnType<typeof refused>>;
    expect(err.code).toBe('MIGRATION_CANCELLED');
    await expectRunning(a, name);
    const afterCancel = await rate(a, name);
    expect(afterCancel).toBeGreaterThan(before / 4);
    expect(afterCancel).toBeGreaterThan(2 * whileThrottled);
    await vmmCall(a.client, 'destroyVm', { name });
  });
});
