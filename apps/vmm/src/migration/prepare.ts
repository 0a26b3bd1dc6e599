/**
 * PrepareIncoming, the target's side before a stream arrives: a one-time token that reserves
 * the VM's name; with the source's spec, the machine built ahead (incoming-blocks.ts); and when
 * every block travels by reference, a switchover armed in the waiting vCPU thread. A source
 * that uses the switchover alone opens no stream: {@link IncomingPreparations} then settles the
 * outcome itself.
 *
 * Every arrival frees its name the moment it ends, whichever way (see {@link Prepared.phase}):
 * the VM runs here, its stream failed, its source gave the slot up before its stop, the token
 * expired, or CancelIncoming dropped it. A PrepareIncoming that fails keeps nothing.
 *
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto';
import type { MigrationCapabilities } from '@handoff/qapi';
import type { Logger } from '@handoff/service';
import { handBack, settleArms } from '../leases/protocol.js';
import { MigrationError } from '../model/migration-error.js';
import type { VmSpec } from '../model/types.js';
import { downtimeParts, type SwitchoverOutcome } from '../switchover/outcome.js';
import { offerSwitchover, type OfferedSwitchover } from '../switchover/offer.js';
import { SlotState } from '../switchover/slot.js';
import type { VmHost } from '../vm/host.js';
import { discardPrebuilt, prebuild, type Block, type Prebuilt } from './incoming-blocks.js';

/** How long a PrepareIncoming token stays valid. */
export const TOKEN_TTL_MS = 60_000;
/**
 * How long after a switchover ran the guest here its bookkeeping waits (the log lines, freeing
 * the name): the source finishes in these milliseconds, and on a small machine this process
 * would take the CPUs its threads need to learn that the guest runs here. The armed transfers
 * are settled at once (see settleWithoutStream).
 */
export const AFTER_RUN_MS = 20;

/** What PrepareIncoming may know of the VM that will arrive. */
export interface IncomingHint {
  /** The VM's spec on the source. */
  readonly spec: VmSpec;
  readonly capabilities: MigrationCapabilities;
}

/** What PrepareIncoming answers. */
export interface PreparedIncoming {
  readonly token: string;
  /** The switchover slot prepared with the machine, or null (switchover/README.md). */
  readonly switchoverSlot: string | null;
}

/** A switchover offered and armed in the prepared VM's waiting vCPU thread. */
export interface ArmedSwitchover extends OfferedSwitchover {
  /** How the target's vCPU thread ended it. */
  readonly outcome: Promise<SwitchoverOutcome>;
}

/** How an arrival ended here. */
export type ArrivalEnd =
  /** The VM runs here. */
  | 'arrived'
  /** Its migration failed here (what moved went back to the source). */
  | 'failed'
  /** It was given up before anything moved: cancelled, expired, or its source gave it up. */
  | 'dropped';

/** What CancelIncoming found: how that job's arrival ended, or `none` if this vmm knows none. */
export type CancelIncomingOutcome = ArrivalEnd | 'none';

/** What a stream serving an arrival offers CancelIncoming. */
export interface ArrivalStream {
  /** Stops the stream unless it is past its point of no return; it then ends by itself. */
  stop(why: string): void;
}

/** One prepared arrival: what its token reserves and holds. */
export interface Prepared {
  readonly name: string;
  readonly jobId: string;
  /** The source vmm's id the token is bound to ('' : none named, on a plaintext vmm). */
  readonly source: string;
  /**
   * The source host's memstore when the VM comes from another host ('' : this host): its
   * shared blocks then arrive through lazy regions of this host's memstore (post-copy).
   */
  readonly sourceMemstore: string;
  readonly token: string;
  /**
   * `waiting`: no stream took the token yet; `taken`: a stream serves it (and settles it);
   * `dropping`: being given up (cancel, expiry, a source that gave the slot up); `settling`: the
   * switchover ran through the slot alone and its outcome is being settled; `failing`: the
   * stream that took it failed and is undoing what it did; `ended`.
   */
  phase: 'waiting' | 'taken' | 'dropping' | 'settling' | 'failing' | 'ended';
  /** The switchover offered with it, once the offer was made (undefined: none or not yet). */
  offer: ArmedSwitchover | undefined;
  /** Frees the name (and lets spare vCPU threads start again). Idempotent. */
  readonly release: () => void;
  readonly timer: NodeJS.Timeout;
  /** The machine built ahead (null: none, or it failed). */
  readonly prebuilt: Promise<Prebuilt | null>;
  /** The switchover offered with it (undefined: none). */
  readonly switchover: Promise<ArmedSwitchover | undefined>;
  /** The stream serving it, once one took the token. */
  stream: ArrivalStream | undefined;
  /** Records how the arrival ended (the first call wins); the name must be released by then. */
  readonly settle: (how: ArrivalEnd) => void;
  /** How it ended, once it did. */
  readonly ended: Promise<ArrivalEnd>;
}

