import { readFileSync } from 'node:fs';
import { jobs, snapshots, vms, type VmView } from '@handoff/cli/client';
import { unaryCall } from '@handoff/service';
import { ask } from '../chaos/kv-probe.js';
import type { BenchCluster } from './bench-cluster.js';
import { pssOf } from './qemu-clones.js';
import { MiB } from './qemu-qmp.js';

/**
 * Handoff's side of `npm run bench -- clones`: templates, clone bursts, the memory of idle
 * clones, save/restore and a live update of clones, each through the migrator's jobs on a local
 * cluster, timed from the caller's request and by the vmm's own numbers.
 */

/** How long an idle vmm is left before its PSS is read (clones settle, the heap is collected). */
const SETTLE_MS = 2000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A template made by the migrator's template job. */
export interface TemplateResult {
  /** Request until the job completed (boot to the ready doorbell, then the save). */
  readonly wallMs: number;
  /** The vmm's time for the save, in µs. */
  readonly saveUs: number;
  /** Bytes written (device state: the RAM is sealed in place). */
  readonly bytes: number;
}

/** Makes template `name`: kvserver with `sizeMiB` of RAM, booted on vmm-a to its ready point. */
export async function handoffTemplate(
  b: BenchCluster,
  name: string,
  sizeMiB: number,
): Promise<TemplateResult> {
  const t0 = performance.now();
  const job = await b.complete(
    await jobs(b.c).createTemplate({
      name,
      source: { guest: 'kvserver' },
      memory: BigInt(sizeMiB * MiB),
      vmm: 'vmm-a',
      args: {},
      readyTimeoutMs: 60_000,
    }),
  );
  const r = job.snapshotResult;
  return { wallMs: performance.now() - t0, saveUs: r?.durationUs ?? 0, bytes: r?.bytes ?? 0 };
}

/** One burst of clones on vmm-a. */
export interface BurstResult {
  readonly count: number;
  /** Request until the job completed (every clone running), seen by the caller. */
  readonly wallMs: number;
  /** The vmm's request-to-running time of each clone, in µs. */
  readonly runningAfterUs: readonly number[];
  /** Growth of vmm-a's PSS from before the burst to the clones idling as started, per clone. */
  readonly pssPerCloneBytes: number;
  /** The same once each clone answered one request and idles again; null when not asked. */
  readonly answeredPssPerCloneBytes: number | null;
  /** The PSS of a clone's RAM mapping (GetVm's memory usage) at the end: a sample's mean. */
  readonly ramPssPerCloneBytes: number;
  /** Time for every clone to answer its request on the console (16 at a time), or null. */
  readonly answerAllMs: number | null;
  readonly vms: readonly string[];
}

/**
 * Clones `count` VMs of `template` on vmm-a at once and measures them idle; with `answer`, has
 * each answer one request on its console (as QEMU's clones do: a clone that never ran a request
 * has touched no page of its RAM) and measures them idle again. They stay up.
 */
export async function handoffBurst(
  b: BenchCluster,
  template: string,
  count: number,
  answer: boolean,
): Promise<BurstResult> {
  const pid = b.pid('vmm-a');
  await sleep(SETTLE_MS);
  const before = await steadyPss(pid);
  const t0 = performance.now();
  const job = await b.complete(
    await jobs(b.c).clone({
      template,
      count,
      vmm: 'vmm-a',
      namePrefix: `burst${count}`,
      paused: false,
    }),
  );
  const wallMs = performance.now() - t0;
  const r = job.snapshotResult;
  const names = r?.vms ?? [];
  await sleep(SETTLE_MS);
  const started = await steadyPss(pid);
  let answered: number | null = null;
  let answerAllMs: number | null = null;
  if (answer) {
    const t1 = performance.now();
    await eachClone(b, names, (vm) => ask(b.c, vm, ['GET k1'], 60_000));
    answerAllMs = performance.now() - t1;
    await sleep(SETTLE_MS);
    answered = await steadyPss(pid);
  }
  return {
    count,
    wallMs,
    runningAfterUs: r?.runningAfterUs ?? [],
    pssPerCloneBytes: (started - before) / count,
    answeredPssPerCloneBytes: answered === null ? null : (answered - before) / count,
    ramPssPerCloneBytes: await ramPssPerClone(b, names),
    answerAllMs,
    vms: names,
  };
}

