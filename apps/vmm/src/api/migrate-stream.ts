import type * as grpc from '@grpc/grpc-js';
import type { vmm as pb } from '@handoff/proto';
import type { MigrationInfo, MigrationStatus } from '@handoff/qapi';
import { migrationInfoToWire } from '@handoff/qapi/wire';
import { anyEvent } from '@handoff/service';
import type { MigrateRequest, MigrationManager } from '../migration/index.js';

/** How MigrateVm's progress is sampled and sent. */
export interface ProgressTiming {
  /** How often the running migration's info is read, in-process (ms). */
  readonly sampleMs: number;
  /** The longest gap between two messages while the status stays the same (ms). */
  readonly everyMs: number;
}

/**
 * Sampling every 25 ms keeps a status change at most that late; a bypass migration (a few ms)
 * ends before the first sample and costs one message: the final info.
 */
export const PROGRESS_TIMING: ProgressTiming = { sampleMs: 25, everyMs: 250 };

/** What of the MigrationManager MigrateVm drives (its stable in-process API). */
export type OutgoingMigrations = Pick<MigrationManager, 'migrate' | 'info' | 'cancel'>;

/**
 * MigrateVm as a server stream. Runs `migrations.migrate(req)`; while it runs, reads
 * `migrations.info(name)` every `sampleMs` (in-process, no RPC) and writes it when the status
 * changed since the last message or `everyMs` passed; then writes the final info as the last
 * message. A failed or cancelled migration rejects (the serverStream adapter turns that into the
 * call's error status). Resolves or rejects only when the migration ended.
 *
 * Backpressure: while a write waits for 'drain' nothing else is written; the newest sample goes
 * next. The caller going away ends the writing, not the migration. The call's deadline, once
 * passed, cancels the migration (`migrations.cancel`, honoured until the device phase ends).
 */
export async function streamMigration(
  migrations: OutgoingMigrations,
  req: MigrateRequest,
  call: grpc.ServerWritableStream<pb.MigrateVmRequest, pb.MigrateVmResponse>,
  timing: ProgressTiming = PROGRESS_TIMING,
): Promise<void> {
  let settled = false;
  let wake: (() => void) | undefined;
  const done = migrations.migrate(req).finally(() => {
    settled = true;
    wake?.();
  });
  done.catch(() => undefined); // awaited below
  let gone = false;
  let blocked = false;
  const onGone = (): void => {
    gone = true;
    wake?.();
  };
  const onDrain = (): void => {
    blocked = false;
    wake?.();
  };
  call.on('cancelled', onGone);
  call.on('drain', onDrain);
  const deadline = deadlineOf(call);
  const deadlineTimer = Number.isFinite(deadline)
    ? setTimeout(() => cancelQuietly(migrations, req.name), Math.max(0, deadline - Date.now()))
    : undefined;
  let sentStatus: MigrationStatus | undefined;
  let sentAt = 0;
  const send = (info: MigrationInfo): void => {
    sentStatus = info.status;
    sentAt = performance.now();
    blocked = !call.write({ info: migrationInfoToWire(info) });
  };
  const pause = (ms: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resume, ms);
      function resume(): void {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      }
      wake = resume;
    });
  try {
    // The first sample comes one interval in: by then a migration that was refused at once
    // (another one runs, the VM is unknown) has settled and never reports another's info.
    await pause(timing.sampleMs);
    while (!settled) {
      if (!gone && !blocked && !call.cancelled) {
        const info = infoOf(migrations, req.name);
        if (
          info !== undefined &&
          (info.status !== sentStatus || performance.now() - sentAt >= timing.everyMs)
        ) {
          send(info);
        }
      }
      await pause(blocked ? timing.everyMs : timing.sampleMs);
    }
    const final = await done;
    if (gone || call.cancelled) return;
    if (blocked) await anyEvent(call, ['drain', 'cancelled', 'close']);
    if (!call.cancelled) send(final);
  } finally {
    clearTimeout(deadlineTimer);
    call.off('cancelled', onGone);
    call.off('drain', onDrain);
  }
}

/** The call's deadline in epoch ms (Infinity when it has none). */
function deadlineOf(call: grpc.ServerWritableStream<unknown, unknown>): number {
  const d = call.getDeadline();
  return d instanceof Date ? d.getTime() : d;
}

function infoOf(migrations: OutgoingMigrations, name: string): MigrationInfo | undefined {
  try {
    return migrations.info(name);
  } catch {
    return undefined; // not registered yet: nothing to report
  }
}

function cancelQuietly(migrations: OutgoingMigrations, name: string): void {
  try {
    migrations.cancel(name);
  } catch {
    // it ended meanwhile: nothing to cancel
  }
}
