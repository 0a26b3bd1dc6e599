/**
 * Part of `npm run bench -- vcpu` (run by many-vms.bench.ts): what an idle clone of a kvserver
 * template costs.
 *
 * - **In one process** (clone-farm.ts, a child process per row): N clones built as a vCPU thread
 *   holds them (RAM file mapped copy-on-write, device state restored, run until asleep in WFI):
 *   PSS, V8 heap and array-buffer memory per clone, and a heap snapshot summed by constructor.
 * - **In a vmm**: a memstore and a vmm process (plaintext, throw-away directories); a kvserver
 *   VM with shared RAM is made a template (SaveVm --stop --template), then CloneVms makes N
 *   clones; the vmm's PSS growth per clone.
 *
 * Sizes: `HANDOFF_BENCH_CLONES` (default 200) clones per row at 64 and 256 MiB, and 1000 at
 * 256 MiB unless `HANDOFF_BENCH_LARGE=0`.
 *
 * @packageDocumentation
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { vmm as pb } from '@handoff/proto';
import {
  channelCredentials,
  createClient,
  startServiceProcess,
  unaryCall,
  type ServiceProcess,
} from '@handoff/service';
import { readSmapsRollup } from '@handoff/shm';
import type { FarmReport } from './clone-farm.js';

const MiB = 1024 * 1024;
const KiB = 1024;
const HERE = dirname(fileURLToPath(import.meta.url));
const FARM = join(HERE, 'clone-farm.js');
const VMM_MAIN = join(HERE, '..', 'main.js');
const MEMSTORE_MAIN = join(HERE, '..', '..', '..', 'memstore', 'dist', 'main.js');
/** Clones made before the measured batch in the vmm rows. */
const WARM_UP_CLONES = 20;

/** A benchmark table. */
export interface Table {
  title: string;
  columns: string[];
  rows: (string | number)[][];
  notes?: string;
}

function sizes(): { clones: number; large: boolean } {
  return {
    clones: Number(process.env.HANDOFF_BENCH_CLONES ?? 200),
    large: process.env.HANDOFF_BENCH_LARGE !== '0',
  };
}

async function runFarm(ramMiB: number, clones: number, flags: string[]): Promise<FarmReport> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--expose-gc', FARM, String(ramMiB), String(clones), ...flags],
    { maxBuffer: 16 * MiB, timeout: 600_000 },
  );
  return JSON.parse(stdout.trim().split('\n').pop()!) as FarmReport;
}

const perClone = (after: number, before: number, n: number): string =>
  ((after - before) / n / KiB).toFixed(1);

/** The in-process rows and the heap breakdown of the largest request row. */
async function farmTables(): Promise<Table[]> {
  const { clones, large } = sizes();
  const cases: [number, number, string[]][] = [
    [64, clones, []],
    [256, clones, []],
    [256, clones, ['--requests', '--snapshot']],
    ...(large ? ([[256, 1000, []]] as [number, number, string[]][]) : []),
  ];
  const rows: (string | number)[][] = [];
  let breakdown: FarmReport | undefined;
  for (const [ram, n, flags] of cases) {
    const r = await runFarm(ram, n, flags);
    if (r.byConstructor !== undefined) breakdown = r;
    rows.push([
      ram,
      n,
      r.requests ? 'PUT + GET each' : 'none',
      (r.buildMs / 1000).toFixed(1),
      `${(r.pssBefore / MiB).toFixed(0)} → ${(r.pssAfter / MiB).toFixed(0)}`,
      perClone(r.pssAfter, r.pssBefore, n),
      perClone(r.heapAfter, r.heapBefore, n),
      perClone(r.buffersAfter, r.buffersBefore, n),
    ]);
  }
  const tables: Table[] = [
    {
      title: 'Idle kvserver clones in one process (in-process farm, one thread)',
      columns: [
        'RAM (MiB)',
        'clones',
        'requests before measuring',
        'build all (s)',
        'PSS MiB (before → after)',
        'PSS per clone (KiB)',
        'V8 heap per clone (KiB)',
        'array buffers per clone (KiB)',
      ],
      rows,
      notes:
        'Each row: a child process boots kvserver (kv.slots_log2=12) as the template, writes its ' +
        'RAM to a file, then makes N clones: the file mapped MAP_PRIVATE, the device state ' +
        'restored, run until asleep in WFI (with requests: then PUT and GET answered). Heap after ' +
        'a full GC. Array buffers: off-heap typed-array memory (not the RAM mappings).',
    },
  ];
  if (breakdown?.byConstructor !== undefined) {
    tables.push({
      title: `What the heap holds per clone (${breakdown.ramMiB} MiB, ${breakdown.clones} clones after a PUT and a GET each)`,
      columns: ['constructor / kind', 'bytes per clone', 'objects per clone'],
      rows: breakdown.byConstructor.map((c) => [
        c.name,
        Math.round(c.bytesPerClone),
        c.countPerClone.toFixed(1),
      ]),
      notes:
        'Heap snapshots of the farm process before and after the clones were made: the growth of ' +
        'the self sizes summed by constructor (or kind), divided by the clone count. RAM mappings ' +
        'are left out.',
    });
  }
  return tables;
}

