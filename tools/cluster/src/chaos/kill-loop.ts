import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveCapabilities } from '@handoff/qapi';
import {
  Clients,
  jobEnded,
  jobs,
  operatorTls,
  regions,
  vms,
  type JobView,
  type VmView,
} from '@handoff/cli/client';
import { startCluster, type Cluster } from '../launcher.js';
import type { RestartPolicy } from '../restart-policy.js';
import { describeEvent } from '../supervision-lines.js';
import { putKeys, wrongKeys } from './kv-probe.js';

/**
 * The kill -9 loop: a local cluster (memstore, migrator, vmm-a, vmm-b, supervised so a killed
 * service comes back), one kvserver VM on a shared region with keys in its memory, migrated back
 * and forth; each round kills one process at a random moment of a migration and then checks
 * what must hold after any fault:
 *
 * - the VM runs exactly once — or is gone because the vmm running it was the one killed;
 * - its memory is consistent: every key it stored answers the same;
 * - no region is lost or leaked: exactly the VM's region exists, leased by the VM's vmm (or,
 *   after the VM was lost, kept and no longer leased by the dead process);
 * - no name is blocked: a lost VM's name can be created again at once, the next migration to
 *   the other instance is accepted;
 * - the job's status matches where the VM is.
 *
 * A few rounds run in `npm test`; `npm run bench -- kill-loop` runs many and tabulates them.
 */

/** Which process a round kills: the migration's source vmm, its target, the migrator or memstore. */
export type Victim = 'source' | 'target' | 'migrator' | 'memstore';

/** The victims in the order rounds cycle through them. */
export const VICTIMS: readonly Victim[] = ['source', 'target', 'migrator', 'memstore'];

/** What one round did and found. */
export interface RoundReport {
  readonly round: number;
  readonly victim: Victim;
  /** bypass: the region is handed over by reference; copy: its pages are streamed. */
  readonly mode: 'bypass' | 'copy';
  /** When the kill came, in ms after the migration was accepted. */
  readonly killAfterMs: number;
  /** The job's final status (and error), as the migrator reported it. */
  readonly job: string;
  /** Where the VM ended: moved to the target, stayed on the source, or lost with its vmm. */
  readonly vm: 'moved' | 'stayed' | 'lost';
  /** From the kill until every check held, in ms. */
  readonly recoveryMs: number;
  /** Checks that did not hold (empty: the round passed). */
  readonly violations: readonly string[];
}

/** What {@link runKillLoop} runs. */
export interface KillLoopOptions {
  readonly rounds: number;
  /** Seeds the victim order's shuffle, the modes and the kill moments (same seed, same plan). */
  readonly seed?: number;
  /** The VM's RAM (default 64 MiB). */
  readonly memory?: bigint;
  /** Latest kill moment after a migration was accepted, per mode (ms). */
  readonly maxKillDelayMs?: { bypass: number; copy: number };
  /** How long checks may take to start holding after a kill (default 30 s). */
  readonly settleTimeoutMs?: number;
  /** Progress lines (one per round). */
  readonly log?: (line: string) => void;
}

const MiB = 1024n * 1024n;

/**
 * The loop's kills are deliberate, not a crash loop: its cluster restarts every killed service
 * after 0.2 s and never gives up (the launcher's default backs off and stops restarting a service
 * that dies 6 times a minute; its own tests cover that).
 */
const LOOP_RESTARTS: RestartPolicy = {
  initialDelayMs: 200,
  maxDelayMs: 200,
  stableAfterMs: 0,
  maxCrashes: Number.MAX_SAFE_INTEGER,
  windowMs: 60_000,
};
const VM = 'kv';

/** A small seeded PRNG (mulberry32): the loop's plan is reproducible from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns no complaint or `timeoutMs` passes; resolves with the last complaints. */
async function settle(check: () => Promise<string[]>, timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let complaints: string[];
    try {
      complaints = await check();
    } catch (err) {
      complaints = [(err as Error).message];
    }
    if (complaints.length === 0 || Date.now() > deadline) return complaints;
    await sleep(100);
  }
}

