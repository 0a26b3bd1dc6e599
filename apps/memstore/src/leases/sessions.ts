import { ServiceError, type Logger } from '@handoff/service';
import { randomBytes } from 'node:crypto';
import type { Catalog } from '../catalog/catalog.js';
import type { HolderProcessRow } from '../catalog/rows.js';
import { MemstoreError } from '../errors.js';
import type { FencedRegionLease } from './lease-manager.js';
import {
  judgeProcess,
  unknownHolder,
  vmmIdOfHolder,
  type HolderJudge,
  type HolderStatus,
  type Liveness,
} from './liveness.js';
import type { ProcessTable } from './processes.js';

/**
 * Lease-holder sessions: which process stands behind each vmm id's lease holders
 * (`<vmm-id>/<vm>`), and what happens when it is gone.
 *
 * A vmm asks for a one-time token bound to its vmm id ({@link HolderSessions.openSession}, the
 * OpenLeaseSession call) and presents it in the hello of a lease-channel connection
 * ({@link HolderSessions.hello}); memstore binds the connection to the vmm id and to the
 * process the kernel says connected (peer credentials: pid, uid), whose start time it reads
 * from /proc. The process is recorded in the catalog (`holder_processes`), so it is judged after
 * a restart of memstore too.
 *
 * A holder process is judged ({@link judgeProcess}) when its last connection closes (at once
 * and a few times shortly after, since a dying process closes its sockets before it is a
 * zombie), when another process of the same vmm id says hello, on a periodic sweep, and at
 * start-up. A process in a pid namespace memstore cannot see (pid 0) is judged by its
 * connection: gone once it stayed disconnected for the grace period. Once gone, the vmm's leases
 * are fenced ({@link SessionFencer}) and the record is marked gone.
 */

/** The credentials of a lease-channel peer, as the kernel recorded them (SO_PEERCRED). */
export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** A connection bound to a session by its hello. */
export interface SessionBinding {
  readonly vmmId: string;
  /** The process as memstore sees it (0: another pid namespace). */
  readonly pid: number;
  /** The process's instance (from its hello): identifies the session's process. */
  readonly instance: string;
}

/** A token OpenLeaseSession handed out. */
export interface SessionToken {
  readonly token: string;
  readonly expiresAt: Date;
}

/** What fences a vmm's leases once its process is gone (the lease manager). */
export interface SessionFencer {
  /** @throws when a lease could not be fenced (retried at the next sweep) */
  fenceVmm(vmmId: string, reason: 'holder-gone'): FencedRegionLease[];
  /** Forgets the clone attachments of the vmm's holders (their mappings died with it). */
  detachClonesOfVmm(vmmId: string): number;
}

/** Timing and environment of the sessions. */
export interface HolderSessionsOptions {
  /** How long a process in another pid namespace may stay disconnected before it is gone. */
  readonly graceMs: number;
  /** How often every holder process is judged. */
  readonly sweepMs: number;
  /** How long a token stays valid. */
  readonly tokenTtlMs?: number;
  /** The process table (/proc; tests pass fakes). */
  readonly processes: ProcessTable;
  /** memstore's own uid: hellos from any other user but root are refused. */
  readonly ownUid: number;
}

/** Default lifetime of a session token. */
export const DEFAULT_TOKEN_TTL_MS = 30_000;

/** Most tokens outstanding at once; beyond, the oldest are forgotten. */
const MAX_TOKENS = 1024;

/** After a holder's last connection closes, when to look again (ms after the close). */
const RECHECK_AFTER_CLOSE_MS = [0, 20, 100, 300];

/** Allowed vmm ids: what a lease holder's prefix and a certificate's id can be. */
export const VMM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Allowed process instances (random per vmm process). */
const INSTANCE_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;

interface Session {
  record: HolderProcessRow;
  connections: number;
  /** When the last connection closed (or memstore started, for a recovered record); null while connected. */
  disconnectedAt: number | null;
  /** The last judgement. */
  liveness: Liveness;
}

