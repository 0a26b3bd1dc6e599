import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import {
  qemuArgs,
  qemuClone,
  untilStatus,
  type QemuClone,
  type QemuTemplate,
} from './qemu-clones.js';
import { QEMU, Qmp } from './qemu-qmp.js';

/**
 * QEMU's nearest job to a live update of clones, for `npm run bench -- clones`: each QEMU clone
 * is its own process, so moving them to new processes is one migration per clone, over loopback
 * TCP into a fresh QEMU started with `-incoming` that maps the template file privately too. A
 * clone's RAM is share=off, so x-ignore-shared does not skip it: every page is sent (zero pages
 * as flags). QEMU's default bandwidth cap is lifted (10 GB/s).
 */

/** The migrations of a QEMU live update. */
export interface QemuLiveUpdate {
  readonly count: number;
  /** First migrate until the last target runs. */
  readonly wallMs: number;
  /** QEMU's downtime of each migration (the source's view). */
  readonly downtimesMs: readonly number[];
  /** QEMU's total-time of each migration. */
  readonly totalsMs: readonly number[];
  /** RAM bytes sent by each migration. */
  readonly bytes: readonly number[];
}

let nextPort = 0;

/** A port below the ephemeral range (32768 and up), different for each migration. */
function port(): number {
  if (nextPort === 0) nextPort = 10000 + Math.floor(Math.random() * 20000);
  return nextPort++;
}

async function migrateOne(
  t: QemuTemplate,
  clone: QemuClone,
  k: number,
  procs: ChildProcess[],
  sessions: Qmp[],
): Promise<{ downtimeMs: number; totalMs: number; bytes: number }> {
  const qmpPath = join(t.dir, `lu${k}.qmp`);
  const p = port();
  procs.push(
    spawn(
      QEMU,
      [
        ...qemuArgs(t.sizeMiB, t.mem, false, qmpPath, join(t.dir, `lu${k}.serial`)),
        '-incoming',
        `tcp:127.0.0.1:${p}`,
      ],
      { stdio: 'ignore' },
    ),
  );
  const target = await Qmp.open(qmpPath);
  sessions.push(target);
  const src = clone.qmp;
  await src.cmd('migrate-set-capabilities', {
    capabilities: [{ capability: 'x-ignore-shared', state: false }],
  });
  await src.cmd('migrate-set-parameters', { 'max-bandwidth': 10e9 });
  await src.cmd('migrate', { uri: `tcp:127.0.0.1:${p}` });
  for (;;) {
    const info = await src.cmd('query-migrate');
    const status = String(info.status);
    if (status === 'failed' || status === 'cancelled') {
      throw new Error(`QEMU clone ${k}'s migration ${status}: ${String(info['error-desc'] ?? '')}`);
    }
    if (status === 'completed') {
      await untilStatus(target, 'running', 30_000);
      const ram = (info.ram ?? {}) as Record<string, number>;
      return {
        downtimeMs: Number(info.downtime ?? 0),
        totalMs: Number(info['total-time'] ?? 0),
        bytes: ram.transferred ?? 0,
      };
    }
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * Starts `count` clones of `t`, then migrates them to new QEMU processes, `concurrency` at a
 * time. Every process it started is killed when it resolves or rejects.
 */
export async function qemuLiveUpdate(
  t: QemuTemplate,
  count: number,
  concurrency: number,
): Promise<QemuLiveUpdate> {
  const clones: QemuClone[] = [];
  const procs: ChildProcess[] = [];
  const sessions: Qmp[] = [];
  try {
    for (let k = 0; k < count; k++) clones.push(await qemuClone(t, 100_000 + k));
    await new Promise((r) => setTimeout(r, 2000));
    const results: { downtimeMs: number; totalMs: number; bytes: number }[] = [];
    const queue = clones.map((c, k) => ({ c, k }));
    const t0 = performance.now();
    const worker = async (): Promise<void> => {
      for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
        results.push(await migrateOne(t, next.c, next.k, procs, sessions));
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return {
      count,
      wallMs: performance.now() - t0,
      downtimesMs: results.map((r) => r.downtimeMs),
      totalsMs: results.map((r) => r.totalMs),
      bytes: results.map((r) => r.bytes),
    };
  } finally {
    for (const s of sessions) s.close();
    for (const p of procs) p.kill('SIGKILL');
    for (const c of clones) c.stop();
  }
}
