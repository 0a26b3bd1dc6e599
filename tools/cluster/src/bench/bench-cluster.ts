import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Clients, jobs, jobEnded, operatorTls, vms, type JobView } from '@handoff/cli/client';
import { startCluster, type Cluster } from '../launcher.js';

/** A local cluster (memstore, migrator, vmm-a, vmm-b) for one bench, in temporary folders. */
export interface BenchCluster {
  readonly cluster: Cluster;
  readonly c: Clients;
  /** The pid of a service's current process (`vmm-a`, `memstore`, ...). */
  pid(service: string): number;
  /** Follows a job to its end (streamed, no polling); rejects when it did not complete. */
  complete(job: JobView): Promise<JobView>;
  /** Stops every service and removes every folder and region file it made. */
  stop(): Promise<void>;
}

/**
 * Starts the cluster and waits until its vmm instances registered with the migrator: host-1's
 * vmm-a and vmm-b, and with `hosts: 2` host-2's vmm-c on memstore-2.
 */
export async function startBenchCluster(opts: { hosts?: 1 | 2 } = {}): Promise<BenchCluster> {
  const hosts = opts.hosts ?? 1;
  const stateDir = mkdtempSync(join(tmpdir(), 'handoff-bench-'));
  const volatileDir = mkdtempSync('/dev/shm/handoff-bench-');
  const removeDirs = (): void => {
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(volatileDir, { recursive: true, force: true });
    rmSync(`${volatileDir}-host-2`, { recursive: true, force: true });
  };
  let cluster: Cluster;
  try {
    cluster = await startCluster({
      stateDir,
      volatileDir,
      ports: { memstore: 0, migrator: 0, vmms: { 'vmm-a': 0, 'vmm-b': 0 } },
      ...(hosts === 2 ? { extraHosts: [{ memstorePort: 0, vmms: { 'vmm-c': 0 } }] } : {}),
      logLevel: 'warn',
    });
  } catch (err) {
    removeDirs();
    throw err;
  }
  const c = new Clients({
    memstore: cluster.memstore,
    migrator: cluster.migrator,
    timeoutMs: 120_000,
    tls: cluster.tlsDir === null ? null : operatorTls({ HANDOFF_TLS_DIR: cluster.tlsDir }),
  });
  const stop = async (): Promise<void> => {
    c.close();
    await cluster.stop();
    removeDirs();
  };
  try {
    const want = hosts === 2 ? 3 : 2;
    for (let i = 0; (await vms.instances(c)).filter((v) => v.alive).length < want; i++) {
      if (i > 100)
        throw new Error(`${want} vmm instances did not register with the migrator in 10 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    cluster,
    c,
    pid(service) {
      const p = cluster.services.find((s) => s.name === service);
      if (p === undefined) throw new Error(`${service} is not running`);
      return p.pid;
    },
    async complete(job) {
      const end = jobEnded(job) ? job : await jobs(c).watch(job.id, () => undefined);
      if (end.info.status !== 'completed') {
        throw new Error(
          `${end.kind} job ${end.id} ${end.info.status}: ${end.info.errorDesc ?? ''}`,
        );
      }
      return end;
    },
    stop,
  };
}
