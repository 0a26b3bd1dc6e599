import { memstore as pb } from '@handoff/proto';
import { RemoteError, unaryCall } from '@handoff/service';
import { statSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  memstoreDirs,
  reconcileReport,
  regionFiles,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';

let dirs: MemstoreDirs;
let ms: MemstoreUnderTest | undefined;

beforeEach(() => {
  dirs = memstoreDirs();
});

afterEach(async () => {
  await ms?.stop();
  ms = undefined;
  dirs.cleanup();
});

interface Created {
  id: string;
  name: string;
  path: string;
  size: bigint;
}

const VOLATILE = pb.RegionKind.REGION_KIND_VOLATILE;
const PERSISTENT = pb.RegionKind.REGION_KIND_PERSISTENT;

/**
 * Keeps `inFlight` CreateRegion calls going; once `killAfter` have
 * succeeded, kills the memstore with SIGKILL after a random 0-15 ms, while
 * calls are still in flight. Returns every creation the service acknowledged.
 */
async function burstThenKill(
  target: MemstoreUnderTest,
  round: number,
  killAfter: number,
  inFlight: number,
): Promise<Created[]> {
  const created: Created[] = [];
  let next = 0;
  let killed: Promise<void> | undefined;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      const name = `burst-${round}-${i}`;
      const size = BigInt((1 + (i % 16)) * 64 * 1024);
      const kind = i % 2 === 0 ? VOLATILE : PERSISTENT;
      try {
        const { region } = await unaryCall(target.client, 'createRegion', { name, size, kind });
        created.push({ id: region!.id, name, path: region!.path, size });
      } catch {
        // Calls in flight when the process died fail (UNAVAILABLE): expected.
        return;
      }
      if (created.length >= killAfter) {
        killed ??= new Promise((r) => setTimeout(r, Math.random() * 15)).then(() => target.kill9());
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  await killed;
  return created;
}

/** Every acknowledged region is listed with its file, and every region file belongs to a listed region. */
async function expectConsistent(
  target: MemstoreUnderTest,
  acknowledged: Created[],
): Promise<pb.Region[]> {
  const { regions } = await unaryCall(target.client, 'listRegions', { kind: 0 });
  const byId = new Map(regions.map((r) => [r.id, r]));
  for (const c of acknowledged) {
    const r = byId.get(c.id);
    expect(r, `acknowledged region ${c.name} missing after restart`).toBeDefined();
    expect(r).toMatchObject({ name: c.name, path: c.path, size: c.size });
    expect(r!.state).toBe(pb.RegionState.REGION_STATE_ACTIVE);
    expect(statSync(c.path).size).toBe(Number(c.size));
  }
  expect(regionFiles(dirs.volatileDir, dirs.persistentDir)).toEqual(
    regions.map((r) => r.path).sort(),
  );
  return regions;
}

/** Runs `fn` against a memstore armed to die at `point`; expects it to die there. */
async function dieAt(
  point: string,
  fn: (target: MemstoreUnderTest) => Promise<void>,
): Promise<void> {
  ms = await startMemstoreProcess(dirs, PLAINTEXT, { HANDOFF_MEMSTORE_FAILPOINT: point });
  const target = ms;
  const err = await fn(target).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `the call should fail when the memstore dies at ${point}`).toBeInstanceOf(
    RemoteError,
  );
  await target.kill9();
  expect(target.process.child.signalCode).toBe('SIGKILL');
  ms = undefined;
}

/**
 * Plaintext: the tests' one client takes leases for any holder, which TLS forbids (a vmm acts
 * only for its own holders).
 */
const PLAINTEXT = ['--insecure'];

describe('memstore crash safety', () => {
  it('kill -9 during a burst of creations loses no acknowledged region and leaves no orphan file', async () => {
    const acknowledged: Created[] = [];
    for (let round = 0; round < 3; round++) {
      ms = await startMemstoreProcess(dirs, PLAINTEXT);
      acknowledged.push(...(await burstThenKill(ms, round, 30, 16)));
      ms = await startMemstoreProcess(dirs, PLAINTEXT);
      const regions = await expectConsistent(ms, acknowledged);
      const report = await reconcileReport(ms.process);
      expect(report.regions).toBe(regions.length);
      expect(report.lost).toBe(0);
      await ms.stop();
      ms = undefined;
    }
    expect(acknowledged.length).toBeGreaterThanOrEqual(3 * 30);
  });

  it('a crash after the creating row is committed is rolled back at start-up', async () => {
    ms = await startMemstoreProcess(dirs, PLAINTEXT);
    const { region } = await unaryCall(ms.client, 'createRegion', {
      name: 'kept',
      size: 8192n,
      kind: 1,
    });
    await ms.stop();
    await dieAt('create-after-row', async (t) => {
      await unaryCall(t.client, 'createRegion', { name: 'half', size: 8192n, kind: PERSISTENT });
    });
    ms = await startMemstoreProcess(dirs, PLAINTEXT);
    expect(await reconcileReport(ms.process)).toMatchObject({
      rolledBack: 1,
      orphansRemoved: 0,
      regions: 1,
    });
    const regions = await expectConsistent(ms, [
      { id: region!.id, name: 'kept', path: region!.path, size: 8192n },
    ]);
    expect(regions.map((r) => r.name)).toEqual(['kept']);
    // The name is free again.
    await unaryCall(ms.client, 'createRegion', { name: 'half', size: 8192n, kind: PERSISTENT });
  });

  it('a crash after the file is made, before the commit, removes file and row at start-up', async () => {
    await dieAt('create-after-file:3', async (t) => {
      for (const name of ['a', 'b', 'c']) {
        await unaryCall(t.client, 'createRegion', { name, size: 8192n, kind: VOLATILE });
      }
    });
    expect(regionFiles(dirs.volatileDir)).toHaveLength(3);
    ms = await startMemstoreProcess(dirs, PLAINTEXT);
    expect(await reconcileReport(ms.process)).toMatchObject({ rolledBack: 1, regions: 2 });
    const regions = await expectConsistent(ms, []);
    expect(regions.map((r) => r.name)).toEqual(['a', 'b']);
  });

  it('a crash between deleting the row and the file leaves an orphan that start-up removes', async () => {
    await dieAt('delete-after-row', async (t) => {
      await unaryCall(t.client, 'createRegion', { name: 'doomed', size: 8192n, kind: VOLATILE });
      await unaryCall(t.client, 'deleteRegion', { region: regionNamed('doomed') });
    });
    expect(regionFiles(dirs.volatileDir)).toHaveLength(1);
    ms = await startMemstoreProcess(dirs, PLAINTEXT);
    expect(await reconcileReport(ms.process)).toMatchObject({ orphansRemoved: 1, regions: 0 });
    await expectConsistent(ms, []);
  });

  it('a crash in the middle of sealing leaves the region active and writable', async () => {
    await dieAt('seal-after-chmod', async (t) => {
      await unaryCall(t.client, 'createRegion', { name: 't', size: 8192n, kind: PERSISTENT });
      await unaryCall(t.client, 'acquireLease', { region: regionNamed('t'), holder: 'vmm-a/vm1' });
      await unaryCall(t.client, 'sealTemplate', {
        region: regionNamed('t'),
        holder: 'vmm-a/vm1',
        epoch: 1n,
      });
    });
    ms = await startMemstoreProcess(dirs, PLAINTEXT);
    expect(await reconcileReport(ms.process)).toMatchObject({ modesFixed: 1, regions: 1 });
    const { region } = await unaryCall(ms.client, 'getRegion', { region: regionNamed('t') });
    expect(region).toMatchObject({
      state: pb.RegionState.REGION_STATE_ACTIVE,
      lease: { holder: 'vmm-a/vm1', epoch: 1n },
    });
    expect(statSync(region!.path).mode & 0o777).toBe(0o600);
    const sealed = await unaryCall(ms.client, 'sealTemplate', {
      region: regionNamed('t'),
      holder: 'vmm-a/vm1',
      epoch: 1n,
    });
    expect(sealed.region?.state).toBe(pb.RegionState.REGION_STATE_SEALED);
  });
});
