/**
 * A source left paused with `MIGRATION_UNCERTAIN` because memstore did not answer whether the
 * target took the lease: the VM settles itself once memstore answers again. In the background,
 * with backoff, it makes the same compare-and-set a failed source makes at once (`retakeLease`
 * in leases/protocol.ts: its own lease to itself, epoch + 1, which fences any transfer the
 * target may still present). When memstore confirms every lease is this VM's own, the VM
 * resumes (when it was running before the migration); when a lease moved, the VM is fenced and
 * never resumes here. Nothing else is decided here.
 *
 * @packageDocumentation
 */
import type { Logger } from '@handoff/service';
import type { LeasedRegion, RetakeOutcome } from '../leases/protocol.js';
import type { VmState } from '../model/types.js';

/** The VM as the re-check sees and acts on it (a Vm). */
export interface UncertainVm {
  readonly name: string;
  readonly currentState: VmState;
  /** Why it must never resume here, or null. */
  readonly fenced: string | null;
  readonly destroyed: boolean;
  resume(): Promise<unknown>;
  fence(reason: string): void;
}

/** One region whose lease the VM must hold again, and how to record its new epoch. */
export interface UncertainLease extends LeasedRegion {
  /** Records the epoch the re-take moved the lease to. */
  setEpoch(epoch: number): void;
}

/** How a re-check ended. */
export type RecheckEnd =
  /** Every lease is the VM's own again; it resumed (it was running before the migration). */
  | 'resumed'
  /** Every lease is the VM's own again; it stays paused (it was paused before the migration). */
  | 'confirmed'
  /** A lease moved: the VM is fenced here for good. */
  | 'fenced'
  /** Given up: the VM was destroyed, resumed by hand, fenced, or migrates again. */
  | 'stopped';

/** Backoff between two attempts: from `firstMs`, doubled up to `maxMs`. */
export interface RecheckTiming {
  readonly firstMs: number;
  readonly maxMs: number;
}

/** The default backoff: 200 ms, doubled up to 5 s, until memstore answers. */
export const RECHECK_TIMING: RecheckTiming = { firstMs: 200, maxMs: 5000 };

/** A re-check running in the background. */
export interface LeaseRecheck {
  /** Ends it at the next step (a new migration of the VM starts, the instance stops). */
  stop(): void;
  /** How it ended. */
  readonly ended: Promise<RecheckEnd>;
}

/**
 * Starts the background re-check of a VM left paused by an uncertain migration. `retake` is
 * leases/protocol.ts's `retakeLease` in production. `onEnd` hears a sentence for the
 * migration's error description once it ended (not when stopped).
 */
export function recheckLeases(opts: {
  readonly vm: UncertainVm;
  readonly leases: readonly UncertainLease[];
  readonly retake: (lease: LeasedRegion) => Promise<RetakeOutcome>;
  /** Whether the VM ran before the migration paused it (it then resumes). */
  readonly resume: boolean;
  readonly log: Logger;
  readonly timing?: RecheckTiming;
  readonly onEnd?: (sentence: string) => void;
}): LeaseRecheck {
  const { vm, log } = opts;
  const timing = opts.timing ?? RECHECK_TIMING;
  let stopped = false;
  let wake: (() => void) | undefined;
  const gone = (): boolean =>
    stopped || vm.destroyed || vm.currentState !== 'paused' || vm.fenced !== null;
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      }
      wake = done;
    });
  const run = async (): Promise<RecheckEnd> => {
    const left = [...opts.leases];
    let delay = timing.firstMs;
    let attempts = 0;
    while (left.length > 0) {
      await sleep(delay);
      if (gone()) return 'stopped';
      attempts++;
      const lease = left[0]!;
      const outcome = await opts.retake(lease);
      if (gone()) return 'stopped';
      if (outcome.kind === 'unknown') {
        log.debug({ region: lease.regionName, attempts }, 'memstore still does not answer');
        delay = Math.min(delay * 2, timing.maxMs);
        continue;
      }
      if (outcome.kind === 'moved') {
        const reason = `the lease of region ${lease.regionName} moved during the migration`;
        vm.fence(reason);
        opts.onEnd?.(
          `memstore later said the lease of region ${lease.regionName} had moved: the VM stays ` +
            'paused and fenced here and runs on the target; destroy it here',
        );
        log.warn({ region: lease.regionName, attempts }, 'uncertain migration settled: fenced');
        return 'fenced';
      }
      lease.setEpoch(outcome.epoch);
      left.shift();
    }
    const names = opts.leases.map((l) => l.regionName).join(', ');
    if (!opts.resume) {
      opts.onEnd?.(
        `memstore later confirmed the lease of ${names} was still this VM's: it stays paused ` +
          'here as it was before the migration',
      );
      log.info({ attempts }, 'uncertain migration settled: the leases are ours; stays paused');
      return 'confirmed';
    }
    try {
      await vm.resume();
    } catch (err) {
      if (gone()) return 'stopped';
      log.warn({ error: (err as Error).message }, 'uncertain migration settled but no resume');
      return 'stopped';
    }
    opts.onEnd?.(
      `memstore later confirmed the lease of ${names} was still this VM's: it resumed here by ` +
        'itself',
    );
    log.info({ attempts }, 'uncertain migration settled: the leases are ours; resumed');
    return 'resumed';
  };
  const ended = run().catch((err: unknown) => {
    log.warn({ error: (err as Error).message }, 'the lease re-check failed');
    return 'stopped' as const;
  });
  return {
    stop: () => {
      stopped = true;
      wake?.();
    },
    ended,
  };
}
