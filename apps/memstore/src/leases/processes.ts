import { readFileSync } from 'node:fs';

/**
 * The host's process table as memstore reads it to judge lease holders: `/proc/<pid>/stat`
 * (state and start time) and the boot id. Reads are a few microseconds each; tests pass fakes.
 */

/** What `/proc/<pid>/stat` says about one process. */
export interface ProcessStat {
  /** Field 3: R, S, D, Z (zombie), X (dead), … */
  readonly state: string;
  /** Field 22: when it started, in clock ticks after boot (a pid reused later differs). */
  readonly startTime: number;
}

/** Reads of the process table. */
export interface ProcessTable {
  /**
   * The state and start time of process `pid`, or undefined when there is no such process.
   *
   * @throws Error when the table cannot be read (e.g. /proc mounted with hidepid): cannot tell
   */
  stat(pid: number): ProcessStat | undefined;
  /** The host's boot id (`/proc/sys/kernel/random/boot_id`): a new one after every boot. */
  bootId(): string;
}

/**
 * Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
 * itself hold spaces and parentheses, so the fields after it are counted from its last `)`.
 *
 * @throws Error when the text is not such a line
 */
export function parseProcStat(text: string): ProcessStat {
  const close = text.lastIndexOf(')');
  const rest = close < 0 ? [] : text.slice(close + 2).split(' ');
  // rest[0] is field 3 (state), so field 22 (starttime) is rest[19].
  const state = rest[0];
  const startTime = Number(rest[19]);
  if (state === undefined || state === '' || !Number.isSafeInteger(startTime) || startTime < 0) {
    throw new Error(`not a /proc/<pid>/stat line: ${JSON.stringify(text.slice(0, 120))}`);
  }
  return { state, startTime };
}

/** The real process table of this host (Linux /proc). */
export const procTable: ProcessTable = {
  stat(pid) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/stat`, 'latin1');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ESRCH') return undefined;
      throw err;
    }
    return parseProcStat(text);
  },
  bootId() {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
  },
};
