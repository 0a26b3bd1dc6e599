import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { KVSERVER, MiB, QEMU, Qmp } from './qemu-qmp.js';

/**
 * QEMU's own migration on this machine, for the side-by-side rows of `npm run bench --
 * migration`: two `qemu-system-riscv32 -M virt` processes running the same kvserver ELF with
 * RAM in a /dev/shm file (share=on), the target started with `-incoming`, driven over QMP.
 * Reports QEMU's numbers as QEMU states them (its `downtime` is the source's view, not the
 * guest's real pause).
 */

/** One QEMU migration's result, from `query-migrate`. */
export interface QemuMigration {
  status: string;
  totalMs: number;
  setupMs: number;
  downtimeMs: number;
  bytes: number;
  /** Dirty syncs (`ram.dirty-sync-count`): the passes QEMU made. */
  syncs: number;
  /** The highest `cpu-throttle-percentage` seen while it ran (0: never throttled). */
  maxThrottle: number;
  /** Pages the target asked for during post-copy (`ram.postcopy-requests`). */
  postcopyRequests: number;
  /** When `migrate-start-postcopy` went out, ms after `migrate` (0: never). */
  postcopyAtMs: number;
}

/**
 * Migrates a kvserver guest of `sizeMiB` from one fresh QEMU to another over loopback TCP.
 *
 * @param opts.bypass x-ignore-shared (RAM is not sent)
 * @param opts.fill fill RAM with non-zero bytes first (through its file)
 * @param opts.maxBandwidth bytes/s, or undefined for QEMU's default (128 MiB/s)
 * @param opts.kernel the guest ELF (default kvserver)
 * @param opts.autoConverge turn QEMU's auto-converge on
 * @param opts.giveUpMs cancel a migration still running after this long (status `cancelled`)
 * @param opts.postcopyAfterMs turn postcopy-ram on (both ends) and send
 *   `migrate-start-postcopy` this long after `migrate`
 */
export async function qemuMigrate(
  sizeMiB: number,
  opts: {
    bypass: boolean;
    fill: boolean;
    maxBandwidth?: number;
    kernel?: string;
    autoConverge?: boolean;
    giveUpMs?: number;
    postcopyAfterMs?: number;
  },
): Promise<QemuMigration> {
  const dir = mkdtempSync('/dev/shm/handoff-qemu-bench-');
  const mem = join(dir, 'ram');
  const procs: ChildProcess[] = [];
  const sessions: Qmp[] = [];
  try {
    const fd = openSync(mem, 'w+');
    try {
      ftruncateSync(fd, sizeMiB * MiB);
      if (opts.fill) {
        const chunk = new Uint8Array(MiB).fill(0x5a);
        for (let at = 0; at < sizeMiB * MiB; at += MiB) {
          chunk[0] = ((at / MiB) % 251) | 1;
          writeSync(fd, chunk, 0, MiB, at);
        }
      }
    } finally {
      closeSync(fd);
    }
    // Below the ephemeral range (32768 and up), where connections take their ports.
    const port = 10000 + Math.floor(Math.random() * 22000);
    // With x-ignore-shared both map the one file; a copy lands in the target's own, fresh
    // memory (as Handoff's copy lands in a fresh memfd).
    const start = (name: string, extra: string[], path: string): string => {
      const qmp = join(dir, `${name}.qmp`);
      const args = [
        ...['-M', 'virt', '-bios', 'none', '-kernel', opts.kernel ?? KVSERVER],
        ...['-cpu', 'rv32,f=off,d=off,c=off,h=off', '-m', `${sizeMiB}M`],
        ...['-object', `memory-backend-file,id=m0,size=${sizeMiB}M,mem-path=${path},share=on`],
        ...['-machine', 'memory-backend=m0', '-nographic', '-monitor', 'none', '-serial', 'null'],
        ...['-qmp', `unix:${qmp},server=on,wait=off`, ...extra],
      ];
      procs.push(spawn(QEMU, args, { stdio: 'ignore' }));
      return qmp;
    };
    const a = await Qmp.open(start('a', [], mem));
    sessions.push(a);
    const b = await Qmp.open(
      start('b', ['-incoming', `tcp:127.0.0.1:${port}`], opts.bypass ? mem : join(dir, 'ram-b')),
    );
    sessions.push(b);
    const on = [
      ...(opts.bypass ? ['x-ignore-shared'] : []),
      ...(opts.autoConverge === true ? ['auto-converge'] : []),
      ...(opts.postcopyAfterMs !== undefined ? ['postcopy-ram'] : []),
    ];
    if (on.length > 0) {
      const caps = { capabilities: on.map((capability) => ({ capability, state: true })) };
      await a.cmd('migrate-set-capabilities', caps);
      await b.cmd('migrate-set-capabilities', caps);
    }
    if (opts.maxBandwidth !== undefined) {
      await a.cmd('migrate-set-parameters', { 'max-bandwidth': opts.maxBandwidth });
    }
    await new Promise((r) => setTimeout(r, 1000)); // the guest boots and idles, as in ours
    await a.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
    const migrateAt = performance.now();
    let postcopyAtMs = 0;
    const giveUpAt = performance.now() + (opts.giveUpMs ?? Infinity);
    let maxThrottle = 0;
    let cancelled = false;
    /** The last answer while it ran: a cancelled migration's answer has no statistics. */
    let running: Record<string, unknown> = {};
    for (;;) {
      const answer = await a.cmd('query-migrate');
      const status = String(answer.status);
      if (status === 'active') running = answer;
      const info = status === 'cancelled' ? running : answer;
      maxThrottle = Math.max(maxThrottle, Number(info['cpu-throttle-percentage'] ?? 0));
      const since = performance.now() - migrateAt;
      if (
        opts.postcopyAfterMs !== undefined &&
        postcopyAtMs === 0 &&
        status === 'active' &&
        since >= opts.postcopyAfterMs
      ) {
        postcopyAtMs = since;
        await a.cmd('migrate-start-postcopy');
      }
      if (!cancelled && performance.now() > giveUpAt) {
        cancelled = true;
        await a.cmd('migrate_cancel');
      }
      if (status === 'completed' || status === 'failed' || status === 'cancelled') {
        const ram = (info.ram ?? {}) as Record<string, number>;
        return {
          status,
          totalMs: Number(info['total-time'] ?? 0),
          setupMs: Number(info['setup-time'] ?? 0),
          downtimeMs: Number(info.downtime ?? 0),
          bytes: ram.transferred ?? 0,
          syncs: ram['dirty-sync-count'] ?? 0,
          maxThrottle,
          postcopyRequests: ram['postcopy-requests'] ?? 0,
          postcopyAtMs,
        };
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  } finally {
    for (const s of sessions) s.close();
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}
