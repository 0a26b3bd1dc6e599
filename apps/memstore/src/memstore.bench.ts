import { memstore as pb } from '@handoff/proto';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { createClient, createLogger, unaryCall } from '@handoff/service';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { memstoreConfig, resolveSettings } from './config.js';
import { Memstore, openMemstore } from './memstore.js';
import { makeTempDirs } from './testing/fixtures.js';
import { MEMSTORE_MAIN, startMemstoreProcess } from './testing/process.js';
import type { RegionKind } from './regions/region.js';

/**
 * `npm run bench -- memstore`: latency of the calls a migration makes while
 * the guest is stopped (TransferLease) or around it (GetRegion to verify a
 * RegionRef, ValidateLease, AcquireLease/ReleaseLease), for a VOLATILE
 * region (tmpfs) and a PERSISTENT one (state directory on this machine's
 * disk, like the catalog).
 *
 * Two measurements per call:
 * - gRPC: a real memstore process (apps/memstore/dist/main.js, log level
 *   info, JSON logs to a pipe this process drains, as under the local
 *   cluster), called one call at a time from this process over loopback —
 *   what a vmm sees;
 * - domain: the same operation on an in-process Memstore (no gRPC, silent
 *   logger) — what memstore itself spends, catalog commit included.
 */

const WARMUP = 300;
const SAMPLES = 2000;

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]!;
}

interface Stats {
  p50: number;
  p99: number;
}

function stats(ms: number[]): Stats {
  const s = [...ms].sort((a, b) => a - b);
  return { p50: quantile(s, 0.5), p99: quantile(s, 0.99) };
}

/** The calls measured, as operations on one region; each keeps its own lease state. */
interface Ops {
  transfer(): Promise<unknown> | unknown;
  validate(): Promise<unknown> | unknown;
  get(): Promise<unknown> | unknown;
  /** AcquireLease then ReleaseLease; timed separately. */
  acquire(): Promise<unknown> | unknown;
  release(): Promise<unknown> | unknown;
}

const HOLDERS = ['vmm-a/vm1', 'vmm-b/vm1'] as const;

/** Operations over gRPC against a memstore process. */
async function grpcOps(client: pb.MemstoreServiceClient, kind: RegionKind): Promise<Ops> {
  const name = `bench-${kind}`;
  const { region } = await unaryCall(client, 'createRegion', {
    name,
    size: 1n << 20n,
    kind:
      kind === 'volatile'
        ? pb.RegionKind.REGION_KIND_VOLATILE
        : pb.RegionKind.REGION_KIND_PERSISTENT,
  });
  const byId: pb.RegionSelector = { selector: { $case: 'id', value: region!.id } };
  // One region for transfer/validate/get (always leased), one for acquire/release.
  const { region: other } = await unaryCall(client, 'createRegion', {
    name: `${name}-ar`,
    size: 1n << 20n,
    kind: region!.kind,
  });
  const otherId: pb.RegionSelector = { selector: { $case: 'id', value: other!.id } };
  let turn = 0;
  let epoch = (await unaryCall(client, 'acquireLease', { region: byId, holder: HOLDERS[0] })).lease!
    .epoch;
  let otherEpoch = 0n;
  return {
    transfer: async () => {
      const res = await unaryCall(client, 'transferLease', {
        region: byId,
        fromHolder: HOLDERS[turn]!,
        expectedEpoch: epoch,
        toHolder: HOLDERS[1 - turn]!,
      });
      epoch = res.lease!.epoch;
      turn = 1 - turn;
    },
    validate: () =>
      unaryCall(client, 'validateLease', { region: byId, holder: HOLDERS[turn]!, epoch }),
    get: () => unaryCall(client, 'getRegion', { region: byId }),
    acquire: async () => {
      otherEpoch = (await unaryCall(client, 'acquireLease', { region: otherId, holder: 'x/vm' }))
        .lease!.epoch;
    },
    release: () =>
      unaryCall(client, 'releaseLease', { region: otherId, holder: 'x/vm', epoch: otherEpoch }),
  };
}

/** The same operations on an in-process Memstore. */
function domainOps(m: Memstore, kind: RegionKind, name = `bench-${kind}`): Ops {
  const region = m.regions.create({ name, size: 1 << 20, kind });
  const other = m.regions.create({ name: `${name}-ar`, size: 1 << 20, kind });
  const ref = { id: region.id };
  const otherRef = { id: other.id };
  let turn = 0;
  let epoch = m.leases.acquire(ref, HOLDERS[0]).epoch;
  let otherEpoch = 0;
  return {
    transfer: () => {
      epoch = m.leases.transfer(ref, HOLDERS[turn]!, epoch, HOLDERS[1 - turn]!).epoch;
      turn = 1 - turn;
    },
    validate: () => m.leases.validate(ref, HOLDERS[turn]!, epoch),
    get: () => m.regions.get(ref),
    acquire: () => {
      otherEpoch = m.leases.acquire(otherRef, 'x/vm').epoch;
    },
    release: () => m.leases.release(otherRef, 'x/vm', otherEpoch),
  };
}