/** A memstore + vmm pair on throw-away directories. */
async function startPair(dir: string): Promise<{
  memstore: ServiceProcess;
  vmm: ServiceProcess;
  client: pb.VmmServiceClient;
  stop(): Promise<void>;
}> {
  const stateDir = join(dir, 'state');
  const volatileDir = join('/dev/shm', `handoff-bench-${process.pid}-${Date.now()}`);
  mkdirSync(stateDir, { recursive: true });
  const memstore = await startServiceProcess({
    name: 'memstore',
    entry: MEMSTORE_MAIN,
    args: [
      '--insecure',
      '--port',
      '0',
      '--log-level',
      'warn',
      '--state-dir',
      stateDir,
      '--volatile-dir',
      volatileDir,
      '--persistent-dir',
      join(stateDir, 'regions'),
    ],
  });
  const vmm = await startServiceProcess({
    name: 'vmm',
    entry: VMM_MAIN,
    args: [
      '--insecure',
      '--port',
      '0',
      '--migrator',
      '127.0.0.1:9',
      '--memstore',
      memstore.address,
      '--max-vm-memory',
      '256M',
      '--log-level',
      'warn',
    ],
  });
  const client = createClient(pb.VmmServiceClient, vmm.address, channelCredentials(null));
  return {
    memstore,
    vmm,
    client,
    async stop() {
      client.close();
      await vmm.stop(60_000);
      await memstore.stop(30_000);
      rmSync(volatileDir, { recursive: true, force: true });
    },
  };
}

/**
 * The process's memory once its PSS holds still (two samples 1 s apart within 256 KiB, at most
 * 20 s): the stopped template's RAM is unmapped a little after SaveVm answers.
 */
async function settledUsage(pid: number): Promise<ReturnType<typeof readSmapsRollup>> {
  let last = readSmapsRollup(pid);
  for (let k = 0; k < 20; k++) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = readSmapsRollup(pid);
    const still = Math.abs(now.pss - last.pss) < 256 * KiB;
    last = now;
    if (still) break;
  }
  return last;
}

/** Makes a kvserver template of `ramMiB` in the vmm and clones it `n` times; PSS per clone. */
async function vmmRow(ramMiB: number, n: number): Promise<(string | number)[]> {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-bench-clones-'));
  const pair = await startPair(dir);
  const client = pair.client;
  const opts = { deadlineMs: 300_000 };
  try {
    const name = `kv${ramMiB}`;
    await unaryCall(
      client,
      'createVm',
      {
        spec: {
          name,
          guest: 'kvserver',
          ram: [
            {
              id: 'ram0',
              guestBase: 0x8000_0000n,
              size: BigInt(ramMiB * MiB),
              backend: pb.RamBackend.RAM_BACKEND_SHARED,
              region: '',
            },
          ],
          args: {},
        },
        start: true,
      },
      opts,
    );
    for (const end = Date.now() + 120_000; ;) {
      const { vm } = await unaryCall(client, 'getVm', { name }, opts);
      if (vm?.ready === true) break;
      if (Date.now() > end) throw new Error(`${name} never became ready`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await unaryCall(
      client,
      'saveVm',
      { name, snapshot: `${name}-tpl`, full: false, stop: true, template: true, jobId: '' },
      opts,
    );
    const clone = (namePrefix: string, count: number) =>
      unaryCall(
        client,
        'cloneVms',
        { snapshot: `${name}-tpl`, count, namePrefix, firstIndex: 0, paused: false, jobId: '' },
        opts,
      );
    // A first batch, so that the measured one finds the clone paths compiled and the heap grown
    // past the template's garbage: its PSS growth is the marginal cost of a clone.
    await clone('w', WARM_UP_CLONES);
    const before = await settledUsage(pair.vmm.pid);
    const t0 = performance.now();
    await clone('c', n);
    const cloneS = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 2000)); // the clones reach WFI
    const after = readSmapsRollup(pair.vmm.pid);
    return [
      ramMiB,
      n,
      cloneS.toFixed(1),
      `${(before.rss / MiB).toFixed(0)} → ${(after.rss / MiB).toFixed(0)}`,
      `${(before.pss / MiB).toFixed(0)} → ${(after.pss / MiB).toFixed(0)}`,
      perClone(after.pss, before.pss, n),
    ];
  } finally {
    await pair.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The vmm rows. */
async function vmmTable(): Promise<Table> {
  const { clones, large } = sizes();
  const rows: (string | number)[][] = [];
  rows.push(await vmmRow(64, clones));
  rows.push(await vmmRow(256, clones));
  if (large) rows.push(await vmmRow(256, 1000));
  return {
    title: 'Idle kvserver clones in one vmm process (CloneVms of a template)',
    columns: [
      'RAM (MiB)',
      'clones',
      'CloneVms (s)',
      'RSS MiB (before → after)',
      'PSS MiB (before → after)',
      'PSS per clone (KiB)',
    ],
    rows,
    notes:
      'Each row: a fresh memstore and vmm (plaintext); kvserver (default table, 2^19 slots) with ' +
      'shared RAM, saved as a template with --stop, a first CloneVms of 20, then one of N; PSS ' +
      'of the vmm process 2 s after it answered, against just before the call once the PSS ' +
      'held still (garbage collection still moves it by a few MiB either way).',
  };
}

/** Every clone table of the `vcpu` suite. */
export async function cloneTables(): Promise<Table[]> {
  return [...(await farmTables()), await vmmTable()];
}
