import { burstChart, pssChart, type ChartFile } from './clones-charts.js';
import type {
  BurstResult,
  LiveUpdateResult,
  SaveRestoreResult,
  TemplateResult,
} from './clones-handoff.js';
import type { QemuBurst } from './qemu-burst.js';
import type { QemuLiveUpdate } from './qemu-live-update.js';
import { MiB } from './qemu-qmp.js';
import type { QemuSaveRestore } from './qemu-save.js';
import { fixed, max, percentile } from './stats.js';

/** The tables of `npm run bench -- clones`, from what its two sides measured. */

/** A bench table as bench/run.js prints it. */
export interface Table {
  title: string;
  columns: string[];
  rows: (string | number)[][];
  notes: string;
  /** SVG charts bench/run.js renders beside the tables (vega-lite specs). */
  charts?: ChartFile[];
}

/** A QEMU burst: measured (with `cut` when fewer clones than asked ran), or skipped. */
export type QemuBurstRow =
  (QemuBurst & { cut?: string }) | { readonly count: number; readonly skipped: string };

/** QEMU's template and bursts, or why they were not measured. */
export interface QemuClonesRun {
  template: { wallMs: number; saveMs: number } | string;
  bursts: QemuBurstRow[];
  /** One migration per clone into a new process, or why it was not measured. */
  liveUpdate: QemuLiveUpdate | string;
}

/** Handoff's side, from one cluster. */
export interface HandoffRun {
  template: TemplateResult;
  bursts: BurstResult[];
  /** The 1000-clone burst, or why it did not run. */
  big: BurstResult | string;
  liveUpdate: LiveUpdateResult;
  saves: SaveRestoreResult[];
}

const ms = (us: number): string => fixed(us / 1000, 1);
const mib = (bytes: number): string => fixed(bytes / MiB, 2);

export function templateTable(ours: TemplateResult, qemu: QemuClonesRun['template']): Table {
  const rows: (string | number)[][] = [
    ['Handoff', fixed(ours.wallMs, 0), ms(ours.saveUs), `${ours.bytes} B (device state)`],
  ];
  if (typeof qemu === 'string') rows.push(['QEMU', `skipped: ${qemu}`, '-', '-']);
  else rows.push(['QEMU', fixed(qemu.wallMs, 0), fixed(qemu.saveMs, 1), 'device state only']);
  return {
    title: `Template creation: kvserver, ${256} MiB`,
    columns: ['system', 'request to template (ms)', 'save (ms)', 'written'],
    rows,
    notes:
      "Handoff: the migrator's template job (CreateVm of kvserver on a shared region, its ready " +
      "doorbell, SaveVm sealing the region in place); save is the vmm's time for SaveVm. QEMU: " +
      'a process booting kvserver on a share=on /dev/shm file to its ready line, then stop and ' +
      'migrate with x-ignore-shared to a file (save: stop to the state written). Both times ' +
      "include the guest's boot, which QEMU's translator runs faster.",
  };
}

function qemuBurstRow(q: QemuBurstRow): (string | number)[] {
  if ('skipped' in q) return ['QEMU', q.count, `skipped: ${q.skipped}`, '-', '-', '-', '-'];
  const label = q.cut !== undefined ? `${q.count} (${q.cut})` : q.count;
  return [
    'QEMU',
    label,
    fixed(q.wallMs, 0),
    fixed(percentile(q.startToRunningMs, 50), 1),
    fixed(percentile(q.startToRunningMs, 99), 1),
    fixed(q.wallMs / q.count, 2),
    '-',
  ];
}

export function burstTable(
  ours: BurstResult[],
  big: HandoffRun['big'],
  qemu: QemuBurstRow[],
): Table {
  const all = typeof big === 'string' ? ours : [...ours, big];
  const rows: (string | number)[][] = all.map((r) => [
    'Handoff',
    r.count,
    ms(max(r.runningAfterUs)),
    ms(percentile(r.runningAfterUs, 50)),
    ms(percentile(r.runningAfterUs, 99)),
    fixed(max(r.runningAfterUs) / 1000 / r.count, 2),
    fixed(r.wallMs, 0),
  ]);
  rows.push(...qemu.filter((q) => all.some((r) => r.count === q.count)).map(qemuBurstRow));
  return {
    title: 'Clone bursts: N clones of the 256 MiB kvserver template at once',
    columns: [
      'system',
      'clones',
      'request to all running (ms)',
      'p50 running after (ms)',
      'p99 running after (ms)',
      'ms per clone',
      'job (ms)',
    ],
    rows,
    notes:
      "Handoff: one clone job on vmm-a; running after is the vmm's running_after_us of each " +
      'clone (from the request to its guest running), all running is the largest, ms per clone ' +
      "is that over N; job is the caller's request to the job seen completed. QEMU: N processes " +
      'spawned at once, each loading the template state (x-ignore-shared, RAM mapped share=off ' +
      'from the template file), `cont`, then answering `GET k1`; running after is spawn to ' +
      'running per clone, all running is the first spawn to the last clone answering.',
    charts: [burstChart(ours, qemu)],
  };
}

