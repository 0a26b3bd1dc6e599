/**
 * Post-copy across two hosts, the way a user runs it: `npm start -- --hosts 2` (host-1:
 * memstore, vmm-a, vmm-b; host-2: memstore-2, vmm-c) and vmctl. A VM whose RAM is a shared
 * region of host-1 moves to vmm-c with `--postcopy`: it runs there at once on a lazy region of
 * memstore-2, which fetches the pages from memstore-1 on demand and in the background; at the
 * end host-1's copy is gone. Killing memstore-1 during the fill pauses it (postcopy-paused), and
 * `vmctl migrate --recover` completes it, with the guest's memory consistent.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Clients, operatorTls, vms } from '@handoff/cli/client';
import { putKeys, startCluster, wrongKeys, type Cluster } from '@handoff/cluster';
import { checkAbConsistency } from '@handoff/vmm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vmctlRunner, waitForVmms, type VmctlResult } from './helpers/vmctl.js';

const MiB = 1024 * 1024;
/** Offset in main RAM of the range ab rewrites (guest 0x80100000). */
const AB_START = 0x100000;

/** What `vmctl migrate --output json` prints of the job (the fields checked here). */
interface JobJson {
  job: {
    info: {
      status: string;
      downtime?: number;
      ram?: { total: number };
      route?: { 'lease-move': string };
      postcopy?: {
        'postcopy-requests': number;
        'background-pages': number;
        'present-pages': number;
        'fill-time': number;
      };
      timeline?: { stopped: number; 'target-running': number };
      'error-desc'?: string;
    };
    outcome?: { where: string; vmm: string };
  };
}

/** A region as `vmctl region show --output json` prints it. */
interface RegionJson {
  region: { name: string; path: string; lease: { holder: string } | null };
}