/** Arrivals whose end is remembered for CancelIncoming, per job. */
const KEEP_ENDED = 256;

/**
 * The one-time tokens of PrepareIncoming; each reserves the VM name until its arrival ends
 * (used, failed, dropped or expired). Arrivals are also known by job id, for CancelIncoming.
 */
export class IncomingPreparations {
  private readonly tokens = new Map<string, Prepared>();
  /** By job id: arrivals in progress and the last {@link KEEP_ENDED} ended ones. */
  private readonly jobs = new Map<string, Prepared>();
  /** Jobs whose PrepareIncoming is reserving the name (not registered yet). */
  private readonly preparingJobs = new Set<string>();
  /** Jobs CancelIncoming named while their PrepareIncoming had not registered them yet. */
  private readonly cancelledEarly = new Set<string>();
  /** Told once how each arrival ended (metrics); must not throw. */
  onArrivalEnded: ((how: ArrivalEnd) => void) | undefined;

  /**
   * @param switchoverDir - where a target creates switchover slots (a folder the source vmm sees
   *   too); null: the device state always travels on the stream
   */
  constructor(
    private readonly host: VmHost,
    private readonly logger: Logger,
    readonly switchoverDir: string | null = null,
  ) {}

  /**
   * A token for a VM that will arrive under `name` from the vmm `source` (the only instance
   * whose authenticated stream may present it; '' binds it to none). With a `hint` the machine
   * is built first, so the token comes back when the target is ready (a stream whose header
   * differs from it is served from scratch). When every block travels by reference, a
   * switchover comes with it.
   *
   * @throws VmmError `VMM_VM_EXISTS` when the name is taken or already prepared
   */
  async prepare(
    name: string,
    jobId: string,
    hint?: IncomingHint,
    ttlMs = TOKEN_TTL_MS,
    source = '',
    sourceMemstore = '',
  ): Promise<PreparedIncoming> {
    if (jobId !== '') this.preparingJobs.add(jobId);
    let reserved: () => void;
    try {
      // An arrival of this name on its way out (failed, given up) is gone first, as a VM that
      // just migrated away is: a retry right after a failure gets the name, not a refusal.
      await this.leaving(name);
      reserved = await this.host.reserve(name, jobId);
    } catch (err) {
      this.preparingJobs.delete(jobId);
      this.cancelledEarly.delete(jobId);
      throw err;
    }
    this.preparingJobs.delete(jobId);
    // No spare thread starts (and warms up) while this migration may be timed.
    const unhold = this.host.holdSpares();
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      reserved();
      unhold();
    };
    if (this.cancelledEarly.delete(jobId)) {
      release();
      throw cancelledError(name, jobId);
    }
    let p: Prepared;
    try {
      p = this.register(name, jobId, { source, sourceMemstore }, hint, ttlMs, release);
    } catch (err) {
      release(); // a PrepareIncoming that fails keeps nothing
      throw err;
    }
    const offered = await p.switchover;
    p.offer = offered;
    offered?.outcome.then(
      (o) => this.settleWithoutStream(p, offered, o),
      () => undefined,
    );
    if (p.phase !== 'waiting') {
      // CancelIncoming (or the expiry) dropped it meanwhile: no token to hand out
      throw cancelledError(name, jobId);
    }
    return { token: p.token, switchoverSlot: offered?.slot.path ?? null };
  }

  /** Starts the prebuild and the switchover offer, and registers the token (and the job). */
  private register(
    name: string,
    jobId: string,
    from: { source: string; sourceMemstore: string },
    hint: IncomingHint | undefined,
    ttlMs: number,
    release: () => void,
  ): Prepared {
    const { source, sourceMemstore } = from;
    const log = this.logger.child({ vm: name, job: jobId, side: 'target' });
    const token = randomBytes(24).toString('base64url');
    // Nothing of another host's memory can be mapped ahead: its lazy regions start with the stream.
    const built =
      hint !== undefined && sourceMemstore === ''
        ? prebuild(this.host, name, hint.spec, hint.capabilities, log)
        : Promise.resolve(null);
    // An offer that cannot be made is no failure: the state then travels on the stream.
    const switchover = built
      .then((b) =>
        b !== null && b.blocks.every((x) => x.mode === 'ref')
          ? armSwitchover(this.switchoverDir, this.host, b, log)
          : undefined,
      )
      .catch((err: unknown) => {
        log.warn({ error: (err as Error).message }, 'incoming migration: no switchover offered');
        return undefined;
      });
    let settle!: (how: ArrivalEnd) => void;
    const ended = new Promise<ArrivalEnd>((resolve) => (settle = resolve));
    const timer = setTimeout(() => void this.drop(p, 'its token expired unused'), ttlMs);
    timer.unref();
    const p: Prepared = {
      name,
      jobId,
      source,
      sourceMemstore,
      token,
      phase: 'waiting',
      release,
      timer,
      prebuilt: built,
      switchover,
      offer: undefined,
      stream: undefined,
      settle: (how) => {
        if (p.phase === 'ended') return;
        p.phase = 'ended';
        clearTimeout(p.timer);
        settle(how);
        this.onArrivalEnded?.(how);
      },
      ended,
    };
    this.tokens.set(token, p);
    if (jobId !== '') this.remember(p);
    return p;
  }

  /**
   * Consumes a token presented by a stream from `peer` (the source's authenticated id, or null
   * where the transport names nobody); the caller owns the name reservation (and any prebuild)
   * from here, `stream` is what CancelIncoming stops, and the caller settles the arrival when it
   * ends. A token bound to a source is valid only from that source: another peer gets
   * `MIGRATION_BAD_TOKEN` and the token stays for its rightful source.
   *
   * @throws MigrationError `MIGRATION_BAD_TOKEN`
   */
  take(token: string, peer: string | null = null, stream?: ArrivalStream): Prepared {
    const p = this.tokens.get(token);
    if (p === undefined || p.phase !== 'waiting') {
      throw new MigrationError(
        'MIGRATION_BAD_TOKEN',
        'the stream presented no valid migration token (unknown, used or expired); ' +
          'ask the target for a fresh one with PrepareIncoming',
      );
    }
    if (peer !== null && p.source !== '' && peer !== p.source) {
      throw new MigrationError(
        'MIGRATION_BAD_TOKEN',
        `the migration token of VM ${p.name} was issued for a stream from ${p.source}, not ` +
          `from ${peer}; the migrator names the source in PrepareIncoming`,
      );
    }
    this.tokens.delete(token);
    clearTimeout(p.timer);
    p.phase = 'taken';
    p.stream = stream;
    return p;
  }

  /**
   * CancelIncoming: gives up the arrival of job `jobId` (named `name`, when given) unless it is
   * past its point of no return, and resolves with how it ended. A preparation no stream took
   * is dropped at once (prebuild, switchover, arms and name); a stream is stopped before its
   * source's stop; past it (the source stopped and handed the state over), the arrival ends by
   * itself and the answer says how. Idempotent: asked again, it answers the same.
   */
  async cancel(name: string, jobId: string): Promise<CancelIncomingOutcome> {
    if (this.preparingJobs.has(jobId)) {
      // Its PrepareIncoming still waits for the name: it is refused once it has it.
      this.cancelledEarly.add(jobId);
      return 'dropped';
    }
    const p = this.jobs.get(jobId);
    if (p === undefined || (name !== '' && p.name !== name)) return 'none';
    const why = `migration job ${jobId} was cancelled (CancelIncoming)`;
    if (p.phase === 'waiting') await this.drop(p, why);
    else if (p.phase === 'taken') p.stream?.stop(why);
    return p.ended;
  }

  async close(): Promise<void> {
    await Promise.all([...this.tokens.values()].map((p) => this.drop(p, 'this vmm stops')));
  }

  /**
   * Resolves once no arrival of `name` is on its way out: being dropped or settled, a failing
   * stream undoing its work, or a slot its source gave up (whose drop starts now rather than
   * when the target's thread reports it).
   */
  private async leaving(name: string): Promise<void> {
    const out: Promise<unknown>[] = [];
    for (const p of new Set([...this.tokens.values(), ...this.jobs.values()])) {
      if (p.name !== name || p.phase === 'ended') continue;
      const d = p.offer;
      if (p.phase === 'waiting' && d !== undefined && sourceGaveUp(d)) {
        void this.drop(p, 'its source gave the switchover up before its stop');
      }
      if (p.phase === 'dropping' || p.phase === 'settling' || p.phase === 'failing') {
        out.push(p.ended);
      }
    }
    await Promise.all(out);
  }

  /** Keeps `p` findable by job, forgetting the oldest ended arrivals beyond {@link KEEP_ENDED}. */
  private remember(p: Prepared): void {
    this.jobs.delete(p.jobId);
    this.jobs.set(p.jobId, p);
    if (this.jobs.size <= KEEP_ENDED) return;
    for (const [id, q] of this.jobs) {
      if (this.jobs.size <= KEEP_ENDED) break;
      if (q.phase === 'ended') this.jobs.delete(id);
    }
  }

  /**
   * Gives up an arrival no stream took: the slot aborted, the prebuild discarded, the arms
   * settled, the name freed. When the source announced its stop into the slot before the abort,
   * its state is already handed over: the target's vCPU thread decides, and
   * {@link settleWithoutStream} ends the arrival instead.
   */
  private async drop(p: Prepared, why: string): Promise<void> {
    if (p.phase !== 'waiting') return;
    p.phase = 'dropping';
    this.tokens.delete(p.token);
    clearTimeout(p.timer);
    const d = await p.switchover;
    if (d !== undefined && !d.slot.abort()) return; // the source stopped: its outcome settles it
    await discardPrepared(p, this.host);
    p.release();
    p.settle('dropped');
    this.logger.info(
      { vm: p.name, job: p.jobId, side: 'target', why },
      'incoming migration given up before anything moved; the name is free',
    );
  }

  /**
   * Ends a switchover that ran through the slot alone (its source opened no stream), once the
   * target's vCPU thread ended it: the VM is adopted here, or what moved goes back to the
   * source. An arrival some stream took is that stream's to settle. A slot aborted before any
   * stop was given up by the source (a source that used the prepared slot never falls back to
   * a stream: it failed or was cancelled) or by {@link drop}: the arrival is dropped.
   */
  private async settleWithoutStream(
    p: Prepared,
    d: ArmedSwitchover,
    o: SwitchoverOutcome,
  ): Promise<void> {
    if (p.phase !== 'waiting' && p.phase !== 'dropping') return;
    if (!o.ok && o.stage === 'aborted' && !d.slot.announced) {
      await this.drop(p, 'its source gave the switchover up before its stop');
      return;
    }
    p.phase = 'settling';
    this.tokens.delete(p.token);
    clearTimeout(p.timer);
    const built = (await p.prebuilt)!; // a switchover is only offered with a prebuilt machine
    const ctx = this.host.ramContext(p.name);
    const log = this.logger.child({ vm: p.name, job: p.jobId, side: 'target' });
    const moved = recordMoved(built.blocks, o, []).map((b) => b.region!.id);
    if (o.ok) {
      this.host.adoptRunning(built.vm);
      // At once, not with the rest: a resolve names only the region, so one sent late would
      // settle (cancel) the arm of the VM's next migration, which may follow within milliseconds.
      settleArms(ctx, d.armed, log);
      setTimeout(() => {
        d.slot.close();
        p.release();
        p.settle('arrived');
        log.info(
          { lease: d.lease, prebuilt: true, ...downtimeParts(o) },
          'incoming migration by switchover slot, no stream: the VM runs here (source stop to ' +
            'run, wall clocks)',
        );
      }, AFTER_RUN_MS);
      return;
    }
    settleArms(ctx, d.armed, log);
    d.slot.fail(); // the source may still wait (a thread that died wrote nothing)
    d.slot.close();
    log.warn(
      { stage: o.stage, code: o.code, error: o.message },
      'incoming migration by switchover slot failed; what moved goes back to the source',
    );
    await handBack(ctx, moved, d.from, log);
    for (const b of built.blocks) b.backing?.abandon(); // never release the source's region
    await discardPrebuilt(built);
    p.release();
    p.settle('failed');
  }
}

