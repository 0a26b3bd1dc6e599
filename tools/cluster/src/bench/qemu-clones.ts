import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { KVSERVER, MiB, QEMU, Qmp } from './qemu-qmp.js';
import { Serial } from './qemu-serial.js';

/**
 * QEMU's templating on this machine, for the side-by-side rows of `npm run bench -- clones`:
 * the way a QEMU-based toolkit (Kata's VM templating) does it. A template is a kvserver guest
 * run to its ready point with RAM in a /dev/shm file (`share=on`), stopped and saved with
 * `x-ignore-shared` (RAM is not written, only device state); a clone is a new QEMU process that
 * maps the template file privately (`share=off`) and loads the saved state with `-incoming`.
 */

/** A saved QEMU template: its RAM file and its device state. */
export interface QemuTemplate {
  readonly dir: string;
  readonly mem: string;
  readonly state: string;
  readonly sizeMiB: number;
  /** `stop` to the end of the state's save (x-ignore-shared), in ms. */
  readonly saveMs: number;
}

/** One QEMU clone's timings. */
export interface QemuClone {
  /** Process spawn to the guest running, in ms. */
  readonly startToRunningMs: number;
  /** `migrate-incoming` to the guest running, in ms. */
  readonly incomingToRunningMs: number;
  /** Process spawn to the first answered request (`GET k1`), in ms. */
  readonly firstAnswerMs: number;
  /** The process's proportional set size once it answered, in bytes. */
  readonly pssBytes: number;
  /** The QEMU process (to measure its PSS again later). */
  readonly pid: number;
  /** Its QMP session (to migrate it); closed by `stop`. */
  readonly qmp: Qmp;
  readonly stop: () => void;
}

const READY_LINE = 'kvserver: ready';

/**
 * A `-M virt` machine running `kernel` (default kvserver) with `sizeMiB` of RAM in the file
 * `mem` (shared or mapped privately), its console and QMP on unix sockets.
 */
export function qemuArgs(
  sizeMiB: number,
  mem: string,
  share: boolean,
  qmp: string,
  serial: string,
  kernel: string = KVSERVER,
): string[] {
  return [
    ...['-M', 'virt', '-bios', 'none', '-kernel', kernel],
    ...['-cpu', 'rv32,f=off,d=off,c=off,h=off', '-m', `${sizeMiB}M`],
    ...[
      '-object',
      `memory-backend-file,id=m0,size=${sizeMiB}M,mem-path=${mem},share=${share ? 'on' : 'off'}`,
    ],
    ...['-machine', 'memory-backend=m0', '-display', 'none', '-monitor', 'none'],
    ...['-serial', `unix:${serial},server=on,wait=off`],
    ...['-qmp', `unix:${qmp},server=on,wait=off`],
  ];
}

/** Polls `query-status` until QEMU's run state is `wanted`. */
export async function untilStatus(q: Qmp, wanted: string, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const s = String((await q.cmd('query-status')).status);
    if (s === wanted) return;
    if (performance.now() > end) throw new Error(`QEMU stayed "${s}", never "${wanted}"`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Polls `query-migrate` until the migration completed; throws when it failed or timed out. */
export async function untilMigrated(q: Qmp, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const info = await q.cmd('query-migrate');
    const status = String(info.status);
    if (status === 'completed') return;
    if (status === 'failed' || status === 'cancelled') {
      throw new Error(`QEMU's migration ${status}: ${String(info['error-desc'] ?? '')}`);
    }
    if (performance.now() > end) throw new Error(`QEMU's migration did not end in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Boots kvserver on a `sizeMiB` share=on RAM file, waits for its ready line, stops it and saves
 * its device state with x-ignore-shared. The caller removes `dir` (see {@link dropTemplate}).
 */
export async function qemuTemplate(
  sizeMiB: number,
  args: Readonly<Record<string, string>> = {},
): Promise<QemuTemplate> {
  if (Object.keys(args).length > 0) {
    throw new Error('QEMU has no host arguments for the guest; run the template with defaults');
  }
  const dir = mkdtempSync('/dev/shm/handoff-qemu-clones-');
  const mem = join(dir, 'template');
  const state = join(dir, 'state');
  const fd = openSync(mem, 'w+');
  try {
    ftruncateSync(fd, sizeMiB * MiB);
  } finally {
    closeSync(fd);
  }
  const qmpPath = join(dir, 't.qmp');
  const serialPath = join(dir, 't.serial');
  const proc = spawn(QEMU, qemuArgs(sizeMiB, mem, true, qmpPath, serialPath), { stdio: 'ignore' });
  let qmp: Qmp | undefined;
  let serial: Serial | undefined;
  try {
    // QMP first: once it greets, QEMU's main loop runs and a console client is not lost.
    qmp = await Qmp.open(qmpPath);
    serial = await Serial.open(serialPath);
    await serial.until(READY_LINE, 120_000);
    await qmp.cmd('stop');
    const t0 = performance.now();
    await qmp.cmd('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
    await qmp.cmd('migrate', { uri: `exec:cat > ${state}` });
    await untilMigrated(qmp, 60_000);
    const saveMs = performance.now() - t0;
    return { dir, mem, state, sizeMiB, saveMs };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  } finally {
    qmp?.close();
    serial?.close();
    proc.kill('SIGKILL');
  }
}

/** Removes a template's files. */
export function dropTemplate(t: QemuTemplate): void {
  rmSync(t.dir, { recursive: true, force: true });
}

/** Proportional set size of a process (smaps_rollup), in bytes. */
export function pssOf(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m === null ? 0 : Number(m[1]) * 1024;
}

/**
 * Starts one clone of `t`: a QEMU process mapping the template privately (share=off, or the
 * file shared when `share` — a restore in place), loading its state with x-ignore-shared, then
 * answering one request on its console. The caller stops it.
 */
export async function qemuClone(t: QemuTemplate, k: number, share = false): Promise<QemuClone> {
  const qmpPath = join(t.dir, `c${k}.qmp`);
  const serialPath = join(t.dir, `c${k}.serial`);
  const t0 = performance.now();
  const proc: ChildProcess = spawn(
    QEMU,
    [...qemuArgs(t.sizeMiB, t.mem, share, qmpPath, serialPath), '-incoming', 'defer'],
    { stdio: 'ignore' },
  );
  let qmp: Qmp | undefined;
  let serial: Serial | undefined;
  const stop = (): void => {
    qmp?.close();
    serial?.close();
    proc.kill('SIGKILL');
  };
  try {
    qmp = await Qmp.open(qmpPath);
    await qmp.cmd('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
    const t1 = performance.now();
    await qmp.cmd('migrate-incoming', { uri: `exec:cat ${t.state}` });
    // The template was saved stopped, so the clone loads paused (QEMU keeps the run state):
    // it runs on `cont`, as a toolkit's clone does.
    await untilMigrated(qmp, 60_000);
    await qmp.cmd('cont');
    await untilStatus(qmp, 'running', 60_000);
    const t2 = performance.now();
    // The console is attached once the clone runs: a client attached while the state loads is
    // sometimes never served by QEMU (its input is lost), as seen here with 256 MiB.
    serial = await Serial.open(serialPath);
    serial.send('GET k1\n');
    await serial.until('VALUE', 60_000); // generous: a burst of 200 shares two cores
    const t3 = performance.now();
    return {
      startToRunningMs: t2 - t0,
      incomingToRunningMs: t2 - t1,
      firstAnswerMs: t3 - t0,
      pssBytes: pssOf(proc.pid!),
      pid: proc.pid!,
      qmp,
      stop,
    };
  } catch (err) {
    stop();
    throw err;
  }
}
