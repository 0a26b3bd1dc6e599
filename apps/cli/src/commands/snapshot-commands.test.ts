import { describe, expect, it } from 'vitest';
import { emptyMigrationInfo, resolveCapabilities } from '@handoff/qapi';
import type { JobView } from '../api/jobs.js';
import type { SnapshotView } from '../api/snapshots.js';
import { main } from '../main.js';
import type { Io } from '../output/render.js';
import { renderJob } from './jobs.js';
import { renderSaved } from './save.js';
import { renderCloned, renderTemplate } from './template.js';

/** Runs vmctl in-process; the cluster is unreachable on purpose (port 9), so only what needs no call works. */
async function vmctl(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: Io = { out: (t) => void (out += t), err: (t) => void (err += t) };
  const code = await main([...argv, '--insecure'], io, {
    HANDOFF_MIGRATOR_ADDR: '127.0.0.1:9',
    HANDOFF_MEMSTORE_ADDR: '127.0.0.1:9',
  });
  return { code, out, err };
}

const job = (over: Partial<JobView>): JobView => ({
  id: 'sav-1a2b3c4d',
  kind: 'save',
  vm: 'kv',
  sourceVmm: 'vmm-a',
  targetVmm: '',
  info: { ...emptyMigrationInfo('completed'), totalTimeMs: 4 },
  capabilities: resolveCapabilities({}),
  parameters: {},
  createdAt: undefined,
  finishedAt: undefined,
  children: [],
  outcome: undefined,
  snapshotResult: {
    snapshot: 'kv-20261125-221000',
    vms: [],
    pauseUs: 812,
    durationUs: 2100,
    bytes: 8192,
    runningAfterUs: [],
  },
  ...over,
});

const template: SnapshotView = {
  id: '0b9e3c52-5f0e-4a57-9a53-0d0c1c2f3e4a',
  name: 'kv',
  kind: 'bypass',
  template: true,
  createdAt: '2026-11-25T22:10:00.000Z',
  vm: 'kv',
  vmm: 'vmm-a',
  blocks: [
    {
      id: 'ram0',
      guestBase: 0x8000_0000,
      size: 256n << 20n,
      regionId: 'r-1',
      regionName: 'kv-ram0',
      owned: true,
      storedBytes: 40n << 20n,
    },
  ],
  deviceStateBytes: 6144n,
  clones: ['vmm-b/kv-1', 'vmm-b/kv-2'],
  parent: '',
  storedBytes: (40n << 20n) + 6144n,
};