/** Whether the source aborted the slot before announcing any stop (it gave the migration up). */
function sourceGaveUp(d: ArmedSwitchover): boolean {
  return d.slot.state() === SlotState.ABORTED && !d.slot.announced;
}

function cancelledError(name: string, jobId: string): MigrationError {
  return new MigrationError(
    'MIGRATION_CANCELLED',
    `the incoming migration of VM ${name} (job ${jobId}) was cancelled while it was being ` +
      'prepared; nothing of it is kept here',
  );
}

/**
 * Offers a switchover for a prebuilt VM whose every block travels by reference, and arms its
 * waiting vCPU thread with it. Undefined when none can be offered (see offerSwitchover).
 */
export async function armSwitchover(
  dir: string | null,
  host: VmHost,
  p: Pick<Prebuilt, 'vm' | 'blocks'>,
  log: Logger,
): Promise<ArmedSwitchover | undefined> {
  const from = sourceHolderOf(p.blocks);
  const offer = await offerSwitchover(
    dir,
    host.ramContext(p.vm.name),
    p.blocks.map((b) => ({
      id: b.spec.id,
      regionId: b.region!.id,
      regionName: b.region!.name,
      identity: b.region!.identity,
      epoch: b.epoch,
      size: b.spec.size,
      guestBase: b.spec.guestBase,
    })),
    from,
    log,
  );
  if (offer === undefined) return undefined;
  return { ...offer, outcome: p.vm.armSwitchover(offer.slot.buffer, offer.plan) };
}