type Measured = Record<'transfer' | 'validate' | 'get' | 'acquire' | 'release', Stats>;

/**
 * Measures every call on every region kind round-robin — one call of each per
 * iteration, acquire always right before release — so that warm-up, load
 * from other processes and catalog growth fall on every row alike.
 */
async function measure(
  opsByKind: Partial<Record<RegionKind, Ops>>,
): Promise<Partial<Record<RegionKind, Measured>>> {
  const keys = ['transfer', 'validate', 'get', 'acquire', 'release'] as const;
  const kinds = Object.keys(opsByKind) as RegionKind[];
  const samples = new Map<string, number[]>();
  for (const kind of kinds) for (const key of keys) samples.set(`${kind}/${key}`, []);
  for (let i = 0; i < WARMUP + SAMPLES; i++) {
    for (const kind of kinds) {
      const ops = opsByKind[kind]!;
      for (const key of keys) {
        const t0 = performance.now();
        await ops[key]();
        const dt = performance.now() - t0;
        if (i >= WARMUP) samples.get(`${kind}/${key}`)!.push(dt);
      }
    }
  }
  const out: Partial<Record<RegionKind, Measured>> = {};
  for (const kind of kinds) {
    const of = (key: (typeof keys)[number]) => stats(samples.get(`${kind}/${key}`)!);
    out[kind] = {
      transfer: of('transfer'),
      validate: of('validate'),
      get: of('get'),
      acquire: of('acquire'),
      release: of('release'),
    };
  }
  return out;
}

const CALLS: readonly [keyof Measured, string][] = [
  ['transfer', 'TransferLease'],
  ['validate', 'ValidateLease'],
  ['get', 'GetRegion'],
  ['acquire', 'AcquireLease'],
  ['release', 'ReleaseLease'],
];

const ms = (x: number): string => x.toFixed(3);

const FRESH_CLIENTS = 50;

/**
 * GetRegion as the first call of a new client (the channel connects: TCP and
 * HTTP/2 set-up) and as its second call — what a vmm pays when its first
 * memstore call falls inside a migration's downtime.
 */
async function firstCalls(
  address: string,
  credentials: ChannelCredentials,
): Promise<{ first: Stats; second: Stats }> {
  const region: pb.RegionSelector = { selector: { $case: 'name', value: 'bench-volatile' } };
  const first: number[] = [];
  const second: number[] = [];
  for (let i = 0; i < FRESH_CLIENTS; i++) {
    const c = createClient(pb.MemstoreServiceClient, address, credentials);
    try {
      let t0 = performance.now();
      await unaryCall(c, 'getRegion', { region });
      first.push(performance.now() - t0);
      t0 = performance.now();
      await unaryCall(c, 'getRegion', { region });
      second.push(performance.now() - t0);
    } finally {
      c.close();
    }
  }
  return { first: stats(first), second: stats(second) };
}

/**
 * The commit alone, same run, same region kind: TransferLease on a volatile
 * region committed without fsync (now) and with one (how every lease change
 * committed before), alternating call by call so that both see the same load.
 */
function commitComparison(m: Memstore): { noFsync: Stats; fsync: Stats } {
  const logger = createLogger({ name: 'memstore', level: 'silent', format: 'json' });
  // A second view of the same catalog that believes the volatile dir is not tmpfs.
  const fsyncing = new Memstore(m.settings, m.catalog, m.report, logger, false);
  const a = domainOps(m, 'volatile', 'cmp-a');
  const b = domainOps(fsyncing, 'volatile', 'cmp-b');
  const ta: number[] = [];
  const tb: number[] = [];
  for (let i = 0; i < WARMUP + SAMPLES; i++) {
    let t0 = performance.now();
    a.transfer();
    const da = performance.now() - t0;
    t0 = performance.now();
    b.transfer();
    const db = performance.now() - t0;
    if (i >= WARMUP) {
      ta.push(da);
      tb.push(db);
    }
  }
  return { noFsync: stats(ta), fsync: stats(tb) };
}

interface Table {
  title: string;
  columns: string[];
  rows: (string | number)[][];
  notes: string;
}