/** Runs the loop on a fresh cluster of its own (temporary directories, free ports). */
export async function runKillLoop(opts: KillLoopOptions): Promise<RoundReport[]> {
  const random = prng(opts.seed ?? 1);
  const memory = opts.memory ?? 64n * MiB;
  const maxDelay = opts.maxKillDelayMs ?? { bypass: 60, copy: 400 };
  const settleMs = opts.settleTimeoutMs ?? 30_000;
  const log = opts.log ?? (() => undefined);
  const stateDir = mkdtempSync(join(tmpdir(), 'handoff-kill-loop-'));
  const volatileDir = mkdtempSync(join('/dev/shm', 'handoff-kill-loop-'));
  const recent: string[] = [];
  const cluster = await startCluster({
    stateDir,
    volatileDir,
    ports: { memstore: 0, migrator: 0, vmms: { 'vmm-a': 0, 'vmm-b': 0 } },
    logFormat: 'json',
    logLevel: 'warn',
    onLine: (service, line) => {
      recent.push(`${service}: ${line}`);
      if (recent.length > 200) recent.shift();
    },
    onEvent: (event) => recent.push(`launcher: ${describeEvent(event)}`),
    restart: LOOP_RESTARTS,
  });
  const c = new Clients({
    memstore: cluster.memstore,
    migrator: cluster.migrator,
    timeoutMs: 5000,
    tls: cluster.tlsDir === null ? null : operatorTls({ HANDOFF_TLS_DIR: cluster.tlsDir }),
  });
  const reports: RoundReport[] = [];
  try {
    await waitForVmms(c, settleMs);
    let keys = await createVm(c, 'vmm-a', memory, 0);
    for (let round = 0; round < opts.rounds; round++) {
      const victim = VICTIMS[round % VICTIMS.length]!;
      const mode = random() < 0.5 ? 'bypass' : 'copy';
      const killAfterMs = Math.round(random() * maxDelay[mode]);
      const report = await runRound(c, cluster, {
        round,
        victim,
        mode,
        killAfterMs,
        keys,
        settleMs,
      });
      reports.push(report);
      log(
        `round ${round}: kill ${victim} ${killAfterMs} ms into a ${mode} migration → job ${report.job}; ` +
          `VM ${report.vm}; ${report.violations.length === 0 ? 'all checks held' : `VIOLATED: ${report.violations.join('; ')}`} ` +
          `(${report.recoveryMs} ms)`,
      );
      if (report.vm === 'lost') {
        // The way back for a user: the kept region is deleted, the name created again at once.
        for (const region of await regions.list(c)) await regions.delete(c, region.name);
        keys = await createVm(c, round % 2 === 0 ? 'vmm-b' : 'vmm-a', memory, round + 1);
      }
    }
    const final = await vms.find(c, VM);
    await vms.destroy(c, VM);
    const left = await settle(async () => {
      const names = (await regions.list(c)).map((r) => r.name);
      return names.length === 0
        ? []
        : [`regions left after the VM was destroyed on ${final.vmm}: ${names.join(', ')}`];
    }, settleMs);
    // No round's report holds this one: the loop fails with it.
    if (left.length > 0) throw new Error(left.join('; '));
    return reports;
  } catch (err) {
    throw new Error(
      `kill loop stopped: ${(err as Error).message}\nlast service lines:\n${recent.slice(-30).join('\n')}`,
      {
        cause: err,
      },
    );
  } finally {
    c.close();
    await cluster.stop(5000);
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(volatileDir, { recursive: true, force: true });
  }
}

/** Creates the kvserver VM on a region of its own and stores a fresh set of keys in it. */
async function createVm(
  c: Clients,
  on: string,
  memory: bigint,
  generation: number,
): Promise<Map<string, string>> {
  await vms.create(
    c,
    {
      name: VM,
      guest: 'kvserver',
      memory,
      backend: 'shared',
      region: '',
      args: { 'kv.slots_log2': '10', 'kv.work': '1' },
    },
    { vmm: on, start: true },
  );
  const vm = await waitFor(c, (v) => v.ready, 30_000);
  const keys = new Map<string, string>();
  for (let i = 0; i < 16; i++)
    keys.set(`k${i}`, `g${generation}v${i}x${Math.floor(Math.random() * 1e9)}`);
  await putKeys(c, vm, keys);
  return keys;
}