/**
 * Gives up an offered switchover no source will use: the slot aborted (before any stop), the
 * vCPU thread back to waiting, the armed transfers settled (cancelled), the slot deleted.
 */
export async function dropSwitchover(
  d: ArmedSwitchover,
  host: VmHost,
  name: string,
): Promise<void> {
  d.slot.abort();
  await d.outcome;
  const ctx = host.ramContext(name);
  settleArms(ctx, d.armed, ctx.logger);
  d.slot.close();
}

/** Undoes what PrepareIncoming prepared and no stream used. */
export async function discardPrepared(
  p: Pick<Prepared, 'prebuilt' | 'switchover'>,
  host: VmHost,
): Promise<void> {
  const built = await p.prebuilt;
  const switchover = await p.switchover;
  if (built !== null && switchover !== undefined) {
    await dropSwitchover(switchover, host, built.spec.name);
  }
  if (built !== null) await discardPrebuilt(built);
}

/**
 * The blocks (by reference, in order) whose lease a switchover moved here, with their new epoch
 * recorded; appended to `moved` unless already there. Returns `moved`.
 */
export function recordMoved(refs: readonly Block[], o: SwitchoverOutcome, moved: Block[]): Block[] {
  for (const [k, b] of refs.entries()) {
    const epoch = o.epochs[k];
    if (epoch === null || epoch === undefined || moved.includes(b)) continue;
    moved.push(b);
    b.backing!.setLeaseEpoch?.(epoch);
  }
  return moved;
}

/** The holder of the blocks' leases (the source's VM), as the prebuild read them. */
function sourceHolderOf(blocks: readonly Block[]): string {
  const holders = new Set(blocks.map((b) => b.region?.lease?.holder ?? ''));
  return holders.size === 1 ? [...holders][0]! : '';
}
