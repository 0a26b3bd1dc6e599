import { PresentMap, PresentState } from '@handoff/bitmap';
import { memstore as pb } from '@handoff/proto';
import { createClient, unaryCall, type RemoteError } from '@handoff/service';
import { createCertificateAuthority, issueCertificate } from '@handoff/service/pki';
import { testCredentials, testMaterial } from '@handoff/service/testing';
import { mapFile } from '@handoff/shm';
import { statSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import * as tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import {
  fileBytes,
  LeaseChannel,
  sourceRegion,
  startSourceHost,
  startTargetHost,
  stillPending,
  until,
  type SourceHost,
  type TargetHost,
} from './helpers/lazy.js';
import { freePort } from './helpers/services.js';

/**
 * Lazy regions across two memstores (post-copy across hosts, apps/memstore/LAZY.md): memstore-1
 * (a process: the source host) serves a region through a page source; memstore-2 (in this
 * process: the target host) fills a lazy region from it on demand and in the background.
 */

const MiB = 1024 * 1024;
const PAGE = 4096;

let source: SourceHost | undefined;
let target: TargetHost | undefined;
const channels: LeaseChannel[] = [];

afterEach(async () => {
  for (const c of channels.splice(0)) c.close();
  await target?.stop();
  await source?.ms.stop().catch(() => {});
  target?.dirs.cleanup();
  source?.dirs.cleanup();
  target = undefined;
  source = undefined;
});

const named = (name: string): pb.RegionSelector => ({ selector: { $case: 'name', value: name } });

async function lazyOf(name: string): Promise<pb.LazyFill> {
  const { region } = await unaryCall(target!.vmm, 'getRegion', { region: named(name) });
  return region!.lazy!;
}

function untilState(name: string, state: pb.LazyFillState): Promise<pb.LazyFill> {
  return until(`${name} ${pb.lazyFillStateToJSON(state)}`, async () => {
    const lazy = await lazyOf(name);
    return lazy.state === state ? lazy : undefined;
  });
}

async function refusedCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as RemoteError).code;
  }
  throw new Error('the call succeeded but should have been refused');
}

function errorOf(res: pb.LeaseChannelResponse): { code: string; message: string } | undefined {
  return res.result?.$case === 'error' ? res.result.value : undefined;
}

async function sourceGone(regionId: string): Promise<void> {
  await until('the source region deleted', async () => {
    const code = await refusedCode(
      unaryCall(source!.ms.client, 'getRegion', {
        region: { selector: { $case: 'id', value: regionId } },
      }),
    ).catch(() => undefined);
    return code === 'REGION_NOT_FOUND' ? true : undefined;
  });
}