export function memoryTable(
  ours: BurstResult[],
  big: HandoffRun['big'],
  qemu: QemuBurstRow[],
): Table {
  const rows: (string | number)[][] = [];
  const handoffRow = (r: BurstResult): (string | number)[] => [
    'Handoff',
    r.count,
    mib(r.pssPerCloneBytes),
    r.answeredPssPerCloneBytes === null ? 'not asked' : mib(r.answeredPssPerCloneBytes),
    mib((r.answeredPssPerCloneBytes ?? r.pssPerCloneBytes) * r.count),
    fixed(r.ramPssPerCloneBytes / 1024, 1),
  ];
  rows.push(...ours.filter((x) => x.count > 1).map(handoffRow));
  rows.push(typeof big === 'string' ? ['Handoff', 1000, big, '-', '-', '-'] : handoffRow(big));
  for (const q of qemu.filter((x) => x.count > 1)) {
    if ('skipped' in q) rows.push(['QEMU', q.count, `skipped: ${q.skipped}`, '-', '-', '-']);
    else {
      const label = q.cut !== undefined ? `${q.count} (${q.cut})` : q.count;
      const pss = q.pssPerCloneBytes;
      rows.push(['QEMU', label, '-', mib(pss), mib(pss * q.count), '-']);
    }
  }
  const answers = ours
    .filter((r) => r.answerAllMs !== null)
    .map((r) => `${fixed(r.answerAllMs! / r.count, 0)} ms per clone at ${r.count}`)
    .join(', ');
  return {
    title: 'Memory of idle clones: PSS per clone',
    columns: [
      'system',
      'clones',
      'PSS per clone, as started (MiB)',
      'PSS per clone, after one request (MiB)',
      'PSS of all clones (MiB)',
      "clone's RAM mapping, PSS at the end (KiB)",
    ],
    rows,
    notes:
      "Handoff: growth of vmm-a's proportional set size (smaps_rollup, median of five readings) " +
      'from before the burst to its clones idling 2 s later, over N: everything a clone costs ' +
      "its vmm (JavaScript heap, the machine, the pages it wrote, its share of the template's " +
      "pages); the vmm's heap comes and goes, so small N are noisy. As started: a kvserver " +
      'clone sleeps in WFI at the template point and has touched no page of its RAM. After ' +
      'one request: each clone then answered `GET k1` on its console (16 at a time) and idled ' +
      `again 2 s, as every QEMU clone did; ${answers} (console and vmm calls included), so the ` +
      '1000 burst is measured as started only, to keep the suite under ten minutes. PSS of ' +
      'all clones: after one request where asked. RAM mapping: the PSS of the guest RAM ' +
      'mapping alone, as GetVm reports it (mean of 20 clones spread over the burst). QEMU: the summed PSS of the N clone processes 2 s ' +
      'after all answered, over N (QEMU has no as-started figure: its clones answer as they ' +
      'start).',
    charts: [pssChart(ours, big, qemu)],
  };
}

export function saveTable(ours: SaveRestoreResult[], qemu: (QemuSaveRestore | string)[]): Table {
  const rows: (string | number)[][] = [];
  for (const [i, r] of ours.entries()) {
    const size = `${r.sizeMiB} MiB`;
    rows.push(
      [
        size,
        'Handoff',
        'bypass',
        ms(r.bypass.pauseUs),
        ms(r.bypass.durationUs),
        mib(r.bypass.bytes),
        ms(r.restoreBypassUs),
      ],
      [
        size,
        'Handoff',
        'full',
        ms(r.full.pauseUs),
        ms(r.full.durationUs),
        mib(r.full.bytes),
        ms(r.restoreFullUs),
      ],
    );
    const q = qemu[i];
    if (q === undefined || typeof q === 'string') {
      rows.push([
        size,
        'QEMU',
        'x-ignore-shared and full',
        `skipped: ${q ?? 'not run'}`,
        '-',
        '-',
        '-',
      ]);
      continue;
    }
    for (const [mode, s] of [
      ['x-ignore-shared', q.ignoreShared],
      ['full', q.full],
    ] as const) {
      rows.push([
        size,
        'QEMU',
        mode,
        fixed(s.pauseMs, 1),
        `${fixed(s.pauseMs + s.syncMs, 1)} (${fixed(s.pauseMs, 1)} without fsync)`,
        mib(s.bytes),
        `${fixed(s.restoreStartToRunningMs, 1)} (${fixed(s.restoreIncomingToRunningMs, 1)} from incoming)`,
      ]);
    }
  }
  const written = ours.map((r) => `${r.sizeMiB} MiB: ${mib(r.writtenPages * 4096)} MiB`).join(', ');
  return {
    title: 'Save and restore of a guest that wrote all of its RAM (ab)',
    columns: [
      'RAM',
      'system',
      'mode',
      'pause (ms)',
      'save total (ms)',
      'written (MiB)',
      'restore to running (ms)',
    ],
    rows,
    notes:
      'Guest: ab, writing the first byte of every free page pass after pass, saved once it ' +
      `wrote them all (pages written at the save: ${written}). Handoff: a shared-RAM VM on ` +
      "vmm-a, the migrator's save job in full (its written pages copied into a snapshot " +
      'region on disk: the guest is paused for the copy, then runs while the region is ' +
      'fsynced and recorded) and then bypass (its region sealed in place; the VM goes on ' +
      "copy-on-write); pause and total are the vmm's, total includes the fsync; the VM is " +
      'then destroyed and each ' +
      "snapshot restored on vmm-b (restore: the vmm's request to running). QEMU: the same ab " +
      'ELF on a share=on /dev/shm file whose pages were made non-zero first (QEMU places its ' +
      'device tree below 3 GiB of address space, so a 2 GiB rv32 guest can write only 1 GiB ' +
      'of it, and zero pages are saved as flags), stopped and migrated to a file on disk ' +
      '(full: every page, max-bandwidth 10 GB/s; x-ignore-shared: device state only, the guest ' +
      'staying stopped since QEMU does not seal the file); pause = stop to the state written, ' +
      'which is the whole save; its total adds an fdatasync of the state file afterwards (QEMU ' +
      'does not sync; in brackets: without it). Restore: a fresh QEMU with -incoming defer, spawn (and ' +
      'migrate-incoming) to running; a full restore into a fresh RAM file, an x-ignore-shared ' +
      'one over the saved RAM file.',
  };
}