/** The median of five PSS readings 100 ms apart (a Node process's heap comes and goes). */
async function steadyPss(pid: number): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    if (i > 0) await sleep(100);
    xs.push(pssOf(pid));
  }
  return xs.sort((x, y) => x - y)[2]!;
}

/**
 * Runs `fn` on each of `names` (VMs on `on`, as GetVm shows them now, with their memory use
 * when `withMemory`), 16 at a time.
 */
async function eachClone(
  b: BenchCluster,
  names: readonly string[],
  fn: (vm: VmView) => Promise<unknown>,
  withMemory = false,
  on = 'vmm-a',
): Promise<void> {
  const vmm = await vms.instance(b.c, on);
  const queue = [...names];
  const worker = async (): Promise<void> => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      const vm = await vms.on(b.c, vmm, name, withMemory);
      if (vm === null) throw new Error(`clone ${name} is not on ${on}`);
      await fn(vm);
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

/** Clones whose RAM mapping's PSS is read: GetVm with memory reads smaps, slow with a thousand VMs. */
const RAM_PSS_SAMPLE = 20;

/**
 * The mean PSS of the RAM mapping of up to {@link RAM_PSS_SAMPLE} of `names` (on vmm `on`),
 * evenly spread.
 */
async function ramPssPerClone(
  b: BenchCluster,
  names: readonly string[],
  on = 'vmm-a',
): Promise<number> {
  const step = Math.max(1, Math.floor(names.length / RAM_PSS_SAMPLE));
  const sample = names.filter((_, i) => i % step === 0).slice(0, RAM_PSS_SAMPLE);
  let sum = 0;
  await eachClone(
    b,
    sample,
    async (vm) => {
      sum += Number(vm.memory?.pssBytes ?? 0n);
    },
    true,
    on,
  );
  return sample.length === 0 ? 0 : sum / sample.length;
}

/**
 * Destroys VMs on one vmm, 16 at a time, by name with DestroyVm alone (a lookup per VM would
 * read every VM's memory usage, which takes long on a vmm with a thousand VMs); a VM that is not
 * there is skipped.
 */
export async function destroyAll(
  b: BenchCluster,
  names: readonly string[],
  vmm: string,
): Promise<void> {
  const { address } = await vms.instance(b.c, vmm);
  const queue = [...names];
  const worker = async (): Promise<void> => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      await unaryCall(b.c.vmm(address), 'destroyVm', { name }, { deadlineMs: 30_000 }).catch(
        () => undefined,
      );
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

/** MemAvailable of this machine, in bytes. */
export function memAvailable(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m === null ? 0 : Number(m[1]) * 1024;
}

/** A save and the restores of one `ab` guest. */
export interface SaveRestoreResult {
  readonly sizeMiB: number;
  /** Pages the guest had written when it was saved. */
  readonly writtenPages: number;
  readonly bypass: { pauseUs: number; durationUs: number; wallMs: number; bytes: number };
  readonly full: { pauseUs: number; durationUs: number; wallMs: number; bytes: number };
  /** Request to the restored guest running (the vmm's runningAfter), in µs. */
  readonly restoreFullUs: number;
  readonly restoreBypassUs: number;
}

/** Waits until the guest's written pages stop growing (ab's first pass is over). */
async function untilWritten(b: BenchCluster, name: string, sizeMiB: number): Promise<number> {
  const deadline = performance.now() + 120_000;
  let last = -1;
  for (;;) {
    const vm = await vms.find(b.c, name, 'vmm-a');
    const pages = Number(vm.ram[0]?.touchedPages ?? 0n);
    if (pages === last && pages * 4096 >= sizeMiB * MiB * 0.9) return pages;
    if (performance.now() > deadline) {
      throw new Error(`${name} wrote only ${pages} pages of ${sizeMiB} MiB in 120 s`);
    }
    last = pages;
    await sleep(250);
  }
}

async function save(b: BenchCluster, vm: string, snapshot: string, full: boolean) {
  const t0 = performance.now();
  const job = await b.complete(await jobs(b.c).save({ vm, snapshot, full, stop: false }));
  const r = job.snapshotResult;
  return {
    pauseUs: r?.pauseUs ?? 0,
    durationUs: r?.durationUs ?? 0,
    wallMs: performance.now() - t0,
    bytes: r?.bytes ?? 0,
  };
}

async function restore(b: BenchCluster, snapshot: string, name: string): Promise<number> {
  const job = await b.complete(
    await jobs(b.c).restore({ snapshot, name, vmm: 'vmm-b', paused: false }),
  );
  await destroyAll(b, [name], 'vmm-b');
  return job.snapshotResult?.runningAfterUs[0] ?? 0;
}

/**
 * Runs `ab` (writing every free page, pass after pass) on `sizeMiB` of shared RAM on vmm-a until
 * it wrote all of it, saves it in full and then bypass (it runs on after each), destroys it and
 * restores each snapshot on vmm-b. Deletes its VMs and snapshots, also when it fails.
 */
export async function handoffSaveRestore(
  b: BenchCluster,
  sizeMiB: number,
): Promise<SaveRestoreResult> {
  const vm = `ab${sizeMiB}`;
  const snaps = [`${vm}-full`, `${vm}-bypass`];
  try {
    await vms.create(
      b.c,
      {
        name: vm,
        guest: 'ab',
        memory: BigInt(sizeMiB * MiB),
        backend: 'shared',
        region: '',
        args: {},
      },
      { vmm: 'vmm-a', start: true },
    );
    const writtenPages = await untilWritten(b, vm, sizeMiB);
    const full = await save(b, vm, snaps[0]!, true);
    const bypass = await save(b, vm, snaps[1]!, false);
    // Copy-on-write over the sealed region from here on: ab would copy every page it writes.
    await destroyAll(b, [vm], 'vmm-a');
    const restoreFullUs = await restore(b, snaps[0]!, `${vm}-rf`);
    const restoreBypassUs = await restore(b, snaps[1]!, `${vm}-rb`);
    return { sizeMiB, writtenPages, bypass, full, restoreFullUs, restoreBypassUs };
  } finally {
    await destroyAll(b, [vm], 'vmm-a');
    await destroyAll(b, [`${vm}-rf`, `${vm}-rb`], 'vmm-b');
    for (const s of snaps) await snapshots.delete(b.c, s).catch(() => undefined);
  }
}

/** A live update of clones from vmm-a to vmm-b. */
export interface LiveUpdateResult {
  readonly count: number;
  /** Request until the job completed, seen by the caller. */
  readonly wallMs: number;
  /** The migrator's total time of the job. */
  readonly totalMs: number;
  /** Each VM's guest pause (its migration's downtime), in µs. */
  readonly pausesUs: readonly number[];
  /** Each VM's migration total, in ms. */
  readonly migrationMs: readonly number[];
  readonly failed: number;
  /** Mean PSS of a sample of the clones' RAM mappings before the move (on vmm-a) and after it (vmm-b). */
  readonly ramPssBeforeBytes: number;
  readonly ramPssAfterBytes: number;
}

/**
 * Clones `count` VMs of `template` on vmm-a, lets them idle, and moves all of vmm-a's VMs to
 * vmm-b with the migrator's live-update job (bypass, `concurrency` at once). The clones are
 * destroyed afterwards.
 */
export async function handoffLiveUpdate(
  b: BenchCluster,
  template: string,
  count: number,
  concurrency: number,
): Promise<LiveUpdateResult> {
  const cloned = await b.complete(
    await jobs(b.c).clone({ template, count, vmm: 'vmm-a', namePrefix: 'lu', paused: false }),
  );
  const names = cloned.snapshotResult?.vms ?? [];
  try {
    await sleep(SETTLE_MS);
    const ramPssBeforeBytes = await ramPssPerClone(b, names, 'vmm-a');
    const t0 = performance.now();
    const job = await jobs(b.c).watch(
      (
        await jobs(b.c).liveUpdate({
          fromVmm: 'vmm-a',
          toVmm: 'vmm-b',
          concurrency,
          parameters: {},
        })
      ).id,
      () => undefined,
    );
    const wallMs = performance.now() - t0;
    const children = await Promise.all(job.children.map((id) => jobs(b.c).get(id)));
    const done = children.filter((ch) => ch.info.status === 'completed');
    return {
      count: children.length,
      wallMs,
      totalMs: job.info.totalTimeMs ?? 0,
      pausesUs: done.map((ch) => ch.info.downtimeUs ?? 0),
      migrationMs: done.map((ch) => ch.info.totalTimeMs ?? 0),
      failed: children.length - done.length,
      ramPssBeforeBytes,
      ramPssAfterBytes: await ramPssPerClone(b, names, 'vmm-b'),
    };
  } finally {
    await destroyAll(b, names, 'vmm-b');
    await destroyAll(b, names, 'vmm-a');
  }
}
