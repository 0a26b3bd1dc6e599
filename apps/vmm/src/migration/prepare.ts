/**
 * PrepareIncoming, the target's side before a stream arrives: a one-time token that reserves
 * the VM's name; with the source's spec, the machine built ahead (incoming-blocks.ts); and when
 * every block travels by reference, a switchover armed in the waiting vCPU thread. A source
 * that uses the switchover alone opens no stream: {@link IncomingPreparations} then settles the
 * outcome itself.
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
import type { VmHost } from '../vm/host.js';
import { discardPrebuilt, prebuild, type Block, type Prebuilt } from './incoming-blocks.js';

/** How long a PrepareIncoming token stays valid. */
export const TOKEN_TTL_MS = 60_000;
/**
 * How long after a switchover ran the guest here its bookkeeping waits (settling the armed
 * transfers with memstore, the log lines, freeing the name, the spare thread that replaces the
 * one taken): the source finishes in these milliseconds, and on a small machine this process and
 * memstore would take the CPUs its threads need to learn that the guest runs here.
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

/** One prepared arrival: what its token reserves and holds. */
export interface Prepared {
  readonly name: string;
  readonly jobId: string;
  /** The source vmm's id the token is bound to ('' : none named, on a plaintext vmm). */
  readonly source: string;
  /** Frees the name (and lets spare vCPU threads start again). */
  readonly release: () => void;
  readonly timer: NodeJS.Timeout;
  /** The machine built ahead (null: none, or it failed). */
  readonly prebuilt: Promise<Prebuilt | null>;
  /** The switchover offered with it (undefined: none). */
  readonly switchover: Promise<ArmedSwitchover | undefined>;
}

/** The one-time tokens of PrepareIncoming; each reserves the VM name until used or expired. */
export class IncomingPreparations {
  private readonly tokens = new Map<string, Prepared>();

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
  ): Promise<PreparedIncoming> {
    const reserved = await this.host.reserve(name);
    // No spare thread starts (and warms up) while this migration may be timed.
    const unhold = this.host.holdSpares();
    const release = (): void => {
      reserved();
      unhold();
    };
    const log = this.logger.child({ vm: name, job: jobId, side: 'target' });
    const token = randomBytes(24).toString('base64url');
    const built =
      hint !== undefined
        ? prebuild(this.host, name, hint.spec, hint.capabilities, log)
        : Promise.resolve(null);
    // An offer that cannot be made is no failure: the state then travels on the stream.
    const switchover = built
      .then((p) =>
        p !== null && p.blocks.every((b) => b.mode === 'ref')
          ? armSwitchover(this.switchoverDir, this.host, p, log)
          : undefined,
      )
      .catch((err: unknown) => {
        log.warn({ error: (err as Error).message }, 'incoming migration: no switchover offered');
        return undefined;
      });
    const timer = setTimeout(() => {
      this.tokens.delete(token);
      void discardPrepared({ prebuilt: built, switchover }, this.host).then(release);
    }, ttlMs);
    timer.unref();
    this.tokens.set(token, { name, jobId, source, release, timer, prebuilt: built, switchover });
    const offered = await switchover;
    offered?.outcome.then(
      (o) => this.settleWithoutStream(token, offered, o),
      () => undefined,
    );
    return { token, switchoverSlot: offered?.slot.path ?? null };
  }

  /**
   * Consumes a token presented by a stream from `peer` (the source's authenticated id, or null
   * where the transport names nobody); the caller owns the name reservation (and any prebuild)
   * from here. A token bound to a source is valid only from that source: another peer gets
   * `MIGRATION_BAD_TOKEN` and the token stays for its rightful source.
   *
   * @throws MigrationError `MIGRATION_BAD_TOKEN`
   */
  take(token: string, peer: string | null = null): Prepared {
    const p = this.tokens.get(token);
    if (p === undefined) {
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
    return p;
  }

  async close(): Promise<void> {
    const all = [...this.tokens.values()];
    this.tokens.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      await discardPrepared(p, this.host);
      p.release();
    }
  }

  /**
   * Ends a switchover that ran through the slot alone (its source opened no stream), once the
   * target's vCPU thread ended it: the VM is adopted here, or what moved goes back to the
   * source. A token some stream took is that stream's to settle; a slot given up before any
   * stop leaves the token to a stream.
   */
  private async settleWithoutStream(
    token: string,
    d: ArmedSwitchover,
    o: SwitchoverOutcome,
  ): Promise<void> {
    const p = this.tokens.get(token);
    if (p === undefined || (!o.ok && o.stage === 'aborted' && !d.slot.announced)) return;
    this.tokens.delete(token);
    clearTimeout(p.timer);
    const built = (await p.prebuilt)!; // a switchover is only offered with a prebuilt machine
    const ctx = this.host.ramContext(p.name);
    const log = this.logger.child({ vm: p.name, job: p.jobId, side: 'target' });
    const moved = recordMoved(built.blocks, o, []).map((b) => b.region!.id);
    if (o.ok) {
      this.host.adoptRunning(built.vm);
      setTimeout(() => {
        settleArms(ctx, d.armed, log);
        d.slot.close();
        p.release();
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
  }
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