export function liveUpdateTable(r: LiveUpdateResult, qemu: QemuLiveUpdate | string): Table {
  const pauses = r.pausesUs.map((us) => us / 1000);
  const rows: (string | number)[][] = [
    [
      'Handoff',
      r.count,
      r.failed,
      fixed(r.wallMs, 0),
      fixed(percentile(pauses, 50), 1),
      fixed(percentile(pauses, 99), 1),
      fixed(max(pauses), 1),
      fixed(percentile(r.migrationMs, 50), 0),
      '0 (bypass)',
      `${fixed(r.ramPssBeforeBytes / 1024, 1)} → ${fixed(r.ramPssAfterBytes / 1024, 1)}`,
    ],
  ];
  if (typeof qemu === 'string') {
    rows.push(['QEMU', '-', '-', `skipped: ${qemu}`, '-', '-', '-', '-', '-', '-']);
  } else {
    rows.push([
      'QEMU',
      qemu.count,
      0,
      fixed(qemu.wallMs, 0),
      fixed(percentile(qemu.downtimesMs, 50), 1),
      fixed(percentile(qemu.downtimesMs, 99), 1),
      fixed(max(qemu.downtimesMs), 1),
      fixed(percentile(qemu.totalsMs, 50), 0),
      mib(percentile(qemu.bytes, 50)),
      '-',
    ]);
  }
  const qemuCount = typeof qemu === 'string' ? null : qemu.count;
  return {
    title:
      `Live update: ${r.count} idle clones of the 256 MiB template move to a new vmm (process)` +
      (qemuCount !== null && qemuCount !== r.count ? ` (QEMU: ${qemuCount})` : ''),
    columns: [
      'system',
      'VMs',
      'failed',
      'total (ms)',
      'pause p50 (ms)',
      'pause p99 (ms)',
      'pause max (ms)',
      'migration p50 (ms)',
      'RAM sent per VM (MiB)',
      'RAM PSS per clone before → after (KiB)',
    ],
    rows,
    notes:
      "Handoff: the migrator's live-update job moving every VM of vmm-a to vmm-b " +
      '(bypass-shared-memory, two VMs at a time); total is the request to the job seen ' +
      `completed (the migrator's own total: ${fixed(r.totalMs, 0)} ms); a VM's pause is its ` +
      "migration's downtime (source vCPU stop to target resume, the guest's real pause). " +
      'QEMU: each clone is its own process, so the same job is one migration per clone into a ' +
      'fresh QEMU started with -incoming (two at a time, loopback TCP, max-bandwidth 10 GB/s); ' +
      "a clone's RAM is mapped share=off, so x-ignore-shared does not skip it and every page " +
      'is sent (zero pages as flags); total is the first migrate to the last target running, ' +
      "pause is QEMU's reported downtime (the source's view). RAM PSS per clone: the mean " +
      "proportional set size of the RAM mapping of up to 20 of the clones (GetVm's memory), on " +
      'vmm-a before and on vmm-b after the move: it stays small when every clone still shares ' +
      "the template's pages." +
      (qemuCount !== null && qemuCount !== r.count
        ? ` QEMU moves ${qemuCount} clones, not ${r.count}: each needs a second process of its ` +
          'own during its move and ≈80 MiB per process, so its time grows linearly in the count.'
        : ''),
  };
}
