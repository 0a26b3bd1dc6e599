import { PresentMap, PresentState } from '@handoff/bitmap';
import { memstore as pb } from '@handoff/proto';
import {
  channelCredentials,
  createClient,
  startServiceProcess,
  unaryCall,
  type ServiceProcess,
} from '@handoff/service';
import { testCredentials, testTlsDir } from '@handoff/service/testing';
import { mapFile } from '@handoff/shm';
import type * as grpc from '@grpc/grpc-js';
import { closeSync, openSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { LeaseChannelClient, makeTempDirs, type TempDirs } from '../testing/fixtures.js';
import { MEMSTORE_MAIN } from '../testing/process.js';

/**
 * `npm run bench -- lazy`: a lazy region's fill between two memstore processes on loopback
 * (apps/memstore/LAZY.md). memstore-1 holds a 1 GiB source region (a leased region written with
 * a non-zero pattern); memstore-2 creates the lazy region and fills it.
 *
 * - fill rate: StartLazyFill to the present map's state Complete, nothing else asked for (the
 *   background connection alone), per page-channel transport: mutual TLS over TCP (the default
 *   with certificates), plain TCP and a unix socket (`--insecure`);
 * - page requests during the fill: this process, as a vmm on memstore-2's lease channel, sends
 *   FetchPages for one page at a time, each a page not yet present far from the background
 *   cursor, while the background fill runs; `waited_us` (memstore's request-to-present time)
 *   and the round trip seen here.
 */

const SIZE = 1024 * 1024 * 1024;
const PAGE = 4096;
const PAGES = SIZE / PAGE;

type Transport = 'tls' | 'tcp' | 'unix';

interface Host {
  readonly proc: ServiceProcess;
  readonly client: pb.MemstoreServiceClient;
  readonly dirs: TempDirs;
}

async function startHost(id: string, transport: Transport): Promise<Host> {
  const dirs = makeTempDirs(`lazy-bench-${id}`);
  let security: string[];
  let credentials: grpc.ChannelCredentials;
  if (transport === 'tls') {
    const dir = await testTlsDir({ id, role: 'memstore' });
    security = [
      '--tls-ca',
      join(dir, 'ca.pem'),
      '--tls-cert',
      join(dir, `${id}.pem`),
      '--tls-key',
      join(dir, `${id}.key`),
    ];
    credentials = await testCredentials(
      { id: 'test-vmm', role: 'vmm' },
      { serverRole: 'memstore' },
    );
  } else {
    security = ['--insecure', '--page-channel', transport === 'tcp' ? '127.0.0.1:0' : 'auto'];
    credentials = channelCredentials(null);
  }
  const proc = await startServiceProcess({
    name: id,
    entry: MEMSTORE_MAIN,
    readyFile: join(dirs.stateDir, 'ready.json'),
    args: [
      '--port',
      '0',
      '--log-format',
      'json',
      '--log-level',
      'warn',
      '--state-dir',
      dirs.stateDir,
      '--volatile-dir',
      dirs.volatileDir,
      '--persistent-dir',
      dirs.persistentDir,
      ...security,
    ],
  });
  return { proc, client: createClient(pb.MemstoreServiceClient, proc.address, credentials), dirs };
}

async function stopHost(h: Host): Promise<void> {
  h.client.close();
  await h.proc.stop();
  h.dirs.cleanup();
}

/** A leased 1 GiB region on `h` written with a non-zero pattern; its RemoteRegion. */
async function sourceRegion(h: Host, name: string): Promise<pb.RemoteRegion> {
  const { region } = await unaryCall(h.client, 'createRegion', {
    name,
    size: BigInt(SIZE),
    kind: pb.RegionKind.REGION_KIND_VOLATILE,
  });
  const { lease } = await unaryCall(h.client, 'acquireLease', {
    region: { selector: { $case: 'id', value: region!.id } },
    holder: `test-vmm/${name}`,
  });
  const block = randomBytes(4 * 1024 * 1024);
  for (let i = 0; i < block.length; i += PAGE) block[i] = 1;
  const fd = openSync(region!.path, 'r+');
  try {
    for (let at = 0; at < SIZE; at += block.length) writeSync(fd, block, 0, block.length, at);
  } finally {
    closeSync(fd);
  }
  return {
    memstore: h.proc.address,
    regionId: region!.id,
    identity: region!.identity,
    size: BigInt(SIZE),
    epoch: lease!.epoch,
  };
}

/** A lease-channel connection of a vmm to `h` (hello said). */
async function openChannel(h: Host): Promise<LeaseChannelClient> {
  const session = await unaryCall(h.client, 'openLeaseSession', { vmmId: 'test-vmm' });
  return LeaseChannelClient.open(session.leaseChannel, session.token, 'lazy-bench');
}

function quantile(sorted: number[], q: number): number {
  return sorted.length === 0
    ? 0
    : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]!;
}