/** The sessions of every vmm id (see the module comment). */
export class HolderSessions implements HolderJudge {
  private readonly tokens = new Map<string, { vmmId: string; expiresAt: number }>();
  private readonly sessions = new Map<string, Session>();
  private readonly bootId: string;
  private readonly timer: NodeJS.Timeout;
  private readonly rechecks = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(
    private readonly catalog: Catalog,
    private readonly fencer: SessionFencer,
    private readonly logger: Logger,
    private readonly opts: HolderSessionsOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.bootId = opts.processes.bootId();
    this.timer = setInterval(() => this.sweep(), opts.sweepMs);
    this.timer.unref();
  }

  /**
   * Start-up: loads every recorded holder process and judges it; the leases of those gone are
   * fenced before memstore serves. A process in another pid namespace gets the grace period
   * from now to reconnect.
   */
  recover(): void {
    const start = this.now();
    for (const record of this.catalog.listHolderProcesses()) {
      const session: Session = {
        record,
        connections: 0,
        disconnectedAt: start,
        liveness: record.goneAt === null ? 'unknown' : 'gone',
      };
      this.sessions.set(record.vmmId, session);
      if (record.goneAt === null) this.check(session, 'memstore started');
    }
  }

  /**
   * OpenLeaseSession: a one-time token for vmm `vmmId`, valid for the token lifetime.
   *
   * @throws MemstoreError REGION_INVALID_ARGUMENT for a vmm id that cannot prefix a holder
   */
  openSession(vmmId: string): SessionToken {
    if (!VMM_ID_PATTERN.test(vmmId)) {
      throw new MemstoreError(
        'REGION_INVALID_ARGUMENT',
        `vmm id ${JSON.stringify(vmmId.slice(0, 80))} is not valid; use 1 to 63 letters, digits, ` +
          `'-', '_' and '.', starting with a letter or digit (e.g. "vmm-a")`,
      );
    }
    this.expireTokens();
    while (this.tokens.size >= MAX_TOKENS) {
      this.tokens.delete(this.tokens.keys().next().value!);
    }
    const token = randomBytes(32).toString('base64url');
    const expiresAt = this.now() + (this.opts.tokenTtlMs ?? DEFAULT_TOKEN_TTL_MS);
    this.tokens.set(token, { vmmId, expiresAt });
    return { token, expiresAt: new Date(expiresAt) };
  }

  /**
   * The hello of a lease-channel connection from the process `peer` describes. Refuses a user
   * other than memstore's own or root (SERVICE_PERMISSION_DENIED), and a token that is unknown,
   * used or expired (SERVICE_UNAUTHENTICATED). When the vmm id's recorded process is another
   * one: if that one is alive, LEASE_SESSION_CONFLICT; if not, its leases are fenced now,
   * before this answer, so the new process may take them at once. The caller must call
   * {@link HolderSessions.closed} with the binding when the connection closes.
   */
  hello(token: string, instance: string, peer: PeerCredentials): SessionBinding {
    if (peer.uid !== this.opts.ownUid && peer.uid !== 0) {
      throw new ServiceError(
        'SERVICE_PERMISSION_DENIED',
        `the lease channel serves processes of user ${this.opts.ownUid} (memstore's) or root; ` +
          `this connection comes from user ${peer.uid}: run the vmm as memstore's user`,
      );
    }
    const issued = this.tokens.get(token);
    this.tokens.delete(token);
    if (issued === undefined || issued.expiresAt <= this.now()) {
      throw new ServiceError(
        'SERVICE_UNAUTHENTICATED',
        'the hello carries no valid session token (unknown, already used or expired); ask ' +
          'OpenLeaseSession for a new one and present it in the first frame of a new connection',
      );
    }
    if (!INSTANCE_PATTERN.test(instance)) {
      throw new ServiceError(
        'SERVICE_INVALID_ARGUMENT',
        'the hello carries no usable instance: send 8 to 64 random characters from A-Z, a-z, ' +
          '0-9, "-" and "_", the same on every connection of the process',
      );
    }
    const vmmId = issued.vmmId;
    const record = this.identify(vmmId, instance, peer.pid);
    const existing = this.sessions.get(vmmId);
    if (existing !== undefined && existing.record.goneAt === null) {
      if (sameProcess(existing.record, record)) {
        existing.connections += 1;
        existing.disconnectedAt = null;
        existing.liveness = 'alive';
        return { vmmId, pid: existing.record.pid, instance: existing.record.instance };
      }
      this.replace(existing, record);
    }
    this.catalog.putHolderProcess(record);
    this.sessions.set(vmmId, {
      record,
      connections: 1,
      disconnectedAt: null,
      liveness: 'alive',
    });
    this.logger.info(
      { vmm: vmmId, pid: record.pid, startTime: record.startTime },
      'lease-holder session opened',
    );
    return { vmmId, pid: record.pid, instance };
  }