/** Waits until the VM is listed (once) and `ok` holds for it. */
async function waitFor(c: Clients, ok: (v: VmView) => boolean, timeoutMs: number): Promise<VmView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const vm = await vms.find(c, VM).catch(() => null);
    if (vm !== null && ok(vm)) return vm;
    if (Date.now() > deadline)
      throw new Error(`VM ${VM} not ready in ${timeoutMs} ms (${vm?.state ?? 'absent'})`);
    await sleep(100);
  }
}

/** Waits until both vmm instances are registered and alive again. */
async function waitForVmms(c: Clients, timeoutMs: number): Promise<void> {
  const complaints = await settle(async () => {
    const alive = (await vms.instances(c)).filter((v) => v.alive).length;
    return alive === 2 ? [] : [`${alive} of 2 vmm instances alive`];
  }, timeoutMs);
  if (complaints.length > 0) {
    throw new Error(
      `the vmm instances did not register again in ${timeoutMs} ms: ${complaints[0]}`,
    );
  }
}

/** Every copy of the VM the instances list, as `vmm:state`. */
async function copies(c: Clients): Promise<VmView[]> {
  const { vms: all, unreachable } = await vms.list(c);
  if (unreachable.length > 0)
    throw new Error(`unreachable: ${unreachable.map((u) => u.vmm).join(', ')}`);
  return all.filter((v) => v.name === VM);
}