interface Run {
  readonly transport: Transport;
  readonly seconds: number;
  readonly faults: number;
  readonly waitedUs: number[];
  readonly roundTripUs: number[];
  readonly demandPages: bigint;
}

/** One fill of a 1 GiB region; with `faults`, page requests run alongside. */
async function fill(transport: Transport, faults: boolean): Promise<Run> {
  const one = await startHost('memstore-1', transport);
  const two = await startHost('memstore-2', transport);
  try {
    const remote = await sourceRegion(one, 'bench-ram');
    const { region } = await unaryCall(two.client, 'createLazyRegion', {
      name: 'bench-ram',
      source: remote,
      kind: pb.RegionKind.REGION_KIND_VOLATILE,
    });
    const mapping = mapFile(region!.lazy!.presentPath, { sharing: 'private' });
    const present = PresentMap.open(mapping.buffer, PAGES);
    const ch = faults ? await openChannel(two) : null;
    const waitedUs: number[] = [];
    const roundTripUs: number[] = [];
    const t0 = performance.now();
    await unaryCall(two.client, 'startLazyFill', {
      region: { selector: { $case: 'name', value: 'bench-ram' } },
    });
    let seed = 12345;
    while (present.state !== PresentState.Complete) {
      if (ch === null) {
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      // A missing page in the half the background cursor has not reached yet.
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      const page = present.nextMissing(PAGES / 2 + (seed % (PAGES / 2)));
      if (page < 0) {
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      const s = performance.now();
      const res = await ch.call({
        $case: 'fetchPages',
        value: {
          region: { selector: { $case: 'name', value: 'bench-ram' } },
          firstPage: BigInt(page),
          pageCount: 1,
        },
      });
      roundTripUs.push((performance.now() - s) * 1000);
      if (res.result?.$case === 'fetchPages' && res.result.value.waitedUs > 0n) {
        waitedUs.push(Number(res.result.value.waitedUs));
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    const seconds = (performance.now() - t0) / 1000;
    const got = await unaryCall(two.client, 'getRegion', {
      region: { selector: { $case: 'name', value: 'bench-ram' } },
    });
    ch?.close();
    mapping.close();
    return {
      transport,
      seconds,
      faults: roundTripUs.length,
      waitedUs: waitedUs.sort((a, b) => a - b),
      roundTripUs: roundTripUs.sort((a, b) => a - b),
      demandPages: got.region!.lazy!.demandPages,
    };
  } finally {
    await stopHost(two);
    await stopHost(one);
  }
}

const gbps = (r: Run): string => (SIZE / r.seconds / 1e9).toFixed(2);

/** `HANDOFF_LAZY_BENCH=tcp,unix` limits the transports (profiling one). */
function transports(all: readonly Transport[]): Transport[] {
  const only = process.env['HANDOFF_LAZY_BENCH'];
  return only === undefined || only === ''
    ? [...all]
    : all.filter((t) => only.split(',').includes(t));
}

export async function run() {
  const load = loadavg()[0]!.toFixed(1);
  const fills: Run[] = [];
  for (const t of transports(['tls', 'tcp', 'unix'])) fills.push(await fill(t, false));
  const faulted: Run[] = [];
  for (const t of transports(['tls', 'unix'])) faulted.push(await fill(t, true));
  return [
    {
      title: 'Background fill of a 1 GiB lazy region (two memstore processes, loopback)',
      columns: ['page channel', 'fill time (s)', 'GB/s'],
      rows: fills.map((r) => [r.transport, r.seconds.toFixed(2), gbps(r)]),
      notes:
        'StartLazyFill to the present map saying Complete; no page requests. tls: mutual TLS 1.3 ' +
        'over TCP (the default with certificates); tcp: plaintext TCP; unix: a unix socket ' +
        `(the default under --insecure). Target: >= 1 GB/s. Load average at the start: ${load} ` +
        `on ${cpus().length} cores.`,
    },
    {
      title: 'FetchPages of a missing page while the background fill runs',
      columns: [
        'page channel',
        'requests',
        'waited p50 (µs)',
        'waited p99 (µs)',
        'round trip p50 (µs)',
        'round trip p99 (µs)',
        'fill GB/s',
      ],
      rows: faulted.map((r) => [
        r.transport,
        String(r.faults),
        quantile(r.waitedUs, 0.5).toFixed(0),
        quantile(r.waitedUs, 0.99).toFixed(0),
        quantile(r.roundTripUs, 0.5).toFixed(0),
        quantile(r.roundTripUs, 0.99).toFixed(0),
        gbps(r),
      ]),
      notes:
        'One page at a time from this process (a vmm on the lease channel), 1 ms apart, each ' +
        'not present and beyond the background cursor. waited: memstore-2 from the request to ' +
        'the page present (FetchPagesResponse.waited_us); round trip: as this client sees it. ' +
        'Target: p99 <= 1 ms.',
    },
  ];
}