describe('vmctl snapshot, template and clone output', () => {
  it('save prints the snapshot, its kind, the pause and the bytes written', () => {
    const text = renderSaved(
      job({}),
      { ...template, name: 'kv-20261125-221000', template: false },
      false,
    );
    expect(text).toMatch(/^snapshot: +kv-20261125-221000$/m);
    expect(text).toMatch(/^kind: +bypass: the VM's regions sealed in place, nothing copied$/m);
    expect(text).toMatch(/^guest paused: +0\.812 ms$/m);
    expect(text).toMatch(/^written: +8 KiB \(device state plus copied pages\)$/m);
    const unknown = renderSaved(job({}), new Error('connect ECONNREFUSED'), true);
    expect(unknown).toMatch(/^kind: +unknown \(memstore did not say: connect ECONNREFUSED\)$/m);
    expect(unknown).toMatch(/^vm: +kv on vmm-a, destroyed after the save$/m);
  });

  it('clone prints the VMs and the latency p50/p99', () => {
    const text = renderCloned(
      job({
        id: 'cln-1',
        kind: 'clone',
        vm: '',
        sourceVmm: '',
        targetVmm: 'vmm-b',
        snapshotResult: {
          snapshot: 'kv',
          vms: ['kv-1', 'kv-2', 'kv-3'],
          pauseUs: 0,
          durationUs: 5000,
          bytes: 0,
          runningAfterUs: [1200, 900, 3000],
        },
      }),
    );
    expect(text).toMatch(/^vms: +3 on vmm-b: kv-1 kv-2 kv-3$/m);
    expect(text).toMatch(/^running after: +p50 1\.200 ms, p99 3\.000 ms$/m);
  });

  it('template show sets what is stored once against what each clone owns', () => {
    const text = renderTemplate(template, [
      {
        holder: 'vmm-b/kv-1',
        vm: 'kv-1',
        vmm: 'vmm-b',
        state: 'running',
        pssBytes: 12n << 20n,
        privateDirtyBytes: 2n << 20n,
        rssBytes: 42n << 20n,
        error: '',
      },
      {
        holder: 'vmm-b/kv-2',
        vm: 'kv-2',
        vmm: 'vmm-b',
        state: '-',
        pssBytes: null,
        privateDirtyBytes: null,
        rssBytes: null,
        error: 'vmm-b has no VM kv-2',
      },
    ]);
    expect(text).toMatch(/^clones: +2: vmm-b\/kv-1, vmm-b\/kv-2$/m);
    expect(text).toMatch(
      /^block ram0: +0x80000000 256 MiB, region kv-ram0 \(owned by the snapshot\), 40 MiB stored$/m,
    );
    expect(text).toMatch(/^shared: 40\.0 MiB stored once for every clone/m);
    expect(text).toMatch(/^kv-1 +vmm-b +running +12 MiB +2 MiB +42 MiB$/m);
    expect(text).toMatch(/^kv-2 +vmm-b +- +- +- +- +vmm-b has no VM kv-2$/m);
    expect(text).toMatch(/^total of 1 clone\(s\): PSS 12 MiB, private dirty 2 MiB, RSS 42 MiB$/m);
  });

  it('jobs show prints a snapshot job with what it made, not RAM counters', () => {
    const text = renderJob(job({}));
    expect(text).toMatch(/^vmm: +vmm-a$/m);
    expect(text).toMatch(/^snapshot: +kv-20261125-221000$/m);
    expect(text).not.toMatch(/transferred/);
    const failed = renderJob(
      job({
        info: { ...emptyMigrationInfo('failed'), errorDesc: 'save of VM kv on vmm-a failed: no' },
        snapshotResult: undefined,
      }),
    );
    expect(failed).toMatch(/^error: +save of VM kv on vmm-a failed: no$/m);
  });
});

describe('vmctl snapshot, template and clone command lines', () => {
  it.each([
    ['save', /--as <snapshot>[\s\S]*--full[\s\S]*--stop[\s\S]*Examples:\n {2}vmctl save kv/],
    ['restore', /--name <vm>[\s\S]*--vmm <id>[\s\S]*--paused[\s\S]*vmctl restore before-upgrade/],
    ['snapshot', /list[\s\S]*show[\s\S]*delete[\s\S]*export[\s\S]*import/],
    ['template', /create[\s\S]*list[\s\S]*show[\s\S]*delete/],
    ['clone', /--count <n>[\s\S]*--name-prefix[\s\S]*p50 and p99/],
  ])('%s --help explains what it does, its flags and an example', async (command, shape) => {
    const r = await vmctl(command, '--help');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(shape);
  });

  it('template create --help names both sources and the ready timeout', async () => {
    const r = await vmctl('template', 'create', '--help');
    expect(r.out).toMatch(/--guest <guest>[\s\S]*--memory <size>[\s\S]*--from-vm <vm>/);
    expect(r.out).toMatch(/--ready-timeout <duration>[\s\S]*\(default: "30s"\)/);
    expect(r.out).toContain('vmctl template create kv --guest kvserver --memory 256M');
  });

  it.each([
    [['clone', 'kv', '--count', '0'], /--count 0 is not a number from 1 to 1000/],
    [['clone', 'kv', '--count', 'many'], /--count many is not a number from 1 to 1000/],
    [['template', 'create', 't'], /--guest G --memory SIZE, or --from-vm VM/],
    [['template', 'create', 't', '--guest', 'kvserver'], /--guest needs --memory/],
    [['template', 'create', 't', '--guest', 'kvserver', '--from-vm', 'v'], /one of them/],
    [['template', 'create', 't', '--from-vm', 'v', '--memory', '1G'], /go with --guest/],
    [
      ['template', 'create', 't', '--guest', 'g', '--memory', '1G', '--ready-timeout', 'soon'],
      /--ready-timeout "soon" is not a duration/,
    ],
    [
      ['template', 'create', 't', '--guest', 'g', '--memory', 'lots'],
      /--memory "lots" is not a size/,
    ],
    [['save'], /missing required argument 'vm'/],
  ])('refuses %j with a clear message and exit 2', async (argv, message) => {
    const r = await vmctl(...argv);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
  });

  it('an export to a file that exists needs --force', async () => {
    const r = await vmctl('snapshot', 'export', 'kv', '/');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/\/ exists; pass --force to replace it/);
  });
});