  /** A connection bound by {@link HolderSessions.hello} closed. */
  closed(binding: SessionBinding): void {
    const session = this.sessions.get(binding.vmmId);
    if (session === undefined || session.record.instance !== binding.instance) return;
    if (session.record.pid !== binding.pid || session.connections === 0) return;
    session.connections -= 1;
    if (session.connections > 0) return;
    session.disconnectedAt = this.now();
    // A process that dies closes its sockets before it becomes a zombie: look again shortly.
    for (const delay of RECHECK_AFTER_CLOSE_MS) {
      const t = setTimeout(() => {
        this.rechecks.delete(t);
        if (!this.stopped && session.connections === 0) this.check(session, 'connection closed');
      }, delay);
      t.unref();
      this.rechecks.add(t);
    }
  }

  /** {@link HolderJudge.statusOf}: from the last judgement (at most a sweep old). */
  statusOf(holder: string, grantedAt: Date): HolderStatus {
    const vmmId = vmmIdOfHolder(holder);
    const session = vmmId === undefined ? undefined : this.sessions.get(vmmId);
    if (session === undefined) return unknownHolder(holder);
    const { record } = session;
    if (record.goneAt !== null) {
      // Granted after the process was found gone: by a caller without a session.
      if (grantedAt.getTime() > record.goneAt) return unknownHolder(holder);
      return {
        liveness: 'gone',
        vmmId,
        pid: record.pid,
        since: new Date(record.goneAt),
        connected: false,
      };
    }
    const since =
      session.liveness === 'alive' || session.disconnectedAt === null
        ? new Date(record.openedAt)
        : new Date(session.disconnectedAt);
    return {
      liveness: session.liveness,
      vmmId,
      pid: record.pid,
      since,
      connected: session.connections > 0,
    };
  }

  /** Judges the holder process of `holder`'s vmm now (a sweep of one), then reports it. */
  refresh(holder: string, grantedAt: Date): HolderStatus {
    const vmmId = vmmIdOfHolder(holder);
    const session = vmmId === undefined ? undefined : this.sessions.get(vmmId);
    if (session !== undefined) this.check(session, 'asked');
    return this.statusOf(holder, grantedAt);
  }

  /** Judges every holder process (the timer runs it; tests call it). */
  sweep(): void {
    if (this.stopped || !this.catalog.isOpen) return;
    this.expireTokens();
    for (const session of this.sessions.values()) this.check(session, 'sweep');
  }

  /** Outstanding tokens (tests). */
  get tokenCount(): number {
    return this.tokens.size;
  }

  /** Stops the sweep and the pending re-checks. Idempotent. */
  close(): void {
    this.stopped = true;
    clearInterval(this.timer);
    for (const t of this.rechecks) clearTimeout(t);
    this.rechecks.clear();
  }

  /** The record of the process that says hello. */
  private identify(vmmId: string, instance: string, pid: number): HolderProcessRow {
    let startTime = 0;
    let seenPid = pid;
    if (pid > 0) {
      let stat;
      try {
        stat = this.opts.processes.stat(pid);
      } catch (err) {
        // /proc hides it (hidepid): judge this process by its connection, as for pid 0.
        this.logger.warn(
          { vmm: vmmId, pid, error: (err as Error).message },
          'cannot read the process that says hello: judged by its connection',
        );
        seenPid = 0;
      }
      if (seenPid > 0) {
        if (stat === undefined || stat.state === 'Z' || stat.state === 'X') {
          throw new ServiceError(
            'SERVICE_UNAUTHENTICATED',
            `the process that connected (pid ${pid}) is gone; connect again`,
          );
        }
        startTime = stat.startTime;
      }
    }
    return {
      vmmId,
      pid: seenPid,
      startTime,
      bootId: this.bootId,
      instance,
      openedAt: this.now(),
      goneAt: null,
    };
  }