export async function run(): Promise<Table[]> {
  if (!existsSync(MEMSTORE_MAIN)) {
    throw new Error(`${MEMSTORE_MAIN} missing: run \`npm run build\` first`);
  }
  const kinds: RegionKind[] = ['volatile', 'persistent'];

  // gRPC against a memstore process.
  const grpcDirs = makeTempDirs('bench-grpc');
  let grpc: Partial<Record<RegionKind, Measured>>;
  let firstCall: { first: Stats; second: Stats };
  try {
    const proc = await startMemstoreProcess(grpcDirs, { logLevel: 'info' });
    const client = createClient(pb.MemstoreServiceClient, proc.address, proc.credentials);
    try {
      const ops: Partial<Record<RegionKind, Ops>> = {};
      for (const kind of kinds) ops[kind] = await grpcOps(client, kind);
      grpc = await measure(ops);
      firstCall = await firstCalls(proc.address, proc.credentials);
    } finally {
      client.close();
      await proc.stop();
    }
  } finally {
    grpcDirs.cleanup();
  }

  // The domain in this process.
  const domainDirs = makeTempDirs('bench-domain');
  let domain: Partial<Record<RegionKind, Measured>>;
  let commit: ReturnType<typeof commitComparison>;
  try {
    const settings = resolveSettings(
      memstoreConfig({
        port: 0,
        'state-dir': domainDirs.stateDir,
        'volatile-dir': domainDirs.volatileDir,
        'persistent-dir': domainDirs.persistentDir,
      }),
    );
    const m = openMemstore(
      settings,
      createLogger({ name: 'memstore', level: 'silent', format: 'json' }),
    );
    try {
      const ops: Partial<Record<RegionKind, Ops>> = {};
      for (const kind of kinds) ops[kind] = domainOps(m, kind);
      domain = await measure(ops);
      commit = commitComparison(m);
    } finally {
      m.close();
    }
  } finally {
    domainDirs.cleanup();
  }

  const rows: (string | number)[][] = [];
  for (const [key, label] of CALLS) {
    for (const kind of kinds) {
      const g = grpc[kind]![key];
      const d = domain[kind]![key];
      rows.push([label, kind, ms(g.p50), ms(g.p99), ms(d.p50), ms(d.p99)]);
    }
  }
  const latency: Table = {
    title: `memstore call latency (${SAMPLES} sequential calls each, after ${WARMUP} warm-up rounds)`,
    columns: [
      'call',
      'region',
      'gRPC p50 (ms)',
      'gRPC p99 (ms)',
      'domain p50 (ms)',
      'domain p99 (ms)',
    ],
    rows,
    notes:
      'gRPC: a real memstore process (dist/main.js, log level info, JSON logs to a pipe) called ' +
      'over loopback from the bench process, one call at a time, regions addressed by id. ' +
      'domain: the same operation on an in-process Memstore (no gRPC, silent logger). ' +
      `State directory (catalog, persistent regions) under ${tmpdir()}; volatile regions on /dev/shm. ` +
      'Calls run round-robin (every call on every kind once per round, so load and warm-up hit all ' +
      'rows alike); AcquireLease and ReleaseLease alternate on a second region. Target: TransferLease well ' +
      'inside a 2 ms migration downtime.',
  };
  const comparison: Table = {
    title:
      'TransferLease on a volatile region, in process: commit without fsync (now) vs with one (before)',
    columns: ['commit', 'p50 (ms)', 'p99 (ms)'],
    rows: [
      [
        'WAL written, not fsynced (synchronous=NORMAL)',
        ms(commit.noFsync.p50),
        ms(commit.noFsync.p99),
      ],
      ['WAL fsynced (synchronous=FULL)', ms(commit.fsync.p50), ms(commit.fsync.p99)],
    ],
    notes:
      `${SAMPLES} transfers each, alternating call by call on two volatile regions of one catalog; ` +
      'the second goes through a Memstore told its volatile directory is not tmpfs, which is how ' +
      'every lease change committed before (and how persistent regions still commit).',
  };
  const connect: Table = {
    title: 'GetRegion on a new client: first call (connects) vs second',
    columns: ['call', 'p50 (ms)', 'p99 (ms)'],
    rows: [
      ['first call of a new client', ms(firstCall.first.p50), ms(firstCall.first.p99)],
      ['second call of that client', ms(firstCall.second.p50), ms(firstCall.second.p99)],
    ],
    notes:
      `${FRESH_CLIENTS} new clients of the memstore process above. grpc-js connects on the first ` +
      'call, so a client should make one (or wait for ready) before its latency matters — e.g. a ' +
      'migration target before the source stops the guest.',
  };
  return [latency, comparison, connect];
}
