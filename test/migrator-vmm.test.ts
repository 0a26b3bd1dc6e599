import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrator, vmm } from '@handoff/proto';
import { resolveCapabilities } from '@handoff/qapi';
import { capabilitiesToWire, migrationInfoFromWire } from '@handoff/qapi/wire';
import { createClient, unaryCall } from '@handoff/service';
import { startService, type TestService } from './helpers/services.js';
import { vmctlRunner } from './helpers/vmctl.js';
import { vmSpec } from './helpers/vmm.js';

/**
 * Smoke test of the whole control path with real processes: the migrator
 * coordinating two real vmm instances (private RAM, so no memstore), driven
 * by vmctl. The migration stream itself is tested in apps/vmm. Everything here runs
 * `--insecure` (vmctl with HANDOFF_INSECURE=1), so the plaintext path stays tested; the other
 * cross-process tests run mutual TLS.
 */
describe('vmctl migrate with real vmm instances', () => {
  let mg: TestService;
  let vmmA: TestService;
  let vmmB: TestService;
  let env: NodeJS.ProcessEnv;

  const { run: vmctl, json } = vmctlRunner(() => env);
  const where = async (name: string) =>
    (await json<{ vms: { name: string; vmm: string; state: string }[] }>('vm', 'list')).vms
      .filter((v) => v.name === name)
      .map((v) => `${v.vmm}:${v.state}`);

  beforeAll(async () => {
    mg = await startService('migrator', [
      '--insecure',
      '--heartbeat-interval-ms',
      '200',
      '--poll-interval-ms',
      '20',
    ]);
    [vmmA, vmmB] = await Promise.all([
      startService('vmm', ['--insecure', '--id', 'vmm-a', '--migrator', mg.address]),
      startService('vmm', ['--insecure', '--id', 'vmm-b', '--migrator', mg.address]),
    ]);
    env = {
      ...process.env,
      HANDOFF_MIGRATOR_ADDR: mg.address,
      HANDOFF_OUTPUT: 'table',
      HANDOFF_INSECURE: '1',
    };
    const client = createClient(migrator.MigratorServiceClient, mg.address, mg.credentials);
    try {
      for (let i = 0; i < 50; i++) {
        const { vmms } = await unaryCall(client, 'listVmms', {});
        if (vmms.filter((v) => v.alive).length === 2) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      client.close();
    }
  });

  afterAll(async () => {
    await Promise.all([vmmA?.stop(), vmmB?.stop()]);
    await mg?.stop();
  });

  it('moves a running VM back and forth; only one copy runs, the source husk is removed', async () => {
    const created = await vmctl(
      'vm',
      'create',
      'mv1',
      '--guest',
      'ab',
      '--memory',
      '8M',
      '--vmm',
      'vmm-a',
    );
    expect(created.code, created.stderr).toBe(0);
    for (const to of ['vmm-b', 'vmm-a', 'vmm-b']) {
      const r = await vmctl('migrate', 'mv1', '--to', to, '--output', 'json');
      expect(r.code, r.stderr).toBe(0);
      const { job } = JSON.parse(r.stdout) as {
        job: {
          status: string;
          info: {
            status: string;
            'total-time': number;
            downtime: number;
            ram: { transferred: number };
            route: Record<string, unknown>;
            timeline: { stopped: number; 'state-published': number; 'target-running': number };
          };
        };
      };
      expect(job.status).toBe('completed');
      expect(job.info.ram.transferred).toBeGreaterThan(0);
      // How it travelled: private RAM copied on the target's data channel, no lease to move.
      expect(job.info.route).toEqual({
        transport: 'data-channel',
        'lease-move': 'none',
        'state-encoding': 'container',
        'target-prebuilt': true,
      });
      const t = job.info.timeline;
      expect(t.stopped).toBeGreaterThan(0);
      expect(t['state-published']).toBeGreaterThanOrEqual(t.stopped);
      expect(t['target-running'] - t.stopped).toBeCloseTo(job.info.downtime, 1);
      expect(await where('mv1')).toEqual([`${to}:running`]);
    }
    // The table says the same in words.
    const table = await vmctl('migrate', 'mv1', '--to', 'vmm-a');
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/carried by: +data-channel, no lease to move, container state/);
    expect(table.stdout).toMatch(
      /timeline: +stopped [\d.]+ ms, state out [\d.]+ ms, target running/,
    );
    expect(await where('mv1')).toEqual(['vmm-a:running']);
  }, 120_000);

  it('live-updates every VM of one instance to the other', async () => {
    for (const n of ['lv1', 'lv2']) {
      const r = await vmctl('vm', 'create', n, '--guest', 'ab', '--memory', '8M', '--vmm', 'vmm-b');
      expect(r.code, r.stderr).toBe(0);
    }
    const r = await vmctl('live-update', '--from', 'vmm-b', '--to', 'vmm-a');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/status: +completed/);
    for (const n of ['lv1', 'lv2', 'mv1']) expect(await where(n)).toEqual(['vmm-a:running']);
  }, 120_000);

  it('migrates a VM the moment CreateVm returned: the vmm reported it with the change', async () => {
    const mc = createClient(migrator.MigratorServiceClient, mg.address, mg.credentials);
    const vc = createClient(vmm.VmmServiceClient, vmmA.address, vmmA.credentials);
    try {
      await unaryCall(vc, 'createVm', {
        spec: vmSpec('fresh', 'ab', { memory: 8 * 1024 * 1024 }),
        start: true,
      });
      const { job } = await unaryCall(mc, 'migrate', {
        vm: 'fresh',
        targetVmm: 'vmm-b',
        // the defaults, as vmctl sends them (an empty list turns every capability off)
        capabilities: capabilitiesToWire(resolveCapabilities({})),
        parameters: undefined,
      });
      expect(job!.sourceVmm).toBe('vmm-a');
      let status = '';
      for (let i = 0; i < 500 && !['completed', 'failed', 'cancelled'].includes(status); i++) {
        await new Promise((r) => setTimeout(r, 20));
        status = migrationInfoFromWire(
          (await unaryCall(mc, 'getJob', { id: job!.id })).job!.info!,
        ).status;
      }
      expect(status).toBe('completed');
      expect(await where('fresh')).toEqual(['vmm-b:running']);
      // and straight back, while vmm-a may still be retiring its postmigrate copy
      const back = await vmctl('migrate', 'fresh', '--to', 'vmm-a');
      expect(back.code, back.stderr).toBe(0);
      expect(await where('fresh')).toEqual(['vmm-a:running']);
    } finally {
      mc.close();
      vc.close();
    }
  }, 60_000);
});
