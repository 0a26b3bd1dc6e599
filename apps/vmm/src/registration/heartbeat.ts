import { migrator as pb } from '@handoff/proto';
import type { ChannelCredentials } from '@grpc/grpc-js';
import { createClient, unaryCall, HANDOFF_VERSION, type Logger } from '@handoff/service';
import { hostedVmToPb } from '../wire/vm.js';
import type { HostedVm } from '../model/types.js';

/** How the instance announces itself. */
export interface Announcement {
  id: string;
  address: string;
  /** The host it runs on (`--host-id`, checked by `hostIdOf`). */
  hostId: string;
  /** Its host's memstore (`--memstore`): the one whose files this instance maps. */
  memstoreAddress: string;
  vmCount: () => number;
  /** The VMs this instance hosts now (VmHost.hosted). */
  vms: () => readonly HostedVm[];
  /** Calls the listener after every change of the VM set (VmHost.onVmsChanged); returns the unsubscribe. */
  onVmsChanged: (listener: () => void) => () => void;
}

/** Deadline of each call to the migrator. */
const CALL_DEADLINE_MS = 2000;

/**
 * Keeps the migrator informed about this instance: registers at once and again at the interval
 * the migrator asks for (its heartbeat), and reports the VMs it hosts.
 *
 * The VM set has a version that grows with every change. Every heartbeat carries the version;
 * the set itself goes with the registration while the migrator has not accepted this version
 * (the first one, after an outage), with ReportVms right after each change, and again when a
 * heartbeat's answer says the migrator wants it (it restarted or lost a report). One call is
 * in flight at a time, so the migrator receives the sets in the order they were taken.
 *
 * An unreachable migrator is logged once per outage and retried; it never stops the vmm.
 * Returns a stop function.
 */
export function startHeartbeat(
  migrator: { readonly address: string; readonly credentials: ChannelCredentials },
  me: Announcement,
  logger: Logger,
  fallbackIntervalMs = 2000,
): () => void {
  const migratorAddress = migrator.address;
  const client = createClient(pb.MigratorServiceClient, migratorAddress, migrator.credentials);
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let connected: boolean | undefined;
  /** The version of the VM set now. */
  let version = 1;
  /** The version the migrator last accepted (0: none). */
  let accepted = 0;
  let reportQueued = false;
  let chain: Promise<void> = Promise.resolve();
  /** Runs calls to the migrator one after the other. */
  const serial = (task: () => Promise<void>): void => {
    chain = chain.then(() => (stopped ? undefined : task())).catch(() => undefined);
  };
  const snapshot = (): pb.HostedVms => ({
    version: BigInt(version),
    vms: me.vms().map(hostedVmToPb),
  });

  const beat = async (): Promise<void> => {
    let next = fallbackIntervalMs;
    const set = accepted === version ? undefined : snapshot();
    try {
      const res = await unaryCall(
        client,
        'registerVmm',
        {
          id: me.id,
          address: me.address,
          version: HANDOFF_VERSION,
          vmCount: me.vmCount(),
          vmsVersion: BigInt(version),
          hostId: me.hostId,
          memstoreAddress: me.memstoreAddress,
          vms: set,
        },
        { deadlineMs: CALL_DEADLINE_MS },
      );
      if (set !== undefined) accepted = Number(set.version);
      if (connected !== true) {
        logger.info({ migrator: migratorAddress }, 'registered with the migrator');
      }
      connected = true;
      if (res.heartbeatIntervalMs > 0) next = res.heartbeatIntervalMs;
      if (res.vmsWanted) {
        accepted = 0;
        queueReport();
      }
    } catch (err) {
      if (connected !== false && !stopped) {
        logger.warn(
          { migrator: migratorAddress, error: (err as Error).message },
          'cannot reach the migrator; will keep retrying',
        );
      }
      connected = false;
    }
    if (!stopped) {
      timer = setTimeout(() => serial(beat), next);
      timer.unref();
    }
  };

  const report = async (): Promise<void> => {
    reportQueued = false;
    // Unreachable: the next heartbeat carries the set.
    if (accepted === version || connected === false) return;
    const set = snapshot();
    try {
      await unaryCall(
        client,
        'reportVms',
        { vmmId: me.id, vms: set },
        { deadlineMs: CALL_DEADLINE_MS },
      );
      accepted = Number(set.version);
      logger.debug({ version: accepted, vms: set.vms.length }, 'reported the VMs to the migrator');
    } catch (err) {
      if (!stopped) {
        logger.debug(
          { error: (err as Error).message },
          'could not report the VMs; the next heartbeat carries them',
        );
      }
    }
  };
  const queueReport = (): void => {
    if (reportQueued) return;
    reportQueued = true;
    serial(report);
  };

  const unsubscribe = me.onVmsChanged(() => {
    version++;
    queueReport();
  });
  serial(beat);
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    unsubscribe();
    client.close();
  };
}
