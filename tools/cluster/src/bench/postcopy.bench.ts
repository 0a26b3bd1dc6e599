import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveCapabilities, type MigrationInfo } from '@handoff/qapi';
import { jobs, vms, type Clients } from '@handoff/cli/client';
import { startBenchCluster, type BenchCluster } from './bench-cluster.js';
import { qemuMigrate, type QemuMigration } from './qemu-migration.js';
import { qemuAvailable } from './qemu-qmp.js';

const MiB = 1024 * 1024;
const AB = join(dirname(fileURLToPath(import.meta.url)), '../../../../guests/ab/ab.elf');
/** RAM sizes of the switchover table. */
const SIZES_MIB = [64, 256, 1024, 2048];
/** The busy guest's RAM (ab rewrites every page of it, from 1 MiB to 8 MiB below the top). */
const BUSY_MIB = 1024;
/** How long QEMU's pre-copy may try before the bench cancels it (it has no max-iterations). */
const QEMU_GIVE_UP_MS = 60_000;
/** When QEMU is told migrate-start-postcopy, after `migrate` (its first pass has begun). */
const QEMU_POSTCOPY_AFTER_MS = 1000;

interface Table {
  title: string;
  columns: string[];
  rows: (string | number)[][];
  notes: string;
}

const ms = (v: number): string => v.toFixed(1);

/** ab's arguments for `mib` MiB: every page from 1 MiB up to 8 MiB below the top, in a loop. */
function abArgs(mib: number): Record<string, string> {
  const pages = ((mib - 9) * MiB) / 4096;
  return { 'ab.start': '0x80100000', 'ab.pages': String(pages), 'ab.every': '1' };
}

/** Creates `name` on vmm-a, migrates it as asked and returns the job's final info. */
async function migrateOnce(
  b: BenchCluster,
  name: string,
  spec: { guest: string; mib: number; shared: boolean; args: Record<string, string> },
  to: string,
  caps: Parameters<typeof resolveCapabilities>[0],
): Promise<MigrationInfo> {
  const c: Clients = b.c;
  await vms.create(
    c,
    {
      name,
      guest: spec.guest,
      memory: BigInt(spec.mib * MiB),
      backend: spec.shared ? 'shared' : 'private',
      region: '',
      args: spec.args,
    },
    { vmm: 'vmm-a', start: true },
  );
  try {
    await new Promise((r) => setTimeout(r, 1000)); // it boots and runs, as QEMU's guest below
    const job = await jobs(c).migrate({
      vm: name,
      targetVmm: to,
      capabilities: resolveCapabilities(caps),
      parameters: {},
    });
    return (await b.complete(job)).info;
  } finally {
    await vms.destroy(c, name).catch(() => undefined);
  }
}

/** Switchover to the target running, and the fill, for idle kvserver guests of every size. */
async function switchoverRows(b: BenchCluster): Promise<(string | number)[][]> {
  const rows: (string | number)[][] = [];
  for (const mib of SIZES_MIB) {
    const i = await migrateOnce(
      b,
      `pc-kv-${mib}`,
      { guest: 'kvserver', mib, shared: true, args: { 'kv.slots_log2': '10', 'kv.work': '2' } },
      'vmm-c',
      { 'postcopy-ram': true },
    );
    const t = i.timeline;
    const p = i.postcopy;
    const fill = p?.fillMs ?? 0;
    rows.push([
      `${mib} MiB`,
      i.status,
      ms(i.downtimeUs / 1000),
      t !== undefined ? ms(t.targetRunningMs - t.stoppedMs) : '-',
      i.totalTimeMs,
      fill,
      fill > 0 ? ((mib * MiB) / (fill / 1000) / 1e9).toFixed(2) : '-',
      p?.requests ?? 0,
    ]);
  }
  return rows;
}

/** The busy guest: Handoff post-copy across hosts, Handoff pre-copy, QEMU both ways. */
async function busyRows(b: BenchCluster): Promise<(string | number)[][]> {
  const rows: (string | number)[][] = [];
  const post = await migrateOnce(
    b,
    'pc-ab-post',
    { guest: 'ab', mib: BUSY_MIB, shared: true, args: abArgs(BUSY_MIB) },
    'vmm-c',
    { 'postcopy-ram': true },
  );
  const p = post.postcopy;
  rows.push([
    'Handoff post-copy, host-1 → host-2 (shared RAM through memstore)',
    post.status,
    post.totalTimeMs,
    ms(post.downtimeUs / 1000),
    p?.fillMs ?? '-',
    p?.requests ?? '-',
    p !== undefined ? `${p.faultP50Us} / ${p.faultP99Us}` : '-',
    (post.ram.transferred / MiB).toFixed(0),
  ]);
  const pre = await migrateOnce(
    b,
    'pc-ab-pre',
    { guest: 'ab', mib: BUSY_MIB, shared: false, args: abArgs(BUSY_MIB) },
    'vmm-b',
    { 'bypass-shared-memory': false },
  );
  rows.push([
    'Handoff pre-copy, vmm-a → vmm-b (private RAM, auto-converge on by default)',
    pre.status,
    pre.totalTimeMs,
    ms(pre.downtimeUs / 1000),
    '-',
    '-',
    '-',
    (pre.ram.transferred / MiB).toFixed(0),
  ]);
  return rows;
}

