/**
 * `npm run bench -- vcpu`: many small idle VMs in one vmm process. For each case a fresh vmm
 * process (plaintext, no memstore: private RAM only) gets N VMs of 1 MiB, created and started one
 * after the other over gRPC; the table gives the creation time, the process's memory (RSS and
 * PSS from smaps_rollup, before and after), its thread count and the vCPU threads it reports,
 * and the CPU it uses over an idle second.
 *
 * Guests: `hello` (boots, greets, powers off: the VM then waits to be destroyed) and a tiny idle
 * guest built here (prints one line, then waits in WFI with every interrupt off, so only console
 * input could wake it).
 *
 * @packageDocumentation
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { vmm as pb } from '@handoff/proto';
import { channelCredentials, createClient, startServiceProcess, unaryCall } from '@handoff/service';
import { readSmapsRollup } from '@handoff/shm';
import { asm, elfOf } from '../cpu/test-asm.js';
import { cloneTables, type Table } from './clone-density.bench.js';

const MiB = 1024 * 1024;
const RAM_BASE = 0x8000_0000;
const VMM_MAIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'main.js');

/** One line of the table. */
interface Case {
  readonly guest: 'hello' | 'idle';
  readonly vms: number;
  /** Extra vmm flags. */
  readonly flags?: readonly string[];
}

/** The idle guest: "idle\n" on the UART, then WFI forever with every interrupt off. */
function idleGuestElf(): Uint8Array {
  const s0 = 8;
  const t0 = 5;
  const words = [asm.lui(s0, 0x10000)];
  for (const c of 'idle\n') words.push(asm.addi(t0, 0, c.charCodeAt(0)), asm.sb(t0, s0, 0));
  words.push(asm.wfi(), asm.jal(0, -4));
  return elfOf(words);
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

const threadsOf = (pid: number): number => readdirSync(`/proc/${pid}/task`).length;

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] ?? 0;
}

/** Runs one case in a fresh vmm process. */
async function measure(c: Case, guestDir: string): Promise<(string | number)[]> {
  const proc = await startServiceProcess({
    name: 'vmm',
    entry: VMM_MAIN,
    args: [
      '--insecure',
      '--port',
      '0',
      '--migrator',
      '127.0.0.1:9',
      '--memstore',
      '127.0.0.1:9',
      '--guest-dir',
      guestDir,
      '--log-level',
      'warn',
      ...(c.flags ?? []),
    ],
  });
  const client = createClient(pb.VmmServiceClient, proc.address, channelCredentials(null));
  try {
    await new Promise((r) => setTimeout(r, 1500)); // the process settles (warm-ups, spares)
    const before = readSmapsRollup(proc.pid);
    const threadsBefore = threadsOf(proc.pid);
    const each: number[] = [];
    const t0 = performance.now();
    for (let k = 0; k < c.vms; k++) {
      const s = performance.now();
      await unaryCall(
        client,
        'createVm',
        {
          spec: {
            name: `vm-${k}`,
            guest: c.guest === 'idle' ? 'idle.elf' : 'hello',
            ram: [
              {
                id: 'ram0',
                guestBase: BigInt(RAM_BASE),
                size: BigInt(MiB),
                backend: pb.RamBackend.RAM_BACKEND_PRIVATE,
                region: '',
              },
            ],
            args: {},
          },
          start: true,
        },
        { deadlineMs: 60_000 },
      );
      each.push(performance.now() - s);
    }
    const totalS = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 1000)); // the guests reach their idle loop
    const cpu0 = cpuSeconds(proc.pid);
    await new Promise((r) => setTimeout(r, 1000));
    const idleCpu = (cpuSeconds(proc.pid) - cpu0) * 100;
    const after = readSmapsRollup(proc.pid);
    const info = await unaryCall(client, 'getInfo', {}, { deadlineMs: 10_000 });
    const reported = (info as { vcpuThreads?: number }).vcpuThreads;
    const pssPerVm = (after.pss - before.pss) / c.vms / 1024;
    return [
      c.guest,
      c.vms,
      (c.flags ?? []).join(' ') || 'defaults',
      reported ?? '—',
      `${threadsBefore} → ${threadsOf(proc.pid)}`,
      totalS.toFixed(1),
      median(each).toFixed(1),
      `${(before.rss / MiB).toFixed(0)} → ${(after.rss / MiB).toFixed(0)}`,
      `${(before.pss / MiB).toFixed(0)} → ${(after.pss / MiB).toFixed(0)}`,
      pssPerVm.toFixed(0),
      idleCpu.toFixed(1),
    ];
  } finally {
    client.close();
    await proc.stop(30_000);
  }
}

/** Cases: `HANDOFF_BENCH_VMS` (default 200) VMs of each guest; 1000 idle ones with the pool. */
function cases(): Case[] {
  const n = Number(process.env.HANDOFF_BENCH_VMS ?? 200);
  const out: Case[] = [
    { guest: 'hello', vms: n },
    { guest: 'idle', vms: n },
  ];
  if (process.env.HANDOFF_BENCH_LARGE !== '0') out.push({ guest: 'idle', vms: 1000 });
  return out;
}

/** Every table of the `vcpu` suite: many small VMs, then idle clones of a kvserver template. */
export async function run(): Promise<Table[]> {
  const only = process.env.HANDOFF_BENCH_VCPU; // `clones` or `vms`: one part only
  const tables: Table[] = [];
  if (only !== 'clones') tables.push(await manyVms());
  if (only !== 'vms') tables.push(...(await cloneTables()));
  return tables;
}

async function manyVms(): Promise<Table> {
  const guestDir = mkdtempSync(join(tmpdir(), 'handoff-bench-guests-'));
  writeFileSync(join(guestDir, 'idle.elf'), idleGuestElf());
  const rows: (string | number)[][] = [];
  try {
    for (const c of cases()) rows.push(await measure(c, guestDir));
  } finally {
    rmSync(guestDir, { recursive: true, force: true });
  }
  return {
    title: 'Many idle VMs in one vmm process (1 MiB private RAM each)',
    columns: [
      'guest',
      'VMs',
      'vmm flags',
      'vCPU threads (GetInfo)',
      'OS threads (before → after)',
      'create all (s)',
      'CreateVm median (ms)',
      'RSS MiB (before → after)',
      'PSS MiB (before → after)',
      'PSS per VM (KiB)',
      'idle CPU (% of a core)',
    ],
    rows,
    notes:
      'Each row: a fresh vmm process (--insecure, no memstore), N VMs created with start=true one ' +
      'after the other over gRPC. PSS per VM: the growth of the PSS over the VMs. Idle CPU: the ' +
      "process's user + system time over one second, a second after the last VM started " +
      '(hello VMs are powered off by then, idle ones wait in WFI).',
  };
}
