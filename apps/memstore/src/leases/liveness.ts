import type { ProcessTable } from './processes.js';

/**
 * Whether the process behind a lease holder still runs. memstore knows a holder's process from
 * its vmm's session (the lease channel's hello): its pid as the kernel reported it, its start
 * time and the boot it ran in. Pure functions of that record and the process table.
 */

/**
 * - `alive`: the process exists, started when it did, and is not a zombie;
 * - `gone`: it does not (exited, zombie, pid reused, host rebooted);
 * - `unknown`: memstore cannot tell (no session, another pid namespace, /proc unreadable).
 */
export type Liveness = 'alive' | 'gone' | 'unknown';

/** The identity of a holder process as its session recorded it. */
export interface ProcessIdentity {
  /** 0: in a pid namespace memstore cannot see. */
  readonly pid: number;
  readonly startTime: number;
  readonly bootId: string;
}

/** A judgement and why, for logs. */
export interface ProcessJudgement {
  readonly liveness: Liveness;
  readonly reason: string;
}

/**
 * Judges a recorded process against the process table. Never throws: a table that cannot be
 * read gives `unknown` (the caller then judges by the connection).
 */
export function judgeProcess(p: ProcessIdentity, table: ProcessTable): ProcessJudgement {
  if (p.pid === 0) return { liveness: 'unknown', reason: 'in another pid namespace' };
  try {
    if (table.bootId() !== p.bootId) {
      return { liveness: 'gone', reason: 'the host rebooted since its session opened' };
    }
    const stat = table.stat(p.pid);
    if (stat === undefined) return { liveness: 'gone', reason: `process ${p.pid} exited` };
    if (stat.state === 'Z' || stat.state === 'X' || stat.state === 'x') {
      return { liveness: 'gone', reason: `process ${p.pid} exited (a zombie)` };
    }
    if (stat.startTime !== p.startTime) {
      return { liveness: 'gone', reason: `process ${p.pid} exited (its pid now names another)` };
    }
    return { liveness: 'alive', reason: `process ${p.pid} runs` };
  } catch (err) {
    return {
      liveness: 'unknown',
      reason: `cannot read process ${p.pid}: ${(err as Error).message}`,
    };
  }
}

/** The vmm id a holder `<vmm-id>/<vm-name>` names, or undefined when it names none. */
export function vmmIdOfHolder(holder: string): string | undefined {
  const slash = holder.indexOf('/');
  return slash > 0 ? holder.slice(0, slash) : undefined;
}

/** A lease holder's process as memstore reports it (GetRegion, ListRegions). */
export interface HolderStatus {
  readonly liveness: Liveness;
  /** The vmm id the holder names; undefined when it names none. */
  readonly vmmId: string | undefined;
  /** Its process id as memstore sees it; 0 when unknown or in another pid namespace. */
  readonly pid: number;
  /** alive: since its session opened; gone: since found gone; unknown: since its connection dropped. */
  readonly since: Date | undefined;
  /** True while the process has a lease-channel connection open. */
  readonly connected: boolean;
}

/** Tells how a lease holder's process is doing (the sessions; a stand-in without them). */
export interface HolderJudge {
  /** The status of `holder`, whose lease was granted at `grantedAt`. */
  statusOf(holder: string, grantedAt: Date): HolderStatus;
}

/** The status of a holder memstore knows nothing about. */
export function unknownHolder(holder: string): HolderStatus {
  return {
    liveness: 'unknown',
    vmmId: vmmIdOfHolder(holder),
    pid: 0,
    since: undefined,
    connected: false,
  };
}

/** A judge for when there are no sessions: every holder is unknown. */
export const NO_SESSIONS: HolderJudge = { statusOf: unknownHolder };
