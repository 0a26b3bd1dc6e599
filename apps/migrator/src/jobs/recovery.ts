import type { MigrationStatus } from '@handoff/qapi';
import type { Logger } from '@handoff/service';
import { isUnreachable, type VmmCalls } from '../clients/vmm-client.js';
import { isMovable } from '../registry/hosted-vm.js';
import type { Job } from './job.js';

/**
 * What a restarted migrator does for a migrate job its predecessor left in flight (the job is
 * already failed): ask the source to cancel, then find out where the VM runs. Neither step
 * changes anything the vmm instances decided; a source that handed the VM over retires its
 * `postmigrate` copy on its own.
 */

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

/** How long and how often recovery tries; `closed` stops it (the migrator is stopping). */
export interface RecoveryTiming {
  /** How long to keep trying to reach an unreachable source with the cancel. */
  retryMs: number;
  /** How long to wait for the source's migration to end. */
  timeoutMs: number;
  /** How often to ask the source whether it ended (GetMigration). */
  pollMs: number;
  closed: () => boolean;
}

/**
 * Asks the job's source to CancelMigration, retrying (with backoff) while it is unreachable.
 * Any answer of the source ends it: the vmm's rules decided (e.g. it refused past the point of
 * no return, or it ran no migration any more). Never rejects.
 */
export async function cancelAfterRestart(
  vmms: VmmCalls,
  job: Job,
  timing: RecoveryTiming,
  log: Logger,
): Promise<void> {
  const deadline = Date.now() + timing.retryMs;
  for (let delay = 100; !timing.closed(); delay = Math.min(delay * 2, 2000)) {
    try {
      await vmms.cancelMigration(job.sourceAddress, job.vm);
      log.info('asked the source vmm to cancel after restart');
      return;
    } catch (err) {
      if (!isUnreachable(err)) {
        log.info({ err }, 'source vmm answered the cancel');
        return;
      }
      if (Date.now() > deadline) {
        log.warn('source vmm unreachable; cancel not delivered');
        return;
      }
      await sleep(delay);
    }
  }
}

/**
 * Waits (up to `timing.timeoutMs`) until the source's migration of the job's VM ended, then asks
 * both ends where the VM runs. Resolves with a sentence for the job's error ("vmm-a reported the
 * migration completed and vmm-b runs the VM …"), or undefined when it cannot tell.
 *
 * @throws RemoteError when the source stays unreachable
 */
export async function whereAfterRestart(
  vmms: VmmCalls,
  job: Job,
  timing: RecoveryTiming,
): Promise<string | undefined> {
  const deadline = Date.now() + timing.timeoutMs;
  let status: MigrationStatus;
  for (;;) {
    if (timing.closed()) return undefined;
    const info = await vmms.migration(job.sourceAddress, job.vm);
    if (info === null) return undefined; // the source knows no migration of the VM
    status = info.status;
    if (['none', 'completed', 'failed', 'cancelled'].includes(status)) break;
    if (Date.now() > deadline) return undefined;
    await sleep(Math.max(timing.pollMs, 50));
  }
  const stateOn = (address: string) =>
    vmms.vm(address, job.vm).then(
      (vm) => vm?.state,
      () => undefined,
    );
  const [src, dst] = await Promise.all([stateOn(job.sourceAddress), stateOn(job.targetAddress)]);
  let where: string;
  if (dst !== undefined && isMovable(dst)) {
    where =
      `${job.targetVmm} runs the VM (${job.sourceVmm} retires its postmigrate copy on its ` +
      'own)';
  } else if (src !== undefined && isMovable(src)) {
    where = `${job.sourceVmm} kept the VM`;
  } else {
    return undefined;
  }
  return `afterwards ${job.sourceVmm} reported the migration ${status} and ${where}`;
}
