import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveCapabilities } from '@handoff/qapi';
import { jobs, vms, type Clients, type JobView } from '@handoff/cli/client';
import { startBenchCluster } from './bench-cluster.js';
import { qemuMigrate } from './qemu-migration.js';
import { qemuAvailable } from './qemu-qmp.js';

const MiB = 1024 * 1024;
/** The RAM of the guest; ab rewrites every free page of it (its default range). */
const SIZE_MIB = 256;
const AB = join(dirname(fileURLToPath(import.meta.url)), '../../../../guests/ab/ab.elf');
/** How long QEMU may try before the bench cancels its migration (QEMU has no max-iterations). */
const QEMU_GIVE_UP_MS = 30_000;

interface Table {
  title: string;
  columns: string[];
  rows: (string | number)[][];
  notes: string;
}

async function waitJob(c: Clients, id: string): Promise<JobView> {
  for (;;) {
    const j = await jobs(c).get(id);
    if (['completed', 'failed', 'cancelled'].includes(j.info.status)) return j;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * `npm run bench -- converge`: a guest that rewrites all of its 256 MiB all the time (ab),
 * copied vmm-a → vmm-b through the migrator (private RAM, no bypass) with auto-converge on (the
 * default) and off; then QEMU migrating the same ELF, with its auto-converge off (its default)
 * and on, in the same run.
 */
export async function run(): Promise<Table[]> {
  const rows: (string | number)[][] = [];
  const b = await startBenchCluster();
  const c = b.c;
  try {
    for (const autoConverge of [true, false]) {
      const name = `converge-${autoConverge ? 'on' : 'off'}`;
      await vms.create(
        c,
        {
          name,
          guest: 'ab',
          memory: BigInt(SIZE_MIB * MiB),
          backend: 'private',
          region: '',
          args: {},
        },
        { vmm: 'vmm-a', start: true },
      );
      await new Promise((r) => setTimeout(r, 1000)); // as QEMU's guest below
      const job = await jobs(c).migrate({
        vm: name,
        targetVmm: 'vmm-b',
        capabilities: resolveCapabilities({
          'bypass-shared-memory': false,
          'auto-converge': autoConverge,
        }),
        parameters: {},
      });
      const i = (await waitJob(c, job.id)).info;
      rows.push([
        'Handoff',
        autoConverge ? 'on (default)' : 'off',
        i.status,
        i.totalTimeMs,
        i.iteration,
        i.cpuThrottlePercentage > 0 ? `${i.cpuThrottlePercentage}` : '-',
        i.status === 'completed' ? (i.downtimeUs / 1000).toFixed(1) : '-',
        (i.ram.transferred / MiB).toFixed(0),
      ]);
      await vms.destroy(c, name).catch(() => undefined);
    }
  } finally {
    await b.stop();
  }
  const missing = qemuAvailable();
  if (missing === null) {
    for (const [autoConverge, maxBandwidth] of [
      [false, undefined],
      [true, undefined],
      [false, 10e9],
      [true, 10e9],
    ] as const) {
      const m = await qemuMigrate(SIZE_MIB, {
        bypass: false,
        fill: false,
        kernel: AB,
        autoConverge,
        giveUpMs: QEMU_GIVE_UP_MS,
        ...(maxBandwidth !== undefined ? { maxBandwidth } : {}),
      });
      rows.push([
        maxBandwidth === undefined ? 'QEMU' : 'QEMU, max-bandwidth 10 GB/s',
        autoConverge ? 'on' : 'off (default)',
        m.status === 'cancelled'
          ? `not converged, cancelled at ${QEMU_GIVE_UP_MS / 1000} s`
          : m.status,
        m.totalMs,
        m.syncs,
        m.maxThrottle > 0 ? `${m.maxThrottle}` : '-',
        m.status === 'completed' ? m.downtimeMs.toFixed(1) : '-',
        (m.bytes / MiB).toFixed(0),
      ]);
    }
  }
  return [
    {
      title: `Copy migration of a guest that rewrites all of its ${SIZE_MIB} MiB: auto-converge`,
      columns: [
        'who',
        'auto-converge',
        'status',
        'total (ms)',
        'passes',
        'final throttle (%)',
        'downtime (ms)',
        'RAM sent (MiB)',
      ],
      rows,
      notes:
        'guests/ab with its default range (every free page: it increments one byte of each ' +
        'page in a loop), 1 s after boot. Handoff: private RAM copied vmm-a → vmm-b on ' +
        'loopback through the migrator (data channel), default parameters (downtime-limit ' +
        "100 ms, max-iterations 30); downtime is the guest's real pause. Passes are " +
        "Handoff's pre-copy passes after the bulk one and QEMU's dirty-sync-count. The final " +
        "throttle is the highest reached (QEMU's: the highest `cpu-throttle-percentage` seen " +
        'by polling query-migrate every 5 ms). QEMU: qemu-system-riscv32 -M virt (TCG), RAM in ' +
        'a /dev/shm file, default parameters (downtime-limit 300 ms, max-bandwidth 128 MiB/s, ' +
        'or 10 GB/s where the row says so), migrate over loopback TCP, cancelled if still ' +
        "running after the time given (a cancelled row's numbers are its last active " +
        "query-migrate); its downtime is QEMU's own (the source's view)" +
        (missing !== null ? `. QEMU skipped: ${missing}.` : '.'),
    },
  ];
}