function qemuRow(what: string, m: QemuMigration): (string | number)[] {
  return [
    what,
    m.status === 'cancelled' ? `not converged, cancelled at ${QEMU_GIVE_UP_MS / 1000} s` : m.status,
    m.totalMs,
    m.status === 'completed' ? ms(m.downtimeMs) : '-',
    '-',
    m.postcopyAtMs > 0 ? m.postcopyRequests : '-',
    '-',
    (m.bytes / MiB).toFixed(0),
  ];
}

/**
 * `npm run bench -- postcopy`: post-copy across two hosts on one machine (`--hosts 2`): how
 * soon the target runs after the source stopped, for 64 MiB to 2 GiB, and a guest that rewrites
 * all of 1 GiB moved by post-copy and by pre-copy, beside QEMU's pre-copy and post-copy of the
 * same ELF in the same run.
 */
export async function run(): Promise<Table[]> {
  const b = await startBenchCluster({ hosts: 2 });
  let switchover: (string | number)[][];
  let busy: (string | number)[][];
  try {
    switchover = await switchoverRows(b);
    busy = await busyRows(b);
  } finally {
    await b.stop();
  }
  const missing = qemuAvailable();
  if (missing === null) {
    const base = { bypass: false, fill: false, kernel: AB, maxBandwidth: 10e9 };
    busy.push(
      qemuRow(
        'QEMU pre-copy (max-bandwidth 10 GB/s)',
        await qemuMigrate(BUSY_MIB, { ...base, giveUpMs: QEMU_GIVE_UP_MS }),
      ),
      qemuRow(
        `QEMU post-copy (migrate-start-postcopy ${QEMU_POSTCOPY_AFTER_MS / 1000} s in)`,
        await qemuMigrate(BUSY_MIB, {
          ...base,
          giveUpMs: QEMU_GIVE_UP_MS,
          postcopyAfterMs: QEMU_POSTCOPY_AFTER_MS,
        }),
      ),
    );
  }
  return [
    {
      title: 'Post-copy across hosts: the target runs at once, whatever the RAM size',
      columns: [
        'RAM',
        'status',
        'guest pause (ms)',
        'stop → target running (ms)',
        'total (ms)',
        'fill (ms)',
        'background fill (GB/s)',
        'pages the guest asked for',
      ],
      rows: switchover,
      notes:
        'A kvserver guest with shared RAM (a region of host-1) migrated vmm-a (host-1) → vmm-c ' +
        '(host-2) with --postcopy through the migrator on `--hosts 2` of one machine: host-2 ' +
        "runs its own memstore, which fills a lazy region from host-1's memstore over the page " +
        'channel (mutual TLS on loopback) while the guest runs on it. The guest pause is the ' +
        "real one (source vCPU stop to target vCPU run); fill is the source's stop until every " +
        "page is on host-2 (then host-1's copy is deleted). Targets: target running <= 10 ms, " +
        'flat from 64 MiB to 2 GiB; background fill >= 1 GB/s.',
    },
    {
      title: `A guest rewriting all of its ${BUSY_MIB} MiB: post-copy against pre-copy`,
      columns: [
        'who',
        'status',
        'total (ms)',
        'guest pause (ms)',
        'fill (ms)',
        'pages asked for',
        'fault p50 / p99 (µs)',
        'RAM moved (MiB)',
      ],
      rows: busy,
      notes:
        'guests/ab (every page from 1 MiB to 8 MiB below the top rewritten in a loop), 1 s after ' +
        "boot. Handoff's fault latency is memstore-2's (FetchPages to the page present). QEMU: " +
        'qemu-system-riscv32 -M virt (TCG), RAM in a /dev/shm file, migrate over loopback TCP ' +
        'with max-bandwidth 10 GB/s; pre-copy is cancelled if still running after ' +
        `${QEMU_GIVE_UP_MS / 1000} s; post-copy turns postcopy-ram on at both ends and sends ` +
        `migrate-start-postcopy ${QEMU_POSTCOPY_AFTER_MS / 1000} s after migrate; its downtime ` +
        "is QEMU's own (the source's view) and 'pages asked for' its postcopy-requests. " +
        'Targets: completes in <= 10 s with a guest pause <= 10 ms' +
        (missing !== null ? `. QEMU skipped: ${missing}.` : '.'),
    },
  ];
}
