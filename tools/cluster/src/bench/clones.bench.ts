import { startBenchCluster, type BenchCluster } from './bench-cluster.js';
import {
  destroyAll,
  handoffBurst,
  handoffLiveUpdate,
  handoffSaveRestore,
  handoffTemplate,
  memAvailable,
  type BurstResult,
  type LiveUpdateResult,
  type SaveRestoreResult,
} from './clones-handoff.js';
import { qemuBurst } from './qemu-burst.js';
import { qemuLiveUpdate, type QemuLiveUpdate } from './qemu-live-update.js';
import { dropTemplate, qemuTemplate, type QemuTemplate } from './qemu-clones.js';
import { MiB, qemuAvailable } from './qemu-qmp.js';
import { qemuSaveRestore, type QemuSaveRestore } from './qemu-save.js';
import { fixed } from './stats.js';
import {
  burstTable,
  liveUpdateTable,
  memoryTable,
  saveTable,
  templateTable,
  type HandoffRun,
  type QemuClonesRun,
  type Table,
} from './clones-tables.js';

/**
 * `npm run bench -- clones`: templates, clone bursts, the memory of idle clones, save/restore
 * and a live update of clones on one local cluster, each beside QEMU doing the same job in the
 * same run (qemu-clones.ts, qemu-burst.ts, qemu-save.ts, qemu-live-update.ts). Every process
 * and file it makes is gone when it ends, also when it fails. `HANDOFF_CLONES_QUICK=1` runs small
 * counts and sizes only (for developing the suite; its tables are not for committing);
 * `HANDOFF_CLONES_ONLY=save` runs the save and restore rows alone (Handoff's and QEMU's), and
 * answers that table only; `HANDOFF_CLONES_ONLY=live-update` does the same for the live update.
 */

const QUICK = process.env.HANDOFF_CLONES_QUICK === '1';
const ONLY = process.env.HANDOFF_CLONES_ONLY;
const SAVES_ONLY = ONLY === 'save';
const LIVE_UPDATE_ONLY = ONLY === 'live-update';
const TEMPLATE_MIB = 256;
const BURSTS = QUICK ? [1, 5, 10] : [1, 50, 200];
const BIG = QUICK ? 0 : 1000;
const SAVE_SIZES_MIB = QUICK ? [64] : [64, 512, 2048];
const LIVE_UPDATE_VMS = QUICK ? 5 : 200;
/** QEMU's live update moves fewer clones: one extra process per clone, linear in the count. */
const QEMU_LIVE_UPDATE_VMS = QUICK ? 5 : 30;
const LIVE_UPDATE_CONCURRENCY = 2;
/** A QEMU burst may take at most this share of MemAvailable (estimated from the last one). */
const MEMORY_SHARE = 0.5;
/** A QEMU burst is cut to what this many seconds would start at the last burst's pace. */
const QEMU_BURST_BUDGET_S = 60;
const SETTLE_MS = 2000;

const mib = (bytes: number): string => fixed(bytes / MiB, 2);

const started = performance.now();
/** A progress line: what is measured next, and the seconds since the suite started. */
function step(what: string): void {
  console.log(`clones: ${((performance.now() - started) / 1000).toFixed(0)} s, ${what}`);
}

async function qemuClones(): Promise<QemuClonesRun> {
  const missing = qemuAvailable();
  if (missing !== null) {
    return {
      template: missing,
      bursts: BURSTS.map((count) => ({ count, skipped: missing })),
      liveUpdate: missing,
    };
  }
  const t0 = performance.now();
  step('QEMU template');
  const t = await qemuTemplate(TEMPLATE_MIB);
  const template = { wallMs: performance.now() - t0, saveMs: t.saveMs };
  const bursts: QemuClonesRun['bursts'] = [];
  try {
    let perClone = 0;
    let msPerClone = 0;
    for (const wanted of [...BURSTS, ...(BIG > 0 ? [BIG] : [])]) {
      let count = wanted;
      const why: string[] = [];
      if (perClone > 0 && count * perClone > memAvailable() * MEMORY_SHARE) {
        count = Math.floor((memAvailable() * MEMORY_SHARE) / perClone);
        why.push(`${wanted} × ${mib(perClone)} MiB would take over half of MemAvailable`);
      }
      if (msPerClone > 0 && count * msPerClone > QEMU_BURST_BUDGET_S * 1000) {
        count = Math.floor((QEMU_BURST_BUDGET_S * 1000) / msPerClone);
        why.push(
          `${wanted} at ${fixed(msPerClone, 0)} ms each would take over ${QEMU_BURST_BUDGET_S} s`,
        );
      }
      if (wanted === BIG) {
        // The 1000 row is reported only when QEMU can run all of them.
        if (count < wanted) bursts.push({ count: wanted, skipped: why.join('; ') });
        else {
          step(`QEMU burst of ${count}`);
          bursts.push(await qemuBurst(t, count, SETTLE_MS));
        }
        continue;
      }
      step(`QEMU burst of ${count}`);
      const burst = await qemuBurst(t, count, SETTLE_MS);
      bursts.push(
        count < wanted ? { ...burst, cut: `${count} of ${wanted}: ${why.join('; ')}` } : burst,
      );
      perClone = burst.pssPerCloneBytes;
      msPerClone = burst.wallMs / count;
    }
    const liveUpdate = await qemuLiveUpdateOf(t);
    return { template, bursts, liveUpdate };
  } finally {
    dropTemplate(t);
  }
}

