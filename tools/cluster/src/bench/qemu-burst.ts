import { pssOf, qemuClone, type QemuClone, type QemuTemplate } from './qemu-clones.js';

/** A burst of QEMU clones started at once from one template. */
export interface QemuBurst {
  readonly count: number;
  /** First spawn until every clone's guest runs. */
  readonly wallMs: number;
  /** Each clone's spawn-to-running time. */
  readonly startToRunningMs: readonly number[];
  /** The clones' summed PSS once all of them idle, per clone. */
  readonly pssPerCloneBytes: number;
}

/** Socket names differ between bursts (a stale socket of an earlier clone is never reused). */
let nextClone = 0;

/**
 * Starts `count` clones of `t` at once (each a QEMU process that loads the template's state
 * and answers one request), waits `settleMs`, reads their PSS, and stops them all — also when
 * one of them fails to start.
 */
export async function qemuBurst(
  t: QemuTemplate,
  count: number,
  settleMs: number,
): Promise<QemuBurst> {
  const first = nextClone;
  nextClone += count;
  const t0 = performance.now();
  const started = await Promise.allSettled(
    Array.from({ length: count }, (_, i) => qemuClone(t, first + i)),
  );
  const wallMs = performance.now() - t0;
  const clones = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  try {
    const failed = started.find((s) => s.status === 'rejected');
    if (failed !== undefined) {
      throw new Error(
        `${count - clones.length} of ${count} QEMU clones did not start: ${String(failed.reason)}`,
      );
    }
    await new Promise((r) => setTimeout(r, settleMs));
    const pss = clones.reduce((sum, c: QemuClone) => sum + pssOf(c.pid), 0);
    return {
      count,
      wallMs,
      startToRunningMs: clones.map((c) => c.startToRunningMs),
      pssPerCloneBytes: pss / count,
    };
  } finally {
    for (const c of clones) c.stop();
  }
}
