import type { Logger } from '@handoff/service';
import type { RegionLeases } from '../clients/memstore-client.js';
import { unreachableHow, type VmmCalls } from '../clients/vmm-client.js';
import type { Job } from './job.js';
import { gatherEvidence, judge, type Verdict } from './outcome.js';

/**
 * What a restarted migrator does for a migrate job its predecessor left in flight: it cancels
 * the migration at both ends and records where the VM is. Neither step changes anything the
 * vmm instances decided past their point of no return; a source that handed the VM over
 * retires its `postmigrate` copy on its own.
 */

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

/** How long and how often recovery tries; `closed` stops it (the migrator is stopping). */
export interface RecoveryTiming {
  /** How long to keep trying to reach a vmm that does not answer. */
  retryMs: number;
  /** How long to wait for the source's migration to end. */
  timeoutMs: number;
  /** How often to ask the source whether it ended (GetMigration). */
  pollMs: number;
  closed: () => boolean;
}

/** How long a vmm whose address refuses connections (its process is gone) is tried. */
const REFUSED_GRACE_MS = 2000;

/**
 * Calls `call` until the vmm answers (any answer, error included), retrying with backoff while
 * it cannot be reached: up to `timing.retryMs` while it does not answer, up to
 * {@link REFUSED_GRACE_MS} while nothing listens at its address. Resolves with whether it
 * answered. Never rejects.
 */
async function untilAnswered(
  call: () => Promise<unknown>,
  timing: RecoveryTiming,
): Promise<boolean> {
  const started = Date.now();
  for (let delay = 100; !timing.closed(); delay = Math.min(delay * 2, 2000)) {
    try {
      await call();
      return true;
    } catch (err) {
      const how = unreachableHow(err);
      if (how === undefined) return true;
      const limit = how === 'refused' ? Math.min(REFUSED_GRACE_MS, timing.retryMs) : timing.retryMs;
      if (Date.now() - started > limit) return false;
      await sleep(delay);
    }
  }
  return false;
}

/**
 * Resolves a migrate job a killed migrator left in flight. At once and at both ends: the
 * source is asked to CancelMigration and the target to CancelIncoming (each stops only what is
 * before its point of no return, so together they cancel it, and the target frees the VM's name
 * now rather than when its token expires). Then the source's migration is waited for and the
 * verdict comes from both ends and memstore (outcome.ts). Never rejects.
 */
export async function resolveAfterRestart(
  deps: { vmms: VmmCalls; leases: RegionLeases | undefined },
  job: Job,
  timing: RecoveryTiming,
  log: Logger,
): Promise<Verdict> {
  const { vmms } = deps;
  const [source, target] = await Promise.all([
    untilAnswered(() => vmms.cancelMigration(job.sourceAddress, job.vm), timing),
    untilAnswered(() => vmms.cancelIncoming(job.targetAddress, job.vm, job.id), timing),
  ]);
  log.info(
    { sourceAnswered: source, targetAnswered: target },
    'cancelled at both ends after the restart',
  );
  const evidence = await gatherEvidence(deps, job, {
    settleMs: timing.timeoutMs,
    pollMs: timing.pollMs,
    retryMs: target ? timing.retryMs : 0,
    closed: timing.closed,
  });
  return judge(job, evidence, { cancelled: true });
}
