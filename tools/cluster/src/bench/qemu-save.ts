import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  fdatasyncSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemuArgs, untilMigrated, untilStatus } from './qemu-clones.js';
import { MiB, QEMU, Qmp } from './qemu-qmp.js';
import { Serial } from './qemu-serial.js';

/**
 * QEMU's save and restore on this machine, for the side-by-side rows of `npm run bench --
 * clones`: the `ab` guest (it writes the first byte of every free page, pass after pass) runs
 * with RAM in a /dev/shm file (share=on), every page of it non-zero beforehand, until it printed
 * its first 'B' (16 passes over its RAM), then is stopped and saved with `migrate` to a file — what `savevm` does without a disk
 * image: a full save writes every RAM page, then the guest goes on; an x-ignore-shared save
 * writes only the device state, and the guest must stay stopped (QEMU does not seal the RAM
 * file: a running guest would write into the saved memory). A restore is a fresh QEMU process
 * started with `-incoming defer` that loads the file and runs.
 */

/** The ab guest's ELF, built for QEMU's virt board as for Handoff. */
export const AB_ELF = join(dirname(fileURLToPath(import.meta.url)), '../../../../guests/ab/ab.elf');

/** QEMU's default cap (128 MiB/s) would make a save a bandwidth test; a save has no such cap. */
const SAVE_BANDWIDTH = 10e9;

/** One QEMU save and the restore of it. */
export interface QemuSave {
  /** `stop` until the state file is complete (the guest's pause, without the `cont`). */
  readonly pauseMs: number;
  /** Bytes of the state file. */
  readonly bytes: number;
  /**
   * `fdatasync` of the state file once QEMU said the save completed: what it takes to have the
   * save on disk, which QEMU's save does not wait for (Handoff's does).
   */
  readonly syncMs: number;
  /** Spawn of the restoring process until its guest runs. */
  readonly restoreStartToRunningMs: number;
  /** `migrate-incoming` until the guest runs. */
  readonly restoreIncomingToRunningMs: number;
}

/** QEMU's full save and its x-ignore-shared save of one guest, with their restores. */
export interface QemuSaveRestore {
  readonly sizeMiB: number;
  readonly full: QemuSave;
  readonly ignoreShared: QemuSave;
}

