/**
 * Memory accounting from `/proc/<pid>/smaps_rollup` and `/proc/<pid>/smaps`.
 *
 * Measure sharing with PSS, not RSS: a page mapped by n mappings (in one or several processes)
 * adds its full size to the RSS of each, but only 1/n of it to each one's PSS. Ten clones of one
 * template therefore show ten times the template in RSS and about one template in PSS.
 *
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

import { ShmError, describe } from './errors.js';
import { toShmError, type Classifier } from './native.js';

/** Memory of a process (or of part of its address space), in bytes. Missing fields are 0. */
export interface MemoryUsage {
  /** Resident set size: every resident page counted in full (`Rss`). */
  readonly rss: number;
  /** Proportional set size: each resident page divided by the number of its mappers (`Pss`). */
  readonly pss: number;
  /** PSS of anonymous pages, including copy-on-write copies (`Pss_Anon`, rollup only). */
  readonly pssAnon: number;
  /** PSS of file pages (`Pss_File`, rollup only). */
  readonly pssFile: number;
  /** PSS of shmem/tmpfs pages, e.g. `/dev/shm` files and memfds (`Pss_Shmem`, rollup only). */
  readonly pssShmem: number;
  /** Clean pages also mapped elsewhere (`Shared_Clean`). */
  readonly sharedClean: number;
  /** Dirty pages also mapped elsewhere (`Shared_Dirty`). */
  readonly sharedDirty: number;
  /** Clean pages mapped only here (`Private_Clean`). */
  readonly privateClean: number;
  /**
   * Dirty pages mapped only here (`Private_Dirty`). Includes copy-on-write copies, but also tmpfs
   * pages (always dirty) that no other mapping currently maps; count copies with `anonymous`.
   */
  readonly privateDirty: number;
  /** Pages referenced since the last reset (`Referenced`). */
  readonly referenced: number;
  /** Anonymous pages (`Anonymous`), including a clone's copy-on-write copies of file pages. */
  readonly anonymous: number;
  /** Swapped-out pages (`Swap`). */
  readonly swap: number;
  /** Proportional swap (`SwapPss`). */
  readonly swapPss: number;
}

/** Which process to read: a pid, or `'self'` for the calling process. */
export type ProcessRef = number | 'self';

const FIELDS: Readonly<Record<string, keyof MemoryUsage>> = {
  Rss: 'rss',
  Pss: 'pss',
  Pss_Anon: 'pssAnon',
  Pss_File: 'pssFile',
  Pss_Shmem: 'pssShmem',
  Shared_Clean: 'sharedClean',
  Shared_Dirty: 'sharedDirty',
  Private_Clean: 'privateClean',
  Private_Dirty: 'privateDirty',
  Referenced: 'referenced',
  Anonymous: 'anonymous',
  Swap: 'swap',
  SwapPss: 'swapPss',
};

type MutableUsage = { -readonly [K in keyof MemoryUsage]: number };

function emptyUsage(): MutableUsage {
  return {
    rss: 0,
    pss: 0,
    pssAnon: 0,
    pssFile: 0,
    pssShmem: 0,
    sharedClean: 0,
    sharedDirty: 0,
    privateClean: 0,
    privateDirty: 0,
    referenced: 0,
    anonymous: 0,
    swap: 0,
    swapPss: 0,
  };
}

// "Pss:                 123 kB"
const FIELD_LINE = /^([A-Za-z_]+):\s+(\d+) kB$/;
// "7f2b90448000-7f2b90548000 rw-s 00000000 00:01 1234   /dev/shm/x"
const VMA_LINE = /^([0-9a-f]+)-([0-9a-f]+) /;

function addField(usage: MutableUsage, line: string): void {
  const m = FIELD_LINE.exec(line);
  if (m === null) return;
  const key = FIELDS[m[1] as string];
  if (key !== undefined) usage[key] += Number(m[2]) * 1024;
}

/** @internal Parse the text of `smaps_rollup` (or the field lines of any smaps excerpt). */
export function parseSmapsRollup(text: string): MemoryUsage {
  const usage = emptyUsage();
  for (const line of text.split('\n')) addField(usage, line);
  return usage;
}

/**
 * @internal Sum the fields of every VMA of an `smaps` text that lies inside [start, end).
 * Returns the usage and the number of VMAs summed.
 */
