import { migrator as pb } from '@handoff/proto';
import { createClient, unaryCall, HANDOFF_VERSION, type Logger } from '@handoff/service';

/** How the instance announces itself. */
export interface Announcement {
  id: string;
  address: string;
  vmCount: () => number;
}

/**
 * Registers with the migrator at once and again at the interval the migrator
 * asks for (its heartbeat). An unreachable migrator is logged once per outage
 * and retried; it never stops the vmm. Returns a stop function.
 */
export function startHeartbeat(
  migratorAddress: string,
  me: Announcement,
  logger: Logger,
  fallbackIntervalMs = 2000,
): () => void {
  const client = createClient(pb.MigratorServiceClient, migratorAddress);
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let connected: boolean | undefined;
  const beat = async (): Promise<void> => {
    let next = fallbackIntervalMs;
    try {
      const res = await unaryCall(
        client,
        'registerVmm',
        { id: me.id, address: me.address, version: HANDOFF_VERSION, vmCount: me.vmCount() },
        { deadlineMs: 2000 },
      );
      if (connected !== true)
        logger.info({ migrator: migratorAddress }, 'registered with the migrator');
      connected = true;
      if (res.heartbeatIntervalMs > 0) next = res.heartbeatIntervalMs;
    } catch (err) {
      if (connected !== false) {
        logger.warn(
          { migrator: migratorAddress, error: (err as Error).message },
          'cannot reach the migrator; will keep retrying',
        );
      }
      connected = false;
    }
    if (!stopped) {
      timer = setTimeout(() => void beat(), next);
      timer.unref();
    }
  };
  void beat();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    client.close();
  };
}
