import type * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '@handoff/cluster';
import { channelCredentials, loadTls } from '@handoff/service';
import { listServicesByReflection } from './helpers/reflection.js';
import { repoRoot } from './helpers/services.js';
import { vmctlRunner, type VmctlResult } from './helpers/vmctl.js';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('the local cluster and vmctl', () => {
  let cluster: Cluster;
  let stateDir: string;
  let volatileDir: string;
  let vmctl: (...args: string[]) => Promise<VmctlResult>;
  let env: NodeJS.ProcessEnv;
  /** An operator's credentials from the cluster's own PKI. */
  let operator: grpc.ChannelCredentials;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'handoff-cluster-'));
    volatileDir = mkdtempSync('/dev/shm/handoff-cluster-test-');
    cluster = await startCluster({
      stateDir,
      volatileDir,
      ports: { memstore: 0, migrator: 0, vmms: { 'vmm-a': 0, 'vmm-b': 0 } },
    });
    // vmctl uses the operator certificate the launcher created with the cluster.
    env = {
      ...process.env,
      HANDOFF_MEMSTORE_ADDR: cluster.memstore,
      HANDOFF_MIGRATOR_ADDR: cluster.migrator,
      HANDOFF_TLS_DIR: cluster.tlsDir!,
    };
    vmctl = vmctlRunner(() => env).run;
    operator = channelCredentials(
      loadTls({ 'tls-dir': cluster.tlsDir! }, 'operator', { role: 'operator' }),
    );
  });

  it('creates its PKI in <state-dir>/tls: a CA and a certificate per service, keys private', () => {
    expect(cluster.tlsDir).toBe(join(stateDir, 'tls'));
    expect(statSync(cluster.tlsDir!).mode & 0o777).toBe(0o700);
    for (const id of ['ca', 'memstore', 'migrator', 'vmm-a', 'vmm-b', 'operator']) {
      expect(existsSync(join(cluster.tlsDir!, `${id}.pem`))).toBe(true);
      expect(statSync(join(cluster.tlsDir!, `${id}.key`)).mode & 0o777).toBe(0o600);
    }
  });

  afterAll(async () => {
    await cluster?.stop();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(volatileDir, { recursive: true, force: true });
  });

  it('vmctl status shows all four services SERVING once the vmm instances registered', async () => {
    let status:
      | { healthy: boolean; services: { name: string; health: string }[]; vmms: { id: string }[] }
      | undefined;
    for (let i = 0; i < 50; i++) {
      const r = await vmctl('status', '--output', 'json');
      status = JSON.parse(r.stdout);
      if (r.code === 0 && status!.vmms.length === 2) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(status!.healthy).toBe(true);
    expect(status!.services.map((s) => [s.name, s.health])).toEqual([
      ['memstore', 'SERVING'],
      ['migrator', 'SERVING'],
    ]);
    expect(status!.vmms.map((v) => v.id)).toEqual(['vmm-a', 'vmm-b']);
    const table = await vmctl('status');
    expect(table.stdout).toMatch(/vmm-a\s+127\.0\.0\.1:\d+\s+SERVING/);
    expect(table.stdout).toContain('cluster: healthy');
  });

  it('every service lists its services through reflection', async () => {
    expect(await listServicesByReflection(cluster.memstore, operator)).toContain(
      'handoff.memstore.v1.MemstoreService',
    );
    expect(await listServicesByReflection(cluster.migrator, operator)).toContain(
      'handoff.migrator.v1.MigratorService',
    );
    for (const address of Object.values(cluster.vmms)) {
      expect(await listServicesByReflection(address, operator)).toContain(
        'handoff.vmm.v1.VmmService',
      );
    }
  });

  it('vmctl region create, list, show and delete a region', async () => {
    const created = await vmctl('region', 'create', 'walkthrough', '--size', '8M', '-o', 'json');
    expect(created.code).toBe(0);
    const region = JSON.parse(created.stdout).region;
    expect(region).toMatchObject({
      name: 'walkthrough',
      size: 8 * 1024 * 1024,
      kind: 'volatile',
      state: 'active',
    });
    expect(region.path.startsWith(volatileDir)).toBe(true);

    const list = await vmctl('region', 'list');
    expect(list.stdout).toMatch(/walkthrough\s+volatile\s+active\s+8 MiB/);

    const shown = JSON.parse(
      (await vmctl('region', 'show', region.id, '-o', 'json')).stdout,
    ).region;
    expect(shown.name).toBe('walkthrough');

    expect((await vmctl('region', 'delete', 'walkthrough')).code).toBe(0);
    const missing = await vmctl('region', 'show', 'walkthrough', '-o', 'json');
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stdout).error.code).toBe('REGION_NOT_FOUND');
    expect(missing.stderr).toMatch(/^vmctl: /);
  });

  it('vmctl refuses bad input with exit status 2 before calling anything', async () => {
    const bad = await vmctl('region', 'create', 'x', '--size', 'lots');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('is not a size');
    expect((await vmctl('nonsense')).code).toBe(2);
    expect((await vmctl('region', 'create', 'x')).stderr).toContain(
      "required option '-s, --size <size>'",
    );
  });

  it('vmctl reports an unreachable cluster with exit status 1 and what to do', async () => {
    const r = await vmctl('region', 'list', '--memstore', '127.0.0.1:1', '--timeout', '500');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('npm start');
  });

  it('vmctl without a certificate refuses to run and says how to get one; --insecure gets nowhere', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'handoff-no-tls-'));
    const bare = vmctlRunner(() => ({ ...env, HANDOFF_TLS_DIR: '', HANDOFF_STATE_DIR: empty }));
    try {
      const r = await bare.run('region', 'list');
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/no operator certificate: none in .*handoff-no-tls-.*\/tls/);
      expect(r.stderr).toContain('HANDOFF_TLS_DIR');
      const plain = await bare.run('region', 'list', '--insecure', '--timeout', '1000');
      expect(plain.code).toBe(1);
      expect(plain.stderr).toContain('--insecure only for a cluster started with --insecure');
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe('npm start (the cluster launcher)', () => {
  it('starts four services, prints their addresses, and Ctrl-C stops every one', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'handoff-start-'));
    const volatileDir = mkdtempSync('/dev/shm/handoff-start-test-');
    const base = await freeBasePort();
    const child = spawn(
      process.execPath,
      [
        join(repoRoot, 'tools/cluster/dist/main.js'),
        '--base-port',
        String(base),
        '--state-dir',
        stateDir,
        '--volatile-dir',
        volatileDir,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      for (let i = 0; i < 300 && !out.includes('cluster is up'); i++)
        await new Promise((r) => setTimeout(r, 50));
      expect(out).toContain('Handoff local cluster is up');
      expect(out).toContain(`migrator  127.0.0.1:${base}`);
      expect(out).toContain(`vmm-b     127.0.0.1:${base + 202}`);
      expect(out).toContain(`Mutual TLS: the CA and certificates are in ${join(stateDir, 'tls')}`);
      const pids = [...out.matchAll(/"pid":(\d+)/g)].map((m) => Number(m[1]));
      expect(new Set(pids).size).toBeGreaterThanOrEqual(4);
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(out).toContain('cluster stopped.');
      for (const pid of new Set(pids)) expect(isAlive(pid)).toBe(false);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(volatileDir, { recursive: true, force: true });
    }
  });
});

/** Whether `port` on 127.0.0.1 can be listened on right now. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A `--base-port` whose four ports (base, +100, +201, +202) are free now, below Linux's
 * ephemeral range (32768 and up), where the other tests' servers and connections get theirs.
 */
async function freeBasePort(): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const base = 10000 + Math.floor(Math.random() * 22000);
    const all = await Promise.all([0, 100, 201, 202].map((d) => portFree(base + d)));
    if (all.every(Boolean)) return base;
  }
  throw new Error('found no free base port below 32768 in 50 tries');
}