  /**
   * Another process says hello for a vmm id whose recorded process is `old`: refused while that
   * one is alive; otherwise its leases are fenced now.
   */
  private replace(old: Session, next: HolderProcessRow): void {
    const judged = this.judge(old);
    if (judged.liveness === 'alive') {
      throw new MemstoreError(
        'LEASE_SESSION_CONFLICT',
        `vmm id ${next.vmmId} already has a lease-holder session from a live process` +
          `${old.record.pid > 0 ? ` (pid ${old.record.pid})` : ' (connected)'}; two vmms may not ` +
          'share an id: give this one another --id, or stop the other first',
      );
    }
    if (!this.gone(old, `a new process of vmm ${next.vmmId} said hello (${judged.reason})`)) {
      throw new MemstoreError(
        'CATALOG_FAILED',
        `the leases of vmm ${next.vmmId}'s previous process could not all be fenced yet; ` +
          'connect again in a moment',
      );
    }
  }

  /**
   * Judges a session; marks it gone (fencing its leases) when it is. A session whose leases
   * could not all be fenced is not marked gone, so the next check fences again.
   */
  private check(session: Session, why: string): void {
    if (session.record.goneAt !== null || this.stopped || !this.catalog.isOpen) return;
    const judged = this.judge(session);
    session.liveness = judged.liveness;
    if (judged.liveness === 'gone') this.gone(session, `${why}: ${judged.reason}`);
  }

  /** The process's liveness; by its connection where /proc cannot tell. */
  private judge(session: Session): { liveness: Liveness; reason: string } {
    const judged = judgeProcess(session.record, this.opts.processes);
    if (judged.liveness !== 'unknown') return judged;
    if (session.connections > 0) return { liveness: 'alive', reason: 'its connection is open' };
    const away = this.now() - (session.disconnectedAt ?? this.now());
    if (away >= this.opts.graceMs) {
      return {
        liveness: 'gone',
        reason: `${judged.reason}, and disconnected for ${away} ms (grace ${this.opts.graceMs} ms)`,
      };
    }
    return { liveness: 'unknown', reason: judged.reason };
  }

  /**
   * The session's process is gone: fences its leases, then records it gone (in that order, so
   * a crash in between judges it again at start-up). False when some lease could not be fenced.
   */
  private gone(session: Session, reason: string): boolean {
    const { record } = session;
    session.liveness = 'gone';
    if (!this.fence(session, reason)) return false;
    const at = this.now();
    try {
      this.catalog.markHolderProcessGone(record.vmmId, record.instance, at);
    } catch (err) {
      this.logger.warn({ vmm: record.vmmId, err }, 'could not record the holder process gone');
    }
    session.record = { ...record, goneAt: at };
    return true;
  }

  /** Fences the session's leases; false (retried at the next check) when some could not be. */
  private fence(session: Session, reason: string): boolean {
    const vmmId = session.record.vmmId;
    try {
      const fenced = this.fencer.fenceVmm(vmmId, 'holder-gone');
      // Its clones' private mappings are gone too: they no longer pin their snapshots.
      const clones = this.fencer.detachClonesOfVmm(vmmId);
      this.logger.warn(
        {
          vmm: vmmId,
          pid: session.record.pid,
          reason,
          fenced: fenced.map((f) => f.regionName),
          clonesDetached: clones,
        },
        `lease holder process gone: ${fenced.length} lease(s) fenced, ${clones} clone(s) detached`,
      );
      return true;
    } catch (err) {
      this.logger.error(
        { vmm: vmmId, err },
        'fencing the leases of a gone holder failed; retried at the next sweep',
      );
      return false;
    }
  }

  private expireTokens(): void {
    const now = this.now();
    for (const [token, t] of this.tokens) if (t.expiresAt <= now) this.tokens.delete(token);
  }
}

/** True when two records name the same process. */
function sameProcess(a: HolderProcessRow, b: HolderProcessRow): boolean {
  if (a.bootId !== b.bootId) return false;
  if (a.pid > 0 || b.pid > 0) return a.pid === b.pid && a.startTime === b.startTime;
  return a.instance === b.instance;
}
