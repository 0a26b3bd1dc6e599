import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '@handoff/cluster';
import { migrator as gpb, vmm as vpb } from '@handoff/proto';
import {
  createClient,
  parseExposition,
  sampleValue,
  unaryCall,
  type MetricSample,
} from '@handoff/service';
import { spinGuestElf, TEST_GUEST_DIR, writeGuest } from './helpers/guest-elf.js';
import { refusal, startService } from './helpers/services.js';
import { vmctlRunner, waitForVmms, type VmctlResult } from './helpers/vmctl.js';

/** One scrape of `http://<address>/metrics`, parsed. */
async function scrape(address: string): Promise<MetricSample[]> {
  const res = await fetch(`http://${address}/metrics`);
  expect(res.status).toBe(200);
  return parseExposition(await res.text());
}

function calls(s: MetricSample[], method: string, code: string): number {
  return sampleValue(s, 'handoff_grpc_server_calls_total', { method, code });
}

describe('Prometheus metrics of every service, in the local cluster', () => {
  let cluster: Cluster;
  let stateDir: string;
  let volatileDir: string;
  let vmctl: (...args: string[]) => Promise<VmctlResult>;
  const guest = writeGuest('spin.elf', spinGuestElf());

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'handoff-metrics-'));
    volatileDir = mkdtempSync('/dev/shm/handoff-metrics-test-');
    cluster = await startCluster({
      stateDir,
      volatileDir,
      ports: { memstore: 0, migrator: 0, vmms: { 'vmm-a': 0, 'vmm-b': 0 } },
      metricsPorts: { memstore: 0, migrator: 0, vmms: { 'vmm-a': 0, 'vmm-b': 0 } },
      guestDir: TEST_GUEST_DIR,
    });
    const env = {
      ...process.env,
      HANDOFF_MEMSTORE_ADDR: cluster.memstore,
      HANDOFF_MIGRATOR_ADDR: cluster.migrator,
      HANDOFF_TLS_DIR: cluster.tlsDir!,
    };
    vmctl = vmctlRunner(() => env).run;
    await waitForVmms(vmctl, 2);
  });

  afterAll(async () => {
    await cluster?.stop();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(volatileDir, { recursive: true, force: true });
  });

  it('gives every service a metrics address of its own', () => {
    expect(Object.keys(cluster.metrics).sort()).toEqual(['memstore', 'migrator', 'vmm-a', 'vmm-b']);
    expect(new Set(Object.values(cluster.metrics)).size).toBe(4);
  });

  it('a bypass migration moves the migrator, vmm and memstore metrics', async () => {
    const created = await vmctl(
      'vm',
      'create',
      'm1',
      '--guest',
      guest,
      '--memory',
      '16M',
      '--shared',
      '--vmm',
      'vmm-a',
    );
    expect(created.code, created.stderr).toBe(0);
    const migrated = await vmctl('migrate', 'm1', '--to', 'vmm-b');
    expect(migrated.code, migrated.stderr).toBe(0);

    const migrator = await scrape(cluster.metrics.migrator!);
    expect(
      sampleValue(migrator, 'handoff_migrations_total', { mode: 'bypass', outcome: 'completed' }),
    ).toBe(1);
    expect(
      sampleValue(migrator, 'handoff_migration_downtime_seconds_count', { mode: 'bypass' }),
    ).toBe(1);
    expect(
      sampleValue(migrator, 'handoff_migration_downtime_seconds_bucket', {
        mode: 'bypass',
        le: '10',
      }),
    ).toBe(1);
    expect(
      sampleValue(migrator, 'handoff_jobs_total', { kind: 'migrate', outcome: 'completed' }),
    ).toBe(1);
    expect(sampleValue(migrator, 'handoff_jobs_running')).toBe(0);
    expect(sampleValue(migrator, 'handoff_registered_vmms', { state: 'alive' })).toBe(2);
    expect(calls(migrator, 'Migrate', 'OK')).toBe(1);
    expect(calls(migrator, 'RegisterVmm', 'OK')).toBeGreaterThanOrEqual(2);
    expect(migrator.find((s) => s.name === 'process_cpu_seconds_total')?.labels.service).toBe(
      'migrator',
    );

    const a = await scrape(cluster.metrics['vmm-a']!);
    const b = await scrape(cluster.metrics['vmm-b']!);
    expect(
      sampleValue(a, 'handoff_vmm_migrations_total', {
        direction: 'outgoing',
        outcome: 'completed',
      }),
    ).toBe(1);
    // The target's stream ends a moment after the source answered.
    await expect
      .poll(async () =>
        sampleValue(await scrape(cluster.metrics['vmm-b']!), 'handoff_vmm_migrations_total', {
          direction: 'incoming',
          outcome: 'completed',
        }),
      )
      .toBe(1);
    expect(sampleValue(b, 'handoff_vms', { state: 'running' })).toBe(1);
    expect(sampleValue(a, 'handoff_vms', { state: 'running' })).toBe(0);
    expect(calls(a, 'CreateVm', 'OK')).toBe(1);
    expect(calls(a, 'MigrateVm', 'OK')).toBe(1);
    expect(calls(b, 'PrepareIncoming', 'OK')).toBe(1);
    expect(sampleValue(b, 'handoff_vcpu_threads')).toBeGreaterThan(0);
    // The spin guest never stops counting: vmm-b sees its instructions go up.
    const before = sampleValue(b, 'handoff_guest_instructions_total');
    await expect
      .poll(async () =>
        sampleValue(await scrape(cluster.metrics['vmm-b']!), 'handoff_guest_instructions_total'),
      )
      .toBeGreaterThan(before);
    expect(
      sampleValue(await scrape(cluster.metrics['vmm-b']!), 'handoff_guest_mips'),
    ).toBeGreaterThan(0);

    const memstore = await scrape(cluster.metrics.memstore!);
    expect(
      sampleValue(memstore, 'handoff_memstore_regions', { kind: 'volatile', state: 'active' }),
    ).toBe(1);
    expect(sampleValue(memstore, 'handoff_memstore_leases', { state: 'held' })).toBe(1);
    expect(sampleValue(memstore, 'handoff_memstore_bytes', { kind: 'reserved' })).toBe(16 << 20);
    expect(calls(memstore, 'CreateRegion', 'OK')).toBe(1);
  });

  it('counts refused calls: no certificate, a bad argument', async () => {
    const ca = readFileSync(join(cluster.tlsDir!, 'ca.pem'));
    const anonymous = grpc.credentials.createSsl(ca);
    const m = createClient(gpb.MigratorServiceClient, cluster.migrator, anonymous);
    const before = calls(await scrape(cluster.metrics.migrator!), 'ListVmms', 'UNAUTHENTICATED');
    try {
      expect((await refusal(unaryCall(m, 'listVmms', {}))).status).toBe('UNAUTHENTICATED');
    } finally {
      m.close();
    }
    const after = calls(await scrape(cluster.metrics.migrator!), 'ListVmms', 'UNAUTHENTICATED');
    expect(after - before).toBe(1);

    const v = createClient(vpb.VmmServiceClient, cluster.vmms['vmm-a']!, anonymous);
    try {
      expect((await refusal(unaryCall(v, 'listVms', {}))).status).toBe('UNAUTHENTICATED');
    } finally {
      v.close();
    }
    expect(calls(await scrape(cluster.metrics['vmm-a']!), 'ListVms', 'UNAUTHENTICATED')).toBe(1);

    const bad = await vmctl('region', 'create', 'Not A Name!', '--size', '1M');
    expect(bad.code).toBe(1);
    expect(calls(await scrape(cluster.metrics.memstore!), 'CreateRegion', 'INVALID_ARGUMENT')).toBe(
      1,
    );
  });

  it('refuses to start on a metrics port in use, saying which', async () => {
    const port = cluster.metrics.memstore!.split(':').pop()!;
    const err = await startService('migrator', ['--metrics-port', port]).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(
      new RegExp(`cannot serve metrics on 127\\.0\\.0\\.1:${port} \\(EADDRINUSE\\)`),
    );
  });
});