describe('lazy regions between two memstores', () => {
  it('fills a 64 MiB region on demand and in the background; the source copy is deleted at the end', async () => {
    source = await startSourceHost();
    target = await startTargetHost(undefined, { metricsPort: await freePort() });
    const src = await sourceRegion(source, 'vm1-ram', 64 * MiB);
    const { region } = await unaryCall(target.vmm, 'createLazyRegion', {
      name: 'vm1-ram',
      source: src.remote,
      kind: pb.RegionKind.REGION_KIND_VOLATILE,
    });
    expect(region!.size).toBe(BigInt(64 * MiB));
    expect(region!.lazy).toMatchObject({
      state: pb.LazyFillState.LAZY_FILL_STATE_WAITING,
      presentPages: 0n,
      totalPages: BigInt((64 * MiB) / PAGE),
      presentPath: `${region!.path}.present`,
    });
    expect(statSync(region!.lazy!.presentPath).mode & 0o777).toBe(0o600);

    // Nothing is fetched before StartLazyFill: the source VM still writes its region.
    const ch = await LeaseChannel.open(target);
    channels.push(ch);
    const early = ch.fetch('vm1-ram', 1000, 8);
    expect(await stillPending(early, 300)).toBe(true);
    expect((await lazyOf('vm1-ram')).presentPages).toBe(0n);

    const started = await unaryCall(target.vmm, 'startLazyFill', { region: named('vm1-ram') });
    expect(started.region!.lazy!.state).not.toBe(pb.LazyFillState.LAZY_FILL_STATE_WAITING);
    const answered = await early;
    expect(answered.result?.$case).toBe('fetchPages');

    const done = await untilState('vm1-ram', pb.LazyFillState.LAZY_FILL_STATE_COMPLETE);
    expect(done.presentPages).toBe(done.totalPages);
    expect(done.demandPages + done.backgroundPages).toBe(done.totalPages);
    expect(done.faultRequests).toBeGreaterThanOrEqual(1n);
    expect(fileBytes(region!.path, 64 * MiB).equals(src.data)).toBe(true);

    const map = mapFile(region!.lazy!.presentPath, { sharing: 'private' });
    try {
      const present = PresentMap.open(map.buffer, (64 * MiB) / PAGE);
      expect(present.state).toBe(PresentState.Complete);
      expect(present.presentPages).toBe((64 * MiB) / PAGE);
    } finally {
      map.close();
    }
    // An answered FetchPages of a present page waits for nothing.
    const again = await ch.fetch('vm1-ram', 1000, 8);
    expect(again.result).toEqual({ $case: 'fetchPages', value: { waitedUs: 0n } });
    await sourceGone(src.region.id);

    const metrics = await (await fetch(`http://${target.handle.metricsAddress}/metrics`)).text();
    expect(metrics).toMatch(/handoff_memstore_lazy_regions\{state="complete"[^}]*\} 1\n/);
    const pagesOf = (kind: string): number =>
      Number(
        new RegExp(`handoff_memstore_lazy_pages_total\\{kind="${kind}"[^}]*\\} (\\d+)`).exec(
          metrics,
        )?.[1],
      );
    expect(pagesOf('demand') + pagesOf('background')).toBe((64 * MiB) / PAGE);
    expect(metrics).toMatch(/handoff_memstore_lazy_fault_seconds_count(\{[^}]*\})? [1-9]/);
  });

  it('holds the background to max_bytes_per_second, but never a page a vmm asks for', async () => {
    source = await startSourceHost();
    target = await startTargetHost();
    const src = await sourceRegion(source, 'slow-ram', 16 * MiB);
    const limit = 4 * MiB; // bytes per second: 4 s for the region
    await unaryCall(target.vmm, 'createLazyRegion', {
      name: 'slow-ram',
      source: src.remote,
      kind: pb.RegionKind.REGION_KIND_VOLATILE,
      maxBytesPerSecond: BigInt(limit),
    });
    const ch = await LeaseChannel.open(target);
    channels.push(ch);
    const t0 = performance.now();
    await unaryCall(target.vmm, 'startLazyFill', { region: named('slow-ram') });
    // A page near the end, far beyond what the background may have asked for yet, comes at once.
    const asked = await ch.fetch('slow-ram', (16 * MiB) / PAGE - 8, 8);
    expect(asked.result?.$case).toBe('fetchPages');
    await new Promise((r) => setTimeout(r, 700));
    const lazy = await lazyOf('slow-ram');
    const elapsed = (performance.now() - t0) / 1000;
    // The limit's pace plus one request's burst (256 pages) and the pages asked for.
    const most = Math.ceil((limit * elapsed) / PAGE) + 256 + Number(lazy.demandPages);
    expect(Number(lazy.presentPages)).toBeLessThanOrEqual(most);
    expect(lazy.state).toBe(pb.LazyFillState.LAZY_FILL_STATE_FILLING);
    // It still completes, at its pace, with the source's content.
    const done = await untilState('slow-ram', pb.LazyFillState.LAZY_FILL_STATE_COMPLETE);
    expect(done.presentPages).toBe(done.totalPages);
    expect(fileBytes(done.presentPath.replace(/\.present$/, ''), 16 * MiB).equals(src.data)).toBe(
      true,
    );
  });

  it('refuses a wrong identity, a stale epoch and out-of-range page requests', async () => {
    source = await startSourceHost();
    target = await startTargetHost();
    const src = await sourceRegion(source, 'vm2-ram', 4 * MiB);

    const wrongIdentity = refusedCode(
      unaryCall(target.vmm, 'createLazyRegion', {
        name: 'vm2-ram',
        source: { ...src.remote, identity: 'recreated' },
        kind: 0,
      }),
    );
    expect(await wrongIdentity).toBe('REGION_IDENTITY_MISMATCH');

    // The source VM moved on (another epoch): the claim is refused, nothing is fetched.
    await unaryCall(target.vmm, 'createLazyRegion', {
      name: 'vm2-ram',
      source: { ...src.remote, epoch: src.epoch + 3n },
      kind: 0,
    });
    const ch = await LeaseChannel.open(target);
    channels.push(ch);
    const pending = ch.fetch('vm2-ram', 3, 1);
    expect(
      await refusedCode(unaryCall(target.vmm, 'startLazyFill', { region: named('vm2-ram') })),
    ).toBe('LEASE_STALE_EPOCH');
    // Those pages will never come: the fill failed and the waiting request with it.
    expect((await lazyOf('vm2-ram')).state).toBe(pb.LazyFillState.LAZY_FILL_STATE_FAILED);
    expect(errorOf(await pending)?.code).toBe('LAZY_FILL_FAILED');
    const lease = await unaryCall(source.ms.client, 'getRegion', {
      region: { selector: { $case: 'id', value: src.region.id } },
    });
    expect(lease.region!.lease!.holder).toBe('test-vmm/vm2-ram');

    const pages = (4 * MiB) / PAGE;
    expect(errorOf(await ch.fetch('vm2-ram', pages, 1))?.code).toBe('REGION_OUT_OF_RANGE');
    expect(errorOf(await ch.fetch('vm2-ram', pages - 1, 2))?.code).toBe('REGION_OUT_OF_RANGE');
    expect(errorOf(await ch.fetch('vm2-ram', 0, 0))?.code).toBe('REGION_INVALID_ARGUMENT');

    // Deleting the lazy region closes its (unclaimed) page source: the source keeps its region.
    await unaryCall(target.vmm, 'deleteRegion', { region: named('vm2-ram') });
    const kept = await unaryCall(source.ms.client, 'getRegion', {
      region: { selector: { $case: 'id', value: src.region.id } },
    });
    expect(kept.region!.id).toBe(src.region.id);
  });

  it('deleting a filling lazy region fails its requests and hands the source region back', async () => {
    source = await startSourceHost({ HANDOFF_MEMSTORE_PAGE_DELAY_MS: '15' });
    target = await startTargetHost();
    const src = await sourceRegion(source, 'vm7-ram', 16 * MiB);
    const { region } = await unaryCall(target.vmm, 'createLazyRegion', {
      name: 'vm7-ram',
      source: src.remote,
      kind: 0,
    });
    await unaryCall(target.vmm, 'startLazyFill', { region: named('vm7-ram') });
    const ch = await LeaseChannel.open(target);
    channels.push(ch);
    const claimed = await unaryCall(source.ms.client, 'getRegion', {
      region: { selector: { $case: 'id', value: src.region.id } },
    });
    expect(claimed.region!.lease!.holder).toMatch(/^memstore-2\/lazy\//);
    expect(claimed.region!.lease!.epoch).toBe(src.epoch + 1n);
    // memstore-1 stopped (SIGSTOP): the request cannot be answered before the delete.
    const pid = source.ms.process.pid;
    process.kill(pid, 'SIGSTOP');
    try {
      const pending = ch.fetch('vm7-ram', (16 * MiB) / PAGE - 1, 1);
      expect(await stillPending(pending, 100)).toBe(true);
      await unaryCall(target.vmm, 'deleteRegion', { region: named('vm7-ram') });
      expect(errorOf(await pending)?.code).toBe('REGION_NOT_FOUND');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(() => statSync(region!.lazy!.presentPath)).toThrow();
    // Not complete: memstore-1 keeps its region and releases the page source's lease.
    const back = await until('the page source lease released', async () => {
      const got = await unaryCall(source!.ms.client, 'getRegion', {
        region: { selector: { $case: 'id', value: src.region.id } },
      });
      return got.region!.lease === undefined ? got.region : undefined;
    });
    expect(back!.id).toBe(src.region.id);
  });

  it('pauses when memstore-1 dies mid-fill, keeps requests waiting, and completes after a recover', async () => {
    source = await startSourceHost({ HANDOFF_MEMSTORE_PAGE_DELAY_MS: '15' });
    target = await startTargetHost();
    const size = 64 * MiB;
    const src = await sourceRegion(source, 'vm3-ram', size);
    await unaryCall(target.vmm, 'createLazyRegion', {
      name: 'vm3-ram',
      source: src.remote,
      kind: 0,
    });
    await unaryCall(target.vmm, 'startLazyFill', { region: named('vm3-ram') });
    await until('some pages present', async () => {
      const l = await lazyOf('vm3-ram');
      return l.presentPages > 256n ? true : undefined;
    });
    await source.ms.kill9();

    const paused = await untilState('vm3-ram', pb.LazyFillState.LAZY_FILL_STATE_SOURCE_PAUSED);
    expect(paused.error).not.toBe('');
    expect(paused.presentPages).toBeLessThan(paused.totalPages);
    const map = mapFile(paused.presentPath, { sharing: 'private' });
    const present = PresentMap.open(map.buffer, size / PAGE);
    expect(present.state).toBe(PresentState.SourcePaused);
    const missing = present.nextMissing(0);
    expect(missing).toBeGreaterThanOrEqual(0);
    map.close();

    const ch = await LeaseChannel.open(target);
    channels.push(ch);
    const waiting = ch.fetch('vm3-ram', missing, 1);
    expect(await stillPending(waiting, 300)).toBe(true);
    // Still away: the recover says so and the fill stays paused.
    expect(
      await refusedCode(
        unaryCall(target.migrator, 'recoverLazyRegion', {
          region: named('vm3-ram'),
          sourceMemstore: '',
        }),
      ),
    ).toBe('LAZY_SOURCE_UNAVAILABLE');

    await source.restart();
    const recovered = await unaryCall(target.migrator, 'recoverLazyRegion', {
      region: named('vm3-ram'),
      sourceMemstore: source.ms.process.address,
    });
    expect(recovered.region!.lazy!.state).not.toBe(pb.LazyFillState.LAZY_FILL_STATE_SOURCE_PAUSED);
    expect((await waiting).result?.$case).toBe('fetchPages');
    const done = await untilState('vm3-ram', pb.LazyFillState.LAZY_FILL_STATE_COMPLETE);
    expect(done.presentPages).toBe(done.totalPages);
    const { region } = await unaryCall(target.vmm, 'getRegion', { region: named('vm3-ram') });
    expect(fileBytes(region!.path, size).equals(src.data)).toBe(true);
    await sourceGone(src.region.id);
  });

  it('pauses when memstore-1 goes silent without closing (stopped), and recovers', async () => {
    source = await startSourceHost({ HANDOFF_MEMSTORE_PAGE_DELAY_MS: '15' });
    target = await startTargetHost();
    const size = 16 * MiB;
    const src = await sourceRegion(source, 'vm6-ram', size);
    await unaryCall(target.vmm, 'createLazyRegion', {
      name: 'vm6-ram',
      source: src.remote,
      kind: 0,
    });
    await unaryCall(target.vmm, 'startLazyFill', { region: named('vm6-ram') });
    const pid = source.ms.process.pid;
    process.kill(pid, 'SIGSTOP');
    try {
      const paused = await untilState('vm6-ram', pb.LazyFillState.LAZY_FILL_STATE_SOURCE_PAUSED);
      expect(paused.error).toContain('no page arrived');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await unaryCall(target.migrator, 'recoverLazyRegion', {
      region: named('vm6-ram'),
      sourceMemstore: '',
    });
    await untilState('vm6-ram', pb.LazyFillState.LAZY_FILL_STATE_COMPLETE);
    const { region } = await unaryCall(target.vmm, 'getRegion', { region: named('vm6-ram') });
    expect(fileBytes(region!.path, size).equals(src.data)).toBe(true);
  });

  it('keeps what arrived across a restart of memstore-2 and carries on by itself', async () => {
    source = await startSourceHost({ HANDOFF_MEMSTORE_PAGE_DELAY_MS: '15' });
    target = await startTargetHost();
    const size = 32 * MiB;
    const src = await sourceRegion(source, 'vm5-ram', size);
    await unaryCall(target.vmm, 'createLazyRegion', {
      name: 'vm5-ram',
      source: src.remote,
      kind: 0,
    });
    await unaryCall(target.vmm, 'startLazyFill', { region: named('vm5-ram') });
    const before = await until('some pages present', async () => {
      const l = await lazyOf('vm5-ram');
      return l.presentPages > 256n ? l : undefined;
    });
    expect(before.presentPages).toBeLessThan(before.totalPages);
    const dirs = target.dirs;
    await target.stop();
    target = await startTargetHost(dirs);
    const done = await untilState('vm5-ram', pb.LazyFillState.LAZY_FILL_STATE_COMPLETE);
    // Pages that had arrived were kept, not fetched again.
    expect(done.demandPages + done.backgroundPages).toBeLessThan(done.totalPages);
    const { region } = await unaryCall(target.vmm, 'getRegion', { region: named('vm5-ram') });
    expect(fileBytes(region!.path, size).equals(src.data)).toBe(true);
    await sourceGone(src.region.id);
  });

  it('refuses hostile page-channel clients while the fill goes on', async () => {
    source = await startSourceHost({ HANDOFF_MEMSTORE_PAGE_DELAY_MS: '5' });
    target = await startTargetHost();
    const size = 16 * MiB;
    const src = await sourceRegion(source, 'vm4-ram', size);
    const other = await sourceRegion(source, 'other-ram', MiB);
    await unaryCall(target.vmm, 'createLazyRegion', {
      name: 'vm4-ram',
      source: src.remote,
      kind: 0,
    });
    await unaryCall(target.vmm, 'startLazyFill', { region: named('vm4-ram') });

    // A memstore of its own (test-memstore) opens a page source over another region.
    const asMemstore = createClient(
      pb.MemstoreServiceClient,
      source.ms.process.address,
      await testCredentials({ id: 'test-memstore', role: 'memstore' }, { serverRole: 'memstore' }),
    );
    const opened = await unaryCall(asMemstore, 'openPageSource', {
      regionId: other.region.id,
      identity: other.region.identity,
      size: BigInt(MiB),
    });
    const [host, port] = [
      opened.pageAddress.slice(0, opened.pageAddress.lastIndexOf(':')),
      Number(opened.pageAddress.slice(opened.pageAddress.lastIndexOf(':') + 1)),
    ];
    const memstoreTls = await testMaterial({ id: 'test-memstore', role: 'memstore' });
    const vmmTls = await testMaterial({ id: 'test-vmm', role: 'vmm' });

    /** Connects with `creds`, sends `frames`, returns what came back before the close. */
    const exchange = async (
      creds: { ca: Buffer | string; cert: Buffer | string; key: Buffer | string } | null,
      frames: Buffer[],
    ): Promise<Buffer> => {
      const socket: Socket =
        creds === null
          ? netConnect(port, host)
          : tls.connect({
              host,
              port,
              ca: creds.ca,
              cert: creds.cert,
              key: creds.key,
              checkServerIdentity: () => undefined,
            });
      const got: Buffer[] = [];
      return new Promise((resolve) => {
        socket.on('data', (d: Buffer) => got.push(d));
        socket.on('error', () => {});
        socket.on('close', () => resolve(Buffer.concat(got)));
        socket.once(creds === null ? 'connect' : 'secureConnect', () => {
          for (const f of frames) socket.write(f);
        });
        setTimeout(() => socket.destroy(), 3000).unref();
      });
    };
    const hello = (id: string, token: string): Buffer => {
      const i = Buffer.from(id);
      const t = Buffer.from(token);
      const b = Buffer.alloc(5 + 2 + 2 + i.length + 2 + t.length);
      b.writeUInt32BE(b.length - 4, 0);
      b[4] = 1;
      b.writeUInt16BE(1, 5);
      b.writeUInt16BE(i.length, 7);
      i.copy(b, 9);
      b.writeUInt16BE(t.length, 9 + i.length);
      t.copy(b, 11 + i.length);
      return b;
    };
    const request = (first: number, count: number): Buffer => {
      const b = Buffer.alloc(17);
      b.writeUInt32BE(13, 0);
      b[4] = 3;
      b.writeBigUInt64BE(BigInt(first), 5);
      b.writeUInt32BE(count, 13);
      return b;
    };
    const errorCode = (b: Buffer): string => {
      expect(b[4]).toBe(5);
      return b.toString('utf8', 7, 7 + b.readUInt16BE(5));
    };

    // No certificate at all (plain TCP to a TLS listener): nothing comes back.
    expect((await exchange(null, [hello(opened.sourceId, opened.token)])).length).toBe(0);
    // A vmm's certificate: not a memstore.
    expect((await exchange(vmmTls, [hello(opened.sourceId, opened.token)])).length).toBe(0);
    // A memstore certificate from another CA (forged): the handshake fails.
    const forgedCa = await createCertificateAuthority({ name: 'forged' });
    const forged = await issueCertificate(forgedCa, { id: 'test-memstore', role: 'memstore' });
    expect(
      (
        await exchange({ ca: memstoreTls.ca, cert: forged.cert, key: forged.key }, [
          hello(opened.sourceId, opened.token),
        ])
      ).length,
    ).toBe(0);
    // The right certificate, a bad token.
    expect(errorCode(await exchange(memstoreTls, [hello(opened.sourceId, 'x'.repeat(43))]))).toBe(
      'PAGE_SOURCE_NOT_FOUND',
    );
    // The right token before the claim: welcomed (a reader connects ahead of the switchover),
    // but a request is refused: the source VM may still write, nothing is served.
    const early = await exchange(memstoreTls, [
      hello(opened.sourceId, opened.token),
      request(0, 1),
    ]);
    expect(early[4]).toBe(2); // WELCOME
    expect(errorCode(early.subarray(4 + early.readUInt32BE(0)))).toBe('LEASE_NOT_HELD');
    await unaryCall(asMemstore, 'claimPageSource', {
      sourceId: opened.sourceId,
      epoch: other.epoch,
    });
    // Claimed: pages inside are served, a request outside closes the connection with an error.
    const answer = await exchange(memstoreTls, [
      hello(opened.sourceId, opened.token),
      request(0, 1),
      request(256, 1),
    ]);
    expect(answer[4]).toBe(2); // WELCOME
    const pagesAt = 4 + answer.readUInt32BE(0);
    expect(answer[pagesAt + 4]).toBe(4); // PAGES
    expect(
      answer.subarray(pagesAt + 17, pagesAt + 17 + PAGE).equals(other.data.subarray(0, PAGE)),
    ).toBe(true);
    expect(errorCode(answer.subarray(pagesAt + 17 + PAGE))).toBe('REGION_OUT_OF_RANGE');
    // Broken framing: an absurd length.
    const broken = Buffer.alloc(5);
    broken.writeUInt32BE(0xffffffff, 0);
    const afterWelcome = await exchange(memstoreTls, [
      hello(opened.sourceId, opened.token),
      broken,
    ]);
    expect(errorCode(afterWelcome.subarray(4 + afterWelcome.readUInt32BE(0)))).toBe(
      'SERVICE_BAD_FRAME',
    );
    asMemstore.close();

    // The real fill was not disturbed.
    const done = await untilState('vm4-ram', pb.LazyFillState.LAZY_FILL_STATE_COMPLETE);
    const { region } = await unaryCall(target.vmm, 'getRegion', { region: named('vm4-ram') });
    expect(done.presentPages).toBe(done.totalPages);
    expect(fileBytes(region!.path, size).equals(src.data)).toBe(true);
  });
});