export function parseSmapsRange(
  text: string,
  start: bigint,
  end: bigint,
): { usage: MemoryUsage; vmas: number } {
  const usage = emptyUsage();
  let vmas = 0;
  let inside = false;
  for (const line of text.split('\n')) {
    const vma = VMA_LINE.exec(line);
    if (vma !== null) {
      const from = BigInt(`0x${vma[1] as string}`);
      const to = BigInt(`0x${vma[2] as string}`);
      inside = from < end && to > start;
      if (inside) vmas++;
      continue;
    }
    if (inside) addField(usage, line);
  }
  return { usage, vmas };
}

function procPath(op: string, pid: ProcessRef | undefined, file: string): string {
  if (pid === undefined || pid === 'self') return `/proc/self/${file}`;
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: pid ${describe(pid)} is not a positive whole number; pass a pid or 'self'.`,
    );
  }
  return `/proc/${pid}/${file}`;
}

const classifyProc =
  (pid: ProcessRef | undefined): Classifier =>
  (errno) => {
    switch (errno) {
      case 'ENOENT':
      case 'ESRCH':
        return ['SHM_NOT_FOUND', `process ${pid ?? 'self'} does not exist (has it exited?).`];
      case 'EACCES':
      case 'EPERM':
        return [
          'SHM_PERMISSION_DENIED',
          `reading another user's process needs the same uid or CAP_SYS_PTRACE.`,
        ];
      default:
        return undefined;
    }
  };

const procFallback: ['SHM_SYSCALL_FAILED', string] = [
  'SHM_SYSCALL_FAILED',
  'is /proc mounted (smaps_rollup needs Linux 4.14+)?',
];

/**
 * Read a process's memory totals from `/proc/<pid>/smaps_rollup` (all values in bytes).
 *
 * @param pid - the process; defaults to the calling process
 * @throws ShmError `SHM_NOT_FOUND` when the process does not exist, `SHM_PERMISSION_DENIED` when
 *   it belongs to another user, `SHM_INVALID_ARGUMENT` for a bad pid
 */
export function readSmapsRollup(pid: ProcessRef = 'self'): MemoryUsage {
  const op = 'readSmapsRollup';
  const path = procPath(op, pid, 'smaps_rollup');
  try {
    return parseSmapsRollup(readFileSync(path, 'utf8'));
  } catch (err) {
    throw toShmError(`${op}(${path})`, err, classifyProc(pid), procFallback);
  }
}

/** Like {@link readSmapsRollup}, without blocking the event loop. */
export async function readSmapsRollupAsync(pid: ProcessRef = 'self'): Promise<MemoryUsage> {
  const op = 'readSmapsRollupAsync';
  const path = procPath(op, pid, 'smaps_rollup');
  try {
    return parseSmapsRollup(await readFile(path, 'utf8'));
  } catch (err) {
    throw toShmError(`${op}(${path})`, err, classifyProc(pid), procFallback);
  }
}

/**
 * Memory of the part of a process's address space in [start, start + length), summed over its
 * VMAs from `/proc/<pid>/smaps` (bytes). A VMA that straddles the range is counted whole (the
 * kernel merges adjacent compatible mappings); {@link Mapping.usage} uses this for one mapping.
 * Reading smaps walks every mapping of the process, so it costs more than {@link readSmapsRollup}.
 *
 * @param start - first address (e.g. {@link Mapping.address})
 * @param length - bytes
 * @param pid - the process; defaults to the calling process
 */
export function readSmapsRange(
  start: bigint,
  length: number,
  pid: ProcessRef = 'self',
): MemoryUsage {
  const op = 'readSmapsRange';
  if (typeof start !== 'bigint' || start < 0n) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: start ${describe(start)} is not a non-negative bigint address; pass Mapping.address.`,
    );
  }
  if (typeof length !== 'number' || !Number.isSafeInteger(length) || length < 0) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: length ${describe(length)} is not a whole number of bytes >= 0.`,
    );
  }
  const path = procPath(op, pid, 'smaps');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw toShmError(`${op}(${path})`, err, classifyProc(pid), procFallback);
  }
  return parseSmapsRange(text, start, start + BigInt(length)).usage;
}