async function runRound(
  c: Clients,
  cluster: Cluster,
  r: {
    round: number;
    victim: Victim;
    mode: 'bypass' | 'copy';
    killAfterMs: number;
    keys: Map<string, string>;
    settleMs: number;
  },
): Promise<RoundReport> {
  const before = await vms.find(c, VM);
  const source = before.vmm;
  const target = source === 'vmm-a' ? 'vmm-b' : 'vmm-a';
  const victimName = r.victim === 'source' ? source : r.victim === 'target' ? target : r.victim;
  const victim = cluster.services.find((s) => s.name === victimName);
  if (victim === undefined) throw new Error(`${victimName} is not running before round ${r.round}`);
  const job = await jobs(c).migrate({
    vm: VM,
    targetVmm: target,
    capabilities: resolveCapabilities({ 'bypass-shared-memory': r.mode === 'bypass' }),
    parameters: {},
  });
  await sleep(r.killAfterMs);
  const killedAt = Date.now();
  victim.child.kill('SIGKILL');
  // The supervisor restarts it on the same port; wait for the new process.
  await settle(async () => {
    const now = cluster.services.find((s) => s.name === victimName);
    return now !== undefined && now.child.pid !== victim.child.pid
      ? []
      : [`${victimName} not restarted`];
  }, r.settleMs);
  await waitForVmms(c, r.settleMs);

  const violations: string[] = [];
  let ended: JobView | null = null;
  const jobComplaints = await settle(async () => {
    ended = await jobs(c).get(job.id);
    return jobEnded(ended) ? [] : [`job ${job.id} still ${ended.info.status}`];
  }, r.settleMs);
  violations.push(...jobComplaints);
  const status = (ended as JobView | null)?.info.status ?? 'unknown';
  const error = (ended as JobView | null)?.info.errorDesc;

  let where: 'moved' | 'stayed' | 'lost' = 'lost';
  const checks = await settle(async () => {
    const out: string[] = [];
    const found = await copies(c);
    if (found.length > 1)
      return [
        `VM runs ${found.length} times: ${found.map((v) => `${v.vmm}:${v.state}`).join(', ')}`,
      ];
    const vm = found[0];
    where = vm === undefined ? 'lost' : vm.vmm === target ? 'moved' : 'stayed';
    if (vm === undefined) {
      // Only the death of the vmm that ran it may take the VM: the source before the hand-off
      // (the job must not say completed), the target after it (the job must say completed).
      const wantVictim = status === 'completed' ? target : source;
      if (victimName !== wantVictim) {
        out.push(
          `VM gone after ${victimName} was killed; the job says ${status}, so ${wantVictim} held it`,
        );
      }
    } else if (vm.state !== 'running') {
      out.push(`VM ${vm.state} on ${vm.vmm}${vm.error ? ` (${vm.error})` : ''}`);
    } else {
      const wrong = await wrongKeys(c, vm, r.keys);
      if (wrong.length > 0) out.push(`keys answered wrong after the fault: ${wrong.join(', ')}`);
    }
    if (where === 'moved' && status !== 'completed')
      out.push(`VM moved but the job says ${status}`);
    if (where === 'stayed' && status === 'completed') {
      out.push('job says completed but the VM stayed on the source');
    }
    // Exactly the regions the VM maps now exist, leased by its vmm; a lost VM's regions are
    // kept (its memory, for a restore) and no longer leased. A copy migration moves the VM to
    // private memory: its source deletes the region the VM owned.
    const shared = (v: VmView) => v.ram.filter((b) => b.backend === 'shared').map((b) => b.region);
    const want =
      vm !== undefined
        ? shared(vm)
        : status === 'completed' && r.mode === 'copy'
          ? []
          : shared(before);
    const rs = await regions.list(c);
    const names = rs.map((x) => x.name).sort();
    if (names.join(',') !== [...want].sort().join(',')) {
      out.push(`regions: [${names.join(', ')}], want [${want.join(', ')}]`);
    }
    for (const region of rs.filter((x) => want.includes(x.name))) {
      const holder = region.lease?.holder ?? null;
      if (vm !== undefined && holder !== `${vm.vmm}/${VM}`) {
        out.push(`region ${region.name} leased by ${holder ?? 'nobody'}, VM runs on ${vm.vmm}`);
      }
      if (vm === undefined && holder !== null) {
        out.push(`lost VM's region ${region.name} still leased by ${holder}`);
      }
    }
    return out;
  }, r.settleMs);
  violations.push(...checks);
  if (where === 'lost') {
    // "Gone" must be final: a VM that shows up later was not lost, and its job's word was wrong.
    await sleep(2000);
    const late = await copies(c).catch(() => []);
    if (late.length > 0) {
      violations.push(
        `VM reported lost shows up later: ${late.map((v) => `${v.vmm}:${v.state}`).join(', ')}`,
      );
      where = late[0]!.vmm === target ? 'moved' : 'stayed';
    }
  }
  const recoveryMs = Date.now() - killedAt;
  if (where !== 'lost' && violations.length === 0)
    violations.push(...(await cleanMove(c, r.keys, r.settleMs)));
  return {
    round: r.round,
    victim: r.victim,
    mode: r.mode,
    killAfterMs: r.killAfterMs,
    job: error !== undefined && error !== '' ? `${status}: ${error}` : status,
    vm: where,
    recoveryMs,
    violations,
  };
}

/**
 * After a fault, a migration without one must go through (no name or slot left blocked on the
 * other instance) and the guest must still answer its keys there.
 */
async function cleanMove(
  c: Clients,
  keys: Map<string, string>,
  timeoutMs: number,
): Promise<string[]> {
  const vm = await vms.find(c, VM);
  const to = vm.vmm === 'vmm-a' ? 'vmm-b' : 'vmm-a';
  const job = await jobs(c).migrate({
    vm: VM,
    targetVmm: to,
    capabilities: resolveCapabilities({ 'bypass-shared-memory': true }),
    parameters: {},
  });
  let last: JobView = job;
  const complaints = await settle(async () => {
    last = await jobs(c).get(job.id);
    return jobEnded(last) ? [] : ['running'];
  }, timeoutMs);
  if (complaints.length > 0 || last.info.status !== 'completed') {
    return [
      `the next migration to ${to} did not complete: ${last.info.status} ${last.info.errorDesc ?? ''}`,
    ];
  }
  const moved = await waitFor(c, (v) => v.vmm === to && v.state === 'running', timeoutMs);
  const wrong = await wrongKeys(c, moved, keys);
  return wrong.length > 0
    ? [`keys answered wrong after the clean migration: ${wrong.join(', ')}`]
    : [];
}
