import * as grpc from '@grpc/grpc-js';
import { memstore as pb, serviceNames } from '@handoff/proto';
import type { RemoteError } from '@handoff/service';
import { checkHealth, createClient, unaryCall } from '@handoff/service';
import { execFile } from 'node:child_process';
import { openSync, writeSync, closeSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { listServicesByReflection } from './helpers/reflection.js';
import { serviceMain, waitForOutput } from './helpers/services.js';

const run = promisify(execFile);

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

async function outcome<T>(p: Promise<T>): Promise<{ ok: T } | { err: RemoteError }> {
  try {
    return { ok: await p };
  } catch (err) {
    return { err: err as RemoteError };
  }
}

/**
 * The lease tests here act for many vmms' holders through one client, which TLS forbids (a vmm
 * acts only for its own holders; test/trust.test.ts and lease-liveness.test.ts cover that):
 * their memstore runs plaintext.
 */
const PLAINTEXT = ['--insecure'];

describe('memstore process', () => {
  it('serves grpc.health.v1 and reflection listing MemstoreService', async () => {
    ms = await startMemstoreProcess(dirs);
    expect((await checkHealth(ms.process.address, ms.process.credentials)).status).toBe('SERVING');
    expect(
      (await checkHealth(ms.process.address, ms.process.credentials, serviceNames.memstore)).status,
    ).toBe('SERVING');
    expect(await listServicesByReflection(ms.process.address, ms.process.credentials)).toEqual([
      'grpc.health.v1.Health',
      'handoff.memstore.v1.MemstoreService',
    ]);
    const info = await unaryCall(ms.client, 'getInfo', {});
    expect(info).toMatchObject({
      regionCount: 0,
      volatileDir: dirs.volatileDir,
      persistentDir: dirs.persistentDir,
      maxRegionSize: 64n << 30n,
    });
  });

  it('lets exactly one of many racing TransferLease calls win; the others get LEASE_STALE_EPOCH', async () => {
    ms = await startMemstoreProcess(dirs, PLAINTEXT);
    const region = regionNamed('shared-ram');
    await unaryCall(ms.client, 'createRegion', {
      name: 'shared-ram',
      size: 1n << 20n,
      kind: pb.RegionKind.REGION_KIND_VOLATILE,
    });
    let holder = 'vmm-src/vm1';
    let epoch = (await unaryCall(ms.client, 'acquireLease', { region, holder })).lease!.epoch;
    expect(epoch).toBe(1n);
    // One channel per racer, so the calls really race over separate connections.
    const clients = Array.from({ length: 12 }, () =>
      createClient(pb.MemstoreServiceClient, ms!.process.address, ms!.process.credentials),
    );
    try {
      for (let round = 0; round < 5; round++) {
        const results = await Promise.all(
          clients.map((c, i) =>
            outcome(
              unaryCall(c, 'transferLease', {
                region,
                fromHolder: holder,
                expectedEpoch: epoch,
                toHolder: `vmm-${round}-${i}/vm1`,
              }),
            ),
          ),
        );
        const winners = results.flatMap((r) => ('ok' in r ? [r.ok.lease!] : []));
        const losers = results.flatMap((r) => ('err' in r ? [r.err] : []));
        expect(winners).toHaveLength(1);
        expect(winners[0]!.epoch).toBe(epoch + 1n);
        expect(losers).toHaveLength(clients.length - 1);
        for (const e of losers) {
          expect(e.code).toBe('LEASE_STALE_EPOCH');
          expect(e.status).toBe(grpc.status.ABORTED);
          expect(e.message).toContain(`held by "${winners[0]!.holder}" at epoch ${epoch + 1n}`);
          expect(e.message).toMatch(/must not resume/);
        }
        holder = winners[0]!.holder;
        epoch = winners[0]!.epoch;
        const got = await unaryCall(ms.client, 'getRegion', { region });
        expect(got.region?.lease).toMatchObject({ holder, epoch });
      }
    } finally {
      for (const c of clients) c.close();
    }
  });

  it('keeps leases, epochs and seals across a graceful restart and a kill -9', async () => {
    ms = await startMemstoreProcess(dirs, PLAINTEXT);
    const region = regionNamed('vm1-ram');
    await unaryCall(ms.client, 'createRegion', { name: 'vm1-ram', size: 8192n, kind: 2 });
    await unaryCall(ms.client, 'createRegion', { name: 'tmpl', size: 8192n, kind: 1 });
    await unaryCall(ms.client, 'acquireLease', { region, holder: 'vmm-a/vm1' });
    await unaryCall(ms.client, 'sealTemplate', {
      region: regionNamed('tmpl'),
      holder: '',
      epoch: 0n,
    });
    await unaryCall(ms.client, 'attachClone', {
      template: regionNamed('tmpl'),
      holder: 'vmm-a/c1',
    });
    expect(await ms.stop()).toBe(0);
    await waitForOutput(ms.process, 'catalog closed');

    ms = await startMemstoreProcess(dirs, PLAINTEXT);
    expect((await unaryCall(ms.client, 'getRegion', { region })).region?.lease).toMatchObject({
      holder: 'vmm-a/vm1',
      epoch: 1n,
    });
    const t = (await unaryCall(ms.client, 'getRegion', { region: regionNamed('tmpl') })).region!;
    expect(t).toMatchObject({ state: pb.RegionState.REGION_STATE_SEALED, cloneCount: 1 });
    const refused = await outcome(
      unaryCall(ms.client, 'acquireLease', { region: regionNamed('tmpl'), holder: 'x' }),
    );
    expect('err' in refused && refused.err.code).toBe('REGION_SEALED');

    // A transfer acknowledged just before kill -9 is durable (synchronous=FULL).
    await unaryCall(ms.client, 'transferLease', {
      region,
      fromHolder: 'vmm-a/vm1',
      expectedEpoch: 1n,
      toHolder: 'vmm-b/vm1',
    });
    await ms.kill9();
    ms = await startMemstoreProcess(dirs, PLAINTEXT);
    const v = await unaryCall(ms.client, 'validateLease', {
      region,
      holder: 'vmm-b/vm1',
      epoch: 2n,
    });
    expect(v.valid).toBe(true);
    const stale = await unaryCall(ms.client, 'validateLease', {
      region,
      holder: 'vmm-a/vm1',
      epoch: 1n,
    });
    expect(stale).toMatchObject({ valid: false, current: { holder: 'vmm-b/vm1', epoch: 2n } });
    // Epochs never go back: release, then the next grant is 3.
    await unaryCall(ms.client, 'releaseLease', { region, holder: 'vmm-b/vm1', epoch: 2n });
    const again = await unaryCall(ms.client, 'acquireLease', { region, holder: 'vmm-c/vm1' });
    expect(again.lease?.epoch).toBe(3n);
  });

  it('streams pages written by another process', async () => {
    ms = await startMemstoreProcess(dirs);
    const { region } = await unaryCall(ms.client, 'createRegion', {
      name: 'pages',
      size: 2n << 20n,
      kind: 1,
    });
    const fd = openSync(region!.path, 'r+');
    writeSync(fd, Buffer.alloc(4096, 0xab), 0, 4096, 300 * 4096);
    closeSync(fd);
    const chunks = await new Promise<pb.ReadPagesResponse[]>((resolve, reject) => {
      const out: pb.ReadPagesResponse[] = [];
      const s = ms!.client.readPages(
        { region: regionNamed('pages'), firstPage: 0n, pageCount: 512n },
        { deadline: Date.now() + 10_000 },
      );
      s.on('data', (m: pb.ReadPagesResponse) => out.push(m));
      s.on('error', reject);
      s.on('end', () => resolve(out));
    });
    expect(chunks.map((c) => [c.firstPage, c.data.length])).toEqual([
      [0n, 1 << 20],
      [256n, 1 << 20],
    ]);
    expect(chunks[1]!.data[(300 - 256) * 4096]).toBe(0xab);
    expect(chunks[0]!.data.every((b) => b === 0)).toBe(true);
  });

  it('refuses to run twice on one state directory', async () => {
    ms = await startMemstoreProcess(dirs);
    const second = (await run(process.execPath, [
      serviceMain('memstore'),
      ...dirs.args,
      '--port',
      '0',
      '--log-format',
      'json',
      '--insecure',
    ]).catch((e: unknown) => e)) as { code: number; stdout: string };
    expect(second.code).toBe(1);
    expect(second.stdout).toContain('CATALOG_LOCKED');
    expect(second.stdout).toContain('another --state-dir');
    // The first one is unharmed.
    expect((await unaryCall(ms.client, 'getInfo', {})).regionCount).toBe(0);
  });

  it('prints its options with --help', async () => {
    const { stdout } = await run(process.execPath, [serviceMain('memstore'), '--help']);
    for (const flag of [
      '--host',
      '--port',
      '--log-level',
      '--log-format',
      '--ready-file',
      '--state-dir',
      '--volatile-dir',
      '--persistent-dir',
      '--max-region-size',
      '--shutdown-timeout-ms',
      'HANDOFF_MEMSTORE_VOLATILE_DIR',
    ]) {
      expect(stdout).toContain(flag);
    }
  });
});