async function qemuLiveUpdateOf(t: QemuTemplate): Promise<QemuLiveUpdate | string> {
  step(`QEMU live update of ${QEMU_LIVE_UPDATE_VMS} clones`);
  return qemuLiveUpdate(t, QEMU_LIVE_UPDATE_VMS, LIVE_UPDATE_CONCURRENCY).catch(
    (err: unknown) => `failed: ${(err as Error).message}`,
  );
}

/** The live-update rows alone: Handoff's on a cluster of its own, then QEMU's. */
async function liveUpdateOnly(): Promise<Table> {
  const b = await startBenchCluster();
  let ours: LiveUpdateResult;
  try {
    step('Handoff template');
    await handoffTemplate(b, 'kv', TEMPLATE_MIB);
    step(`Handoff live update of ${LIVE_UPDATE_VMS} clones`);
    ours = await handoffLiveUpdate(b, 'kv', LIVE_UPDATE_VMS, LIVE_UPDATE_CONCURRENCY);
  } finally {
    await b.stop();
  }
  const missing = qemuAvailable();
  if (missing !== null) return liveUpdateTable(ours, missing);
  step('QEMU template');
  const t = await qemuTemplate(TEMPLATE_MIB);
  try {
    return liveUpdateTable(ours, await qemuLiveUpdateOf(t));
  } finally {
    dropTemplate(t);
  }
}

async function handoffClones(b: BenchCluster): Promise<HandoffRun> {
  step('Handoff template');
  const template = await handoffTemplate(b, 'kv', TEMPLATE_MIB);
  const bursts: BurstResult[] = [];
  for (const n of BURSTS) {
    step(`Handoff burst of ${n}`);
    const burst = await handoffBurst(b, 'kv', n, n > 1);
    bursts.push(burst);
    await destroyAll(b, burst.vms, 'vmm-a');
  }
  let big: BurstResult | string = 'not run in a quick run';
  if (BIG > 0) {
    const perClone = Math.max(...bursts.map((x) => x.pssPerCloneBytes), 1 * MiB);
    const need = BIG * perClone * 1.5 + TEMPLATE_MIB * MiB;
    const avail = memAvailable();
    if (need > avail * MEMORY_SHARE) {
      big = `skipped: ${BIG} clones need ≈${mib(need)} MiB, over half of MemAvailable (${mib(avail)} MiB)`;
      console.log(`clones: ${big}`);
    } else {
      step(`Handoff burst of ${BIG}`);
      const burst = await handoffBurst(b, 'kv', BIG, false);
      await destroyAll(b, burst.vms, 'vmm-a');
      big = burst;
    }
  }
  step(`Handoff live update of ${LIVE_UPDATE_VMS} clones`);
  const liveUpdate = await handoffLiveUpdate(b, 'kv', LIVE_UPDATE_VMS, LIVE_UPDATE_CONCURRENCY);
  const saves: SaveRestoreResult[] = [];
  for (const size of SAVE_SIZES_MIB) {
    step(`Handoff save and restore at ${size} MiB`);
    saves.push(await handoffSaveRestore(b, size));
  }
  return { template, bursts, big, liveUpdate, saves };
}

/** Handoff's save and restore rows, on a cluster of their own. */
async function handoffSaves(): Promise<SaveRestoreResult[]> {
  const b = await startBenchCluster();
  try {
    const saves: SaveRestoreResult[] = [];
    for (const size of SAVE_SIZES_MIB) {
      step(`Handoff save and restore at ${size} MiB`);
      saves.push(await handoffSaveRestore(b, size));
    }
    return saves;
  } finally {
    await b.stop();
  }
}

/** QEMU's save and restore rows. */
async function qemuSaves(): Promise<(QemuSaveRestore | string)[]> {
  const out: (QemuSaveRestore | string)[] = [];
  for (const size of SAVE_SIZES_MIB) {
    const missing = qemuAvailable();
    step(`QEMU save and restore at ${size} MiB`);
    out.push(missing ?? (await qemuSaveRestore(size)));
  }
  return out;
}

/** Runs the suite: QEMU's clones, then Handoff's cluster, then QEMU's saves. */
export async function run(): Promise<Table[]> {
  if (LIVE_UPDATE_ONLY) {
    const table = await liveUpdateOnly();
    step('done');
    return [table];
  }
  if (SAVES_ONLY) {
    const ours = await handoffSaves();
    const theirs = await qemuSaves();
    step('done');
    return [saveTable(ours, theirs)];
  }
  const qemu = await qemuClones();
  const b = await startBenchCluster();
  let ours: HandoffRun;
  try {
    ours = await handoffClones(b);
  } finally {
    await b.stop();
  }
  const theirs = await qemuSaves();
  step('done');
  return [
    templateTable(ours.template, qemu.template),
    burstTable(ours.bursts, ours.big, qemu.bursts),
    memoryTable(ours.bursts, ours.big, qemu.bursts),
    saveTable(ours.saves, theirs),
    liveUpdateTable(ours.liveUpdate, qemu.liveUpdate),
  ];
}
