import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { migrator as mpb } from '@handoff/proto';
import { createClient, unaryCall } from '@handoff/service';
import {
  memstoreDirs,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './memstore.js';
import { freePort, startService, type TestService } from './services.js';
import { startVmmProcess, type VmmUnderTest } from './vmm.js';

/**
 * A whole cluster of real processes on loopback for the migrator tests: memstore, a migrator
 * with a journal on a fixed port (so it can be killed and restarted where the vmm instances
 * keep heartbeating), and vmm instances registered with it.
 */
export interface MigratorCluster {
  readonly dirs: MemstoreDirs;
  readonly memstore: MemstoreUnderTest;
  readonly vmms: Map<string, VmmUnderTest>;
  readonly stateDir: string;
  migrator: TestService;
  client: mpb.MigratorServiceClient;
  /** SIGKILLs the migrator (its journal stays). */
  killMigrator(): Promise<void>;
  /** Starts the migrator again on the same port and journal; waits for the vmms to register. */
  restartMigrator(): Promise<void>;
  /** Waits until every vmm is registered and alive. */
  waitForVmms(): Promise<void>;
  stop(): Promise<void>;
}

export async function startMigratorCluster(opts: {
  vmms: string[];
  migratorArgs?: string[];
  vmmArgs?: string[];
  /** Environment of particular vmm instances, by id (e.g. a failpoint). */
  vmmEnv?: Record<string, NodeJS.ProcessEnv>;
}): Promise<MigratorCluster> {
  const dirs = memstoreDirs();
  const stateDir = mkdtempSync(join(tmpdir(), 'handoff-migrator-xp-'));
  const memstore = await startMemstoreProcess(dirs);
  const port = await freePort();
  const startMigrator = () =>
    startService('migrator', [
      '--port',
      String(port),
      '--state-dir',
      stateDir,
      '--heartbeat-interval-ms',
      '200',
      '--memstore',
      memstore.process.address,
      ...(opts.migratorArgs ?? []),
    ]);
  const migrator = await startMigrator();
  const vmmList = await Promise.all(
    opts.vmms.map((id) =>
      startVmmProcess(
        [
          '--id',
          id,
          '--memstore',
          memstore.process.address,
          '--migrator',
          migrator.address,
          ...(opts.vmmArgs ?? []),
        ],
        { env: opts.vmmEnv?.[id] },
      ),
    ),
  );
  const cluster: MigratorCluster = {
    dirs,
    memstore,
    vmms: new Map(opts.vmms.map((id, i) => [id, vmmList[i]!])),
    stateDir,
    migrator,
    client: createClient(mpb.MigratorServiceClient, migrator.address, migrator.credentials),
    async killMigrator() {
      cluster.client.close();
      await cluster.migrator.kill9();
    },
    async restartMigrator() {
      cluster.migrator = await startMigrator();
      cluster.client = createClient(
        mpb.MigratorServiceClient,
        cluster.migrator.address,
        cluster.migrator.credentials,
      );
      await cluster.waitForVmms();
    },
    async waitForVmms() {
      for (let i = 0; ; i++) {
        const { vmms } = await unaryCall(cluster.client, 'listVmms', {});
        if (vmms.filter((v) => v.alive).length === opts.vmms.length) return;
        if (i > 200) throw new Error(`vmm instances did not register: ${JSON.stringify(vmms)}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    async stop() {
      cluster.client.close();
      await Promise.all([...cluster.vmms.values()].map((v) => v.stop().catch(() => undefined)));
      await cluster.migrator.stop().catch(() => undefined);
      await memstore.stop().catch(() => undefined);
      dirs.cleanup();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
  await cluster.waitForVmms();
  return cluster;
}