/** A RAM file of `bytes`: holes, or with `fill` a non-zero byte at the start of every page. */
function ramFile(path: string, bytes: number, fill: boolean): void {
  const fd = openSync(path, 'w+');
  try {
    ftruncateSync(fd, bytes);
    if (fill) {
      const chunk = new Uint8Array(MiB);
      for (let page = 0; page < MiB; page += 4096) chunk[page] = 0xa5;
      for (let at = 0; at < bytes; at += MiB) writeSync(fd, chunk, 0, MiB, at);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Waits until `file` stops growing (the `cat` behind QEMU's exec: URI has written its last
 * bytes; not timed), then resolves with the ms an `fdatasync` of it takes.
 */
async function syncTime(file: string): Promise<number> {
  for (let last = -1; ;) {
    const size = statSync(file).size;
    if (size === last) break;
    last = size;
    await new Promise((r) => setTimeout(r, 20));
  }
  const fd = openSync(file, 'r');
  try {
    const t0 = performance.now();
    fdatasyncSync(fd);
    return performance.now() - t0;
  } finally {
    closeSync(fd);
  }
}

/** Saves the stopped guest behind `q` to `file`; resolves with the ms from `stop` on. */
async function saveTo(q: Qmp, file: string, ignoreShared: boolean): Promise<number> {
  const t0 = performance.now();
  await q.cmd('stop');
  await q.cmd('migrate-set-capabilities', {
    capabilities: [{ capability: 'x-ignore-shared', state: ignoreShared }],
  });
  await q.cmd('migrate-set-parameters', { 'max-bandwidth': SAVE_BANDWIDTH });
  await q.cmd('migrate', { uri: `exec:cat > ${file}` });
  await untilMigrated(q, 120_000);
  return performance.now() - t0;
}

/**
 * Restores `file` into a fresh QEMU process whose RAM is the file `mem` (shared): a fresh empty
 * one for a full save, the saved guest's own for an x-ignore-shared save.
 */
async function restoreFrom(
  dir: string,
  tag: string,
  sizeMiB: number,
  mem: string,
  file: string,
  ignoreShared: boolean,
): Promise<{ startToRunningMs: number; incomingToRunningMs: number }> {
  const qmpPath = join(dir, `${tag}.qmp`);
  const t0 = performance.now();
  const proc = spawn(
    QEMU,
    [
      ...qemuArgs(sizeMiB, mem, true, qmpPath, join(dir, `${tag}.serial`), AB_ELF),
      '-incoming',
      'defer',
    ],
    { stdio: 'ignore' },
  );
  let q: Qmp | undefined;
  try {
    q = await Qmp.open(qmpPath);
    await q.cmd('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: ignoreShared }],
    });
    const t1 = performance.now();
    await q.cmd('migrate-incoming', { uri: `exec:cat ${file}` });
    await untilMigrated(q, 120_000);
    await q.cmd('cont');
    await untilStatus(q, 'running', 60_000);
    const t2 = performance.now();
    return { startToRunningMs: t2 - t0, incomingToRunningMs: t2 - t1 };
  } finally {
    q?.close();
    proc.kill('SIGKILL');
  }
}

/**
 * Boots ab on `sizeMiB` of shared RAM, waits for its first 'B', saves it in full and then with
 * x-ignore-shared (both while stopped), and restores each in a fresh process. State files go to
 * the temporary directory (a disk, where Handoff's full saves go too); every file and process
 * is gone when it resolves or rejects.
 */
export async function qemuSaveRestore(sizeMiB: number): Promise<QemuSaveRestore> {
  if (!existsSync(AB_ELF)) throw new Error(`${AB_ELF} is not built (make -C guests)`);
  const shm = mkdtempSync('/dev/shm/handoff-qemu-save-');
  const disk = mkdtempSync(join(tmpdir(), 'handoff-qemu-save-'));
  const procs: ChildProcess[] = [];
  let q: Qmp | undefined;
  let serial: Serial | undefined;
  try {
    const mem = join(shm, 'ram');
    // Filled first: QEMU's guest can use only the RAM below its device tree (at most up to 3 GiB
    // of address space, so 1 GiB of a 2 GiB guest), and zero pages are saved as flags alone.
    ramFile(mem, sizeMiB * MiB, true);
    const qmpPath = join(shm, 'src.qmp');
    const serialPath = join(shm, 'src.serial');
    procs.push(
      spawn(QEMU, qemuArgs(sizeMiB, mem, true, qmpPath, serialPath, AB_ELF), { stdio: 'ignore' }),
    );
    q = await Qmp.open(qmpPath);
    serial = await Serial.open(serialPath);
    await serial.until('B', 120_000);
    serial.close();
    const fullFile = join(disk, 'full');
    const fullPause = await saveTo(q, fullFile, false);
    const fullSync = await syncTime(fullFile);
    // The guest goes on after a full save (QEMU migrates a stopped guest only once).
    await q.cmd('cont');
    await untilStatus(q, 'running', 60_000);
    const sharedFile = join(disk, 'ignore-shared');
    const sharedPause = await saveTo(q, sharedFile, true);
    const sharedSync = await syncTime(sharedFile);
    q.close();
    q = undefined;
    for (const p of procs.splice(0)) p.kill('SIGKILL');
    const fresh = join(shm, 'ram-restored');
    ramFile(fresh, sizeMiB * MiB, false);
    const fullRestore = await restoreFrom(shm, 'rf', sizeMiB, fresh, fullFile, false);
    rmSync(fresh, { force: true });
    const sharedRestore = await restoreFrom(shm, 'rs', sizeMiB, mem, sharedFile, true);
    return {
      sizeMiB,
      full: {
        pauseMs: fullPause,
        bytes: statSync(fullFile).size,
        syncMs: fullSync,
        restoreStartToRunningMs: fullRestore.startToRunningMs,
        restoreIncomingToRunningMs: fullRestore.incomingToRunningMs,
      },
      ignoreShared: {
        pauseMs: sharedPause,
        bytes: statSync(sharedFile).size,
        syncMs: sharedSync,
        restoreStartToRunningMs: sharedRestore.startToRunningMs,
        restoreIncomingToRunningMs: sharedRestore.incomingToRunningMs,
      },
    };
  } finally {
    q?.close();
    serial?.close();
    for (const p of procs) p.kill('SIGKILL');
    rmSync(shm, { recursive: true, force: true });
    rmSync(disk, { recursive: true, force: true });
  }
}
