import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster, type ClusterHost } from '@handoff/cluster';
import { vmctlRunner, waitForVmms, type VmctlResult } from './helpers/vmctl.js';

/** What `vmctl status --output json` prints of hosts and vmm instances. */
interface Status {
  healthy: boolean;
  hosts: {
    id: string;
    memstores: { address: string; health: string; usage: { 'volatile-dir': string } | null }[];
    vmms: string[];
  }[];
  vmms: { id: string; 'host-id': string; 'memstore-address': string }[];
}

/** The files process `pid` maps (paths of /proc/<pid>/maps). */
function mappedFiles(pid: number): string[] {
  return readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .map((line) => /^\S+ \S+ \S+ \S+ \d+\s+(\/.*)$/.exec(line)?.[1])
    .filter((p): p is string => p !== undefined);
}

describe('two hosts on one machine (npm start -- --hosts 2)', () => {
  let cluster: Cluster;
  let stateDir: string;
  let volatileDir: string;
  let host1: ClusterHost;
  let host2: ClusterHost;
  let env: NodeJS.ProcessEnv;
  let vmctl: (...args: string[]) => Promise<VmctlResult>;
  let json: <T>(...args: string[]) => Promise<T>;
  const pidOf = (name: string): number => cluster.services.find((s) => s.name === name)!.pid;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'handoff-two-hosts-'));
    volatileDir = mkdtempSync('/dev/shm/handoff-two-hosts-');
    cluster = await startCluster({
      stateDir,
      volatileDir,
      ports: { memstore: 0, migrator: 0, vmms: { 'vmm-a': 0, 'vmm-b': 0 } },
      extraHosts: [{ memstorePort: 0, vmms: { 'vmm-c': 0 } }],
      // the last test kills memstore-2 and looks at the cluster without it
      restart: null,
    });
    [host1, host2] = cluster.hosts as [ClusterHost, ClusterHost];
    env = {
      ...process.env,
      HANDOFF_MEMSTORE_ADDR: cluster.memstore,
      HANDOFF_MIGRATOR_ADDR: cluster.migrator,
      HANDOFF_TLS_DIR: cluster.tlsDir!,
    };
    ({ run: vmctl, json } = vmctlRunner(() => env));
    await waitForVmms(vmctl, 3);
  });

  afterAll(async () => {
    await cluster?.stop();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(volatileDir, { recursive: true, force: true });
    rmSync(`${volatileDir}-host-2`, { recursive: true, force: true });
  });

  it('starts host-2 as memstore-2 in folders of its own beside host-1', () => {
    expect(cluster.hosts.map((h) => [h.id, h.memstoreName, h.vmms])).toEqual([
      ['host-1', 'memstore', ['vmm-a', 'vmm-b']],
      ['host-2', 'memstore-2', ['vmm-c']],
    ]);
    expect(host2.memstore).not.toBe(host1.memstore);
    expect(host2.stateDir).toBe(join(stateDir, 'host-2', 'memstore'));
    expect(host2.persistentDir).toBe(join(stateDir, 'host-2', 'memstore', 'regions'));
    expect(host2.volatileDir).toBe(`${volatileDir}-host-2`);
    // each memstore's catalog and lease socket are in its own folders
    expect(existsSync(join(host2.stateDir, 'catalog.db'))).toBe(true);
    expect(existsSync(join(host1.stateDir, 'catalog.db'))).toBe(true);
    expect(existsSync(join(host2.volatileDir!, 'memstore-lease.sock'))).toBe(true);
    expect(existsSync(join(volatileDir, 'memstore-lease.sock'))).toBe(true);
    for (const id of ['memstore-2', 'vmm-c']) {
      expect(existsSync(join(cluster.tlsDir!, `${id}.pem`)), id).toBe(true);
    }
  });

  it('vmm-c registers as host-2 with memstore-2, and vmctl status groups the instances by host', async () => {
    const s = await json<Status>('status');
    expect(s.healthy).toBe(true);
    expect(s.vmms.map((v) => [v.id, v['host-id'], v['memstore-address']])).toEqual([
      ['vmm-a', 'host-1', host1.memstore],
      ['vmm-b', 'host-1', host1.memstore],
      ['vmm-c', 'host-2', host2.memstore],
    ]);
    expect(
      s.hosts.map((h) => [h.id, h.vmms, h.memstores.map((m) => [m.address, m.health])]),
    ).toEqual([
      ['host-1', ['vmm-a', 'vmm-b'], [[host1.memstore, 'SERVING']]],
      ['host-2', ['vmm-c'], [[host2.memstore, 'SERVING']]],
    ]);
    expect(s.hosts[1]!.memstores[0]!.usage?.['volatile-dir']).toBe(host2.volatileDir);
    const table = (await vmctl('status')).stdout;
    expect(table).toMatch(new RegExp(`host-2\\s+${host2.memstore}\\s+SERVING`));
    expect(table).toMatch(/host-1\s+vmm-b\s+127\.0\.0\.1:\d+\s+SERVING/);
    expect(table).toMatch(/host-2\s+vmm-c\s+127\.0\.0\.1:\d+\s+SERVING/);
  });

  it("a VM with --shared RAM on vmm-c gets its region on memstore-2, and vmm-c maps only host-2's files", async () => {
    const created = await json<{ vm: { ram: { region: string }[] } }>(
      'vm',
      'create',
      'twohosts1',
      '--guest',
      'kvserver',
      '--memory',
      '8M',
      '--shared',
      '--vmm',
      'vmm-c',
    );
    const region = created.vm.ram[0]!.region;
    const on = async (memstore: string) => {
      const before = env.HANDOFF_MEMSTORE_ADDR;
      env.HANDOFF_MEMSTORE_ADDR = memstore;
      try {
        return (await json<{ regions: { name: string; path: string }[] }>('region', 'list'))
          .regions;
      } finally {
        env.HANDOFF_MEMSTORE_ADDR = before;
      }
    };
    const there = (await on(host2.memstore)).find((r) => r.name === region);
    expect(there?.path.startsWith(`${host2.volatileDir!}/`)).toBe(true);
    expect((await on(host1.memstore)).map((r) => r.name)).not.toContain(region);

    const host1Dirs = [`${volatileDir}/`, `${host1.stateDir}/`];
    const host2Dirs = [`${host2.volatileDir!}/`, `${join(stateDir, 'host-2')}/`];
    const inDirs = (files: string[], dirs: string[]) =>
      files.filter((f) => dirs.some((d) => f.startsWith(d)));
    const vmmC = mappedFiles(pidOf('vmm-c'));
    expect(vmmC).toContain(there!.path);
    expect(inDirs(vmmC, host1Dirs)).toEqual([]);
    for (const id of ['vmm-a', 'vmm-b']) {
      expect(inDirs(mappedFiles(pidOf(id)), host2Dirs), id).toEqual([]);
    }
  });

  it('refuses a bypass migration of that VM to host-1, saying to add --postcopy or --no-bypass', async () => {
    const r = await vmctl('migrate', 'twohosts1', '--to', 'vmm-a');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(
      "vmm-a is on host-1 but twohosts1's memory (ram0) is in host-2's memstore (it runs on " +
        'vmm-c): add --postcopy to move it by post-copy, or --no-bypass to copy it',
    );
    // nothing moved
    const s = await json<{ vm: { vmm: string } }>('vm', 'show', 'twohosts1');
    expect(s.vm.vmm).toBe('vmm-c');
  });

  it('refuses a live update across hosts, naming the way that works', async () => {
    const r = await vmctl('live-update', '--from', 'vmm-c', '--to', 'vmm-a');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/vmm-a is on host-1 and vmm-c on host-2: .*--postcopy/);
    const s = await json<{ vm: { vmm: string } }>('vm', 'show', 'twohosts1');
    expect(s.vm.vmm).toBe('vmm-c');
  });

  it("puts a VM on an existing region of vmctl's memstore on host-1 even when vmm-c is least loaded", async () => {
    for (const [name, vmm] of [
      ['twohosts-a', 'vmm-a'],
      ['twohosts-b', 'vmm-b'],
    ]) {
      await json('vm', 'create', name!, '--guest', 'kvserver', '--memory', '4M', '--vmm', vmm!);
    }
    expect((await vmctl('vm', 'destroy', 'twohosts1')).code).toBe(0);
    await json('region', 'create', 'twohosts-r', '--size', '8M');
    const onRegion = await json<{ vm: { vmm: string } }>(
      'vm',
      'create',
      'twohosts-r',
      '--guest',
      'kvserver',
      '--memory',
      '8M',
      '--region',
      'twohosts-r',
    );
    expect(['vmm-a', 'vmm-b']).toContain(onRegion.vm.vmm);
    // a new region can be made on any host: the least loaded instance gets it
    const fresh = await json<{ vm: { vmm: string } }>(
      'vm',
      'create',
      'twohosts-s',
      '--guest',
      'kvserver',
      '--memory',
      '4M',
      '--shared',
    );
    expect(fresh.vm.vmm).toBe('vmm-c');
  });

  it('shows an unreachable memstore-2 as such on host-2 and says the cluster is not healthy', async () => {
    process.kill(pidOf('memstore-2'), 'SIGKILL');
    let r: VmctlResult | undefined;
    let s: Status | undefined;
    for (let i = 0; i < 50; i++) {
      r = await vmctl('status', '--output', 'json');
      s = JSON.parse(r.stdout) as Status;
      if (s.hosts[1]?.memstores[0]?.health === 'UNREACHABLE') break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(r!.code).toBe(3);
    expect(s!.healthy).toBe(false);
    expect(s!.hosts.map((h) => h.memstores.map((m) => m.health))).toEqual([
      ['SERVING'],
      ['UNREACHABLE'],
    ]);
    const table = await vmctl('status');
    expect(table.stdout).toMatch(new RegExp(`host-2\\s+${host2.memstore}\\s+UNREACHABLE`));
    expect(table.stdout).toContain('cluster: NOT healthy');
  });
});