describe('post-copy across two hosts (npm start -- --hosts 2, vmctl)', () => {
  let cluster: Cluster;
  let stateDir: string;
  let volatileDir: string;
  let env: NodeJS.ProcessEnv;
  let host2Env: NodeJS.ProcessEnv;
  let vmctl: (...args: string[]) => Promise<VmctlResult>;
  let onHost2: (...args: string[]) => Promise<VmctlResult>;
  let c: Clients;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'handoff-postcopy-'));
    volatileDir = mkdtempSync('/dev/shm/handoff-postcopy-');
    cluster = await startCluster({
      stateDir,
      volatileDir,
      ports: { memstore: 0, migrator: 0, vmms: { 'vmm-a': 0, 'vmm-b': 0 } },
      extraHosts: [{ memstorePort: 0, vmms: { 'vmm-c': 0 } }],
      logLevel: 'warn',
    });
    env = {
      ...process.env,
      HANDOFF_MEMSTORE_ADDR: cluster.memstore,
      HANDOFF_MIGRATOR_ADDR: cluster.migrator,
      HANDOFF_TLS_DIR: cluster.tlsDir!,
      HANDOFF_OUTPUT: 'table',
    };
    host2Env = { ...env, HANDOFF_MEMSTORE_ADDR: cluster.hosts[1]!.memstore };
    vmctl = vmctlRunner(() => env).run;
    onHost2 = vmctlRunner(() => host2Env).run;
    c = new Clients({
      memstore: cluster.memstore,
      migrator: cluster.migrator,
      timeoutMs: 30_000,
      tls: operatorTls({ HANDOFF_TLS_DIR: cluster.tlsDir! }),
    });
    await waitForVmms(vmctl, 3);
  });

  afterAll(async () => {
    c?.close();
    await cluster?.stop();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(volatileDir, { recursive: true, force: true });
    rmSync(`${volatileDir}-host-2`, { recursive: true, force: true });
  });

  const ok = (r: VmctlResult): VmctlResult => {
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    return r;
  };
  const migrateJson = async (...args: string[]): Promise<JobJson> =>
    JSON.parse(ok(await vmctl('migrate', ...args, '--output', 'json')).stdout) as JobJson;
  const region = async (
    run: (...a: string[]) => Promise<VmctlResult>,
    name: string,
  ): Promise<RegionJson | null> => {
    const r = await run('region', 'show', name, '--output', 'json');
    return r.code === 0 ? (JSON.parse(r.stdout) as RegionJson) : null;
  };

  /** Pauses `name` (on vmm-c), checks ab's range in host-2's region file, resumes it. */
  async function expectAbConsistent(name: string, pages: number): Promise<void> {
    ok(await vmctl('vm', 'pause', name));
    const file = (await region(onHost2, `${name}-ram0`))!.region.path;
    const ram = readFileSync(file).subarray(AB_START, AB_START + pages * 4096);
    const r = checkAbConsistency(new Uint8Array(ram.buffer, ram.byteOffset, ram.length));
    expect(r.consistent, r.description).toBe(true);
    ok(await vmctl('vm', 'resume', name));
  }

  it('kvserver moves host-1 → host-2 with --postcopy: keys kept, host-1 copy deleted', async () => {
    ok(
      await vmctl(
        'vm',
        'create',
        'kv1',
        '--guest',
        'kvserver',
        '-m',
        '64M',
        '--shared',
        '--vmm',
        'vmm-a',
      ),
    );
    const keys = new Map(Array.from({ length: 20 }, (_, i) => [`k${i}`, `v${i * 7}`]));
    await putKeys(c, await vms.find(c, 'kv1'), keys);

    // Without --postcopy the target cannot map host-1's files: refused, and says what to do.
    const refused = await vmctl('migrate', 'kv1', '--to', 'vmm-c');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/host-2.*--postcopy/);

    const { job } = await migrateJson('kv1', '--to', 'vmm-c', '--postcopy');
    expect(job.info.status, job.info['error-desc']).toBe('completed');
    expect(job.outcome).toMatchObject({ where: 'target', vmm: 'vmm-c' });
    expect(job.info.route?.['lease-move']).toBe('page-source');
    expect(job.info.postcopy?.['present-pages']).toBe((64 * MiB) / 4096);
    expect(job.info.postcopy?.['fill-time']).toBeGreaterThan(0);
    expect(job.info.downtime).toBeGreaterThan(0);

    const vm = await vms.find(c, 'kv1');
    expect(vm.vmm).toBe('vmm-c');
    expect(await wrongKeys(c, vm, keys)).toEqual([]);
    // host-1's copy is gone; host-2's region is an ordinary region leased to the VM.
    expect(await region(vmctl, 'kv1-ram0')).toBeNull();
    const here = await region(onHost2, 'kv1-ram0');
    expect(here?.region.lease?.holder).toBe('vmm-c/kv1');
    // Nothing waits for a source any more: --recover says so instead of pretending.
    const late = await vmctl('migrate', 'kv1', '--recover');
    expect(late.code).not.toBe(0);
    expect(late.stderr).toMatch(/nothing of VM kv1 waits for a source/);
    ok(await vmctl('vm', 'destroy', 'kv1'));
    expect(await region(onHost2, 'kv1-ram0')).toBeNull(); // the VM owned it
  });

  it('an ab guest rewriting all of its 128 MiB moves by post-copy, consistent', async () => {
    const pages = ((128 - 9) * MiB) / 4096;
    ok(
      await vmctl(
        ...['vm', 'create', 'ab1', '--guest', 'ab', '-m', '128M', '--shared', '--vmm', 'vmm-a'],
        ...['--arg', 'ab.start=0x80100000', '--arg', `ab.pages=${pages}`, '--arg', 'ab.every=1'],
      ),
    );
    await new Promise((r) => setTimeout(r, 500)); // it runs and dirties everything
    const { job } = await migrateJson('ab1', '--to', 'vmm-c', '--postcopy');
    expect(job.info.status, job.info['error-desc']).toBe('completed');
    // the guest touched pages before they came in the background, and waited for them
    expect(job.info.postcopy?.['postcopy-requests']).toBeGreaterThan(0);
    await expectAbConsistent('ab1', pages);
    ok(await vmctl('vm', 'destroy', 'ab1'));
  });

  it('memstore-1 killed during the fill: postcopy-paused, then --recover completes it, consistent', async () => {
    // ab rewrites 1 MiB; the rest of its 64 MiB comes in the background, slowly enough to kill
    // its source in the middle.
    const pages = 256;
    ok(
      await vmctl(
        ...['vm', 'create', 'ab2', '--guest', 'ab', '-m', '64M', '--shared', '--vmm', 'vmm-a'],
        ...['--arg', 'ab.start=0x80100000', '--arg', `ab.pages=${pages}`, '--arg', 'ab.every=1'],
      ),
    );
    // A slow background fill (8 MB/s: 8 s for 64 MiB) leaves time to kill its source.
    const started = JSON.parse(
      ok(
        await vmctl(
          ...['migrate', 'ab2', '--to', 'vmm-c', '--postcopy', '--max-postcopy-bandwidth', '8M'],
          ...['--detach', '--output', 'json'],
        ),
      ).stdout,
    ) as JobJson & { job: { id: string } };
    const id = started.job.id;
    const status = async (): Promise<JobJson['job']> =>
      (JSON.parse(ok(await vmctl('jobs', 'show', id, '--output', 'json')).stdout) as JobJson).job;
    const waitFor = async (want: string, ms: number): Promise<JobJson['job']> => {
      const until = Date.now() + ms;
      for (;;) {
        const j = await status();
        if (j.info.status === want) return j;
        if (Date.now() > until) throw new Error(`job ${id} is ${j.info.status}, not ${want}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await waitFor('postcopy-active', 20_000);
    // The guest runs on vmm-c now, waiting on pages that have not come; kill their source.
    const memstore1 = cluster.services.find((s) => s.name === 'memstore')!;
    process.kill(memstore1.pid, 'SIGKILL');
    await waitFor('postcopy-paused', 20_000);
    // The VM says so too, and how to get out.
    const shown = ok(await vmctl('vm', 'show', 'ab2'));
    expect(shown.stdout).toMatch(/post-copy: .*postcopy-paused.*vmctl migrate ab2 --recover/);
    const listed = ok(await vmctl('vm', 'list'));
    expect(listed.stdout).toMatch(/ab2 .*running \(postcopy-paused\)/);
    // memstore-1 is started again by the cluster (same files, same port): recover.
    const until = Date.now() + 20_000;
    let recovered: VmctlResult;
    for (;;) {
      recovered = await vmctl('migrate', 'ab2', '--recover');
      if (recovered.code === 0 || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    ok(recovered);
    expect(recovered.stdout).toMatch(/ab2-ram0/);
    const done = await waitFor('completed', 60_000);
    expect(done.info.postcopy?.['present-pages']).toBe((64 * MiB) / 4096);
    // Every page here: the VM shows no post-copy any more.
    expect(ok(await vmctl('vm', 'show', 'ab2')).stdout).not.toMatch(/post-copy/);
    await expectAbConsistent('ab2', pages);
    expect(await region(vmctl, 'ab2-ram0')).toBeNull();
    ok(await vmctl('vm', 'destroy', 'ab2'));
  });

  it('the source vmm killed during the fill changes nothing for the guest: the fill completes, consistent', async () => {
    const pages = 256;
    ok(
      await vmctl(
        ...['vm', 'create', 'ab3', '--guest', 'ab', '-m', '64M', '--shared', '--vmm', 'vmm-a'],
        ...['--arg', 'ab.start=0x80100000', '--arg', `ab.pages=${pages}`, '--arg', 'ab.every=1'],
      ),
    );
    const started = JSON.parse(
      ok(
        await vmctl(
          ...['migrate', 'ab3', '--to', 'vmm-c', '--postcopy', '--max-postcopy-bandwidth', '8M'],
          ...['--detach', '--output', 'json'],
        ),
      ).stdout,
    ) as { job: { id: string } };
    const id = started.job.id;
    const job = async (): Promise<JobJson['job']> =>
      (JSON.parse(ok(await vmctl('jobs', 'show', id, '--output', 'json')).stdout) as JobJson).job;
    const until = Date.now() + 20_000;
    while ((await job()).info.status !== 'postcopy-active') {
      if (Date.now() > until) throw new Error('the migration never went postcopy-active');
      await new Promise((r) => setTimeout(r, 100));
    }
    // vmm-a handed the memory to memstore-1 at the stop: killing it costs the guest nothing.
    process.kill(cluster.services.find((s) => s.name === 'vmm-a')!.pid, 'SIGKILL');
    // The job ends with where the VM is (the source's stream broke, so the migrator asks).
    let end: JobJson['job'];
    for (;;) {
      end = await job();
      if (['completed', 'failed', 'cancelled'].includes(end.info.status)) break;
      if (Date.now() > until + 20_000) throw new Error(`job ${id} did not end`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(end.outcome).toMatchObject({ where: 'target', vmm: 'vmm-c' });
    // The fill goes on without vmm-a and completes; host-1's copy goes.
    const done = Date.now() + 30_000;
    while ((await region(vmctl, 'ab3-ram0')) !== null) {
      if (Date.now() > done) throw new Error("host-1's copy of ab3-ram0 is still there");
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(ok(await vmctl('vm', 'show', 'ab3')).stdout).not.toMatch(/post-copy/);
    await expectAbConsistent('ab3', pages);
    ok(await vmctl('vm', 'destroy', 'ab3'));
  });
});
