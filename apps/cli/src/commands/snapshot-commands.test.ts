import { describe, expect, it } from 'vitest';
import { emptyMigrationInfo, resolveCapabilities } from '@handoff/qapi';
import type { JobView } from '../api/jobs.js';
import type { SnapshotView } from '../api/snapshots.js';
import { main } from '../main.js';
import type { Io } from '../output/render.js';
import { renderJob } from './jobs.js';
import { renderSaved } from './save.js';
import { pageRuns, pageRunsText } from '../api/snapshots.js';
import { renderFlattened, renderSnapshotList, snapshotFields } from './snapshot.js';
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
      layerPages: [],
      layerPageCount: 0n,
    },
  ],
  deviceStateBytes: 6144n,
  clones: ['vmm-b/kv-1', 'vmm-b/kv-2'],
  parent: '',
  depth: 0,
  storedBytes: (40n << 20n) + 6144n,
};

/** A template saved from a clone of a clone: two layers on `kv`. */
const layer: SnapshotView = {
  ...template,
  id: '1c0e3c52-5f0e-4a57-9a53-0d0c1c2f3e4b',
  name: 'kv-v3',
  parent: 'kv-v2',
  depth: 2,
  clones: [],
  storedBytes: (3n << 12n) + 6144n,
  blocks: [
    {
      ...template.blocks[0]!,
      regionId: 'r-3',
      regionName: 'kv-v3-ram0',
      storedBytes: 3n << 12n,
      layerPages: [
        [2, 2],
        [11, 1],
      ],
      layerPageCount: 3n,
    },
  ],
};
const middle: SnapshotView = { ...layer, name: 'kv-v2', parent: 'kv', depth: 1 };

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

  it('list shows each snapshot’s parent and depth', () => {
    const text = renderSnapshotList([template, middle, layer]);
    expect(text).toMatch(
      /^NAME +KIND +TEMPLATE +VM +MEMORY +STORED +CLONES +PARENT +DEPTH +CREATED$/m,
    );
    expect(text).toMatch(/^kv +bypass +yes +kv@vmm-a +256 MiB +40\.0 MiB +2 +- +0 +2026/m);
    expect(text).toMatch(/^kv-v2 +bypass +yes +kv@vmm-a +256 MiB +18 KiB +0 +kv +1 +2026/m);
    expect(text).toMatch(/^kv-v3 +bypass +yes +kv@vmm-a +256 MiB +18 KiB +0 +kv-v2 +2 +2026/m);
  });

  it('show of a layer prints its parent chain and the pages each block holds', () => {
    const text = renderTemplate(layer, [], [middle, template]);
    expect(text).toMatch(
      /^parent: +kv-v2 \(a layer, depth 2: kv-v3 -> kv-v2 -> kv; its blocks hold only the pages that differ from its parent\)$/m,
    );
    expect(text).toMatch(
      /^block ram0: +0x80000000 256 MiB, region kv-v3-ram0 \(owned by the snapshot\), 12 KiB stored; layer pages: 3 of 65536 \(2-3, 11\), the rest from kv-v2$/m,
    );
    // What clones share is the whole chain's stored pages, not the layer's alone.
    expect(text).toMatch(
      /^shared: 40\.0 MiB stored once for every clone \(this layer's 18 KiB and its parents' pages\)/m,
    );
    const standalone = renderTemplate(template, []);
    expect(standalone).toMatch(/^parent: +-$/m);
    expect(standalone).not.toMatch(/layer pages/);
    // Without the chain looked up, the parent alone.
    expect(snapshotFields(layer)).toContainEqual([
      'parent',
      expect.stringContaining('depth 2: kv-v3 -> kv-v2;'),
    ]);
  });

  it('flatten prints what it made from what, and that the original stays', () => {
    const flat: SnapshotView = { ...template, name: 'kv-flat', kind: 'full', clones: [] };
    const text = renderFlattened(layer, flat);
    expect(text).toMatch(
      /^flattened template kv-v3 \(depth 2\) into template kv-flat: standalone, 256 MiB of memory, 40\.0 MiB stored; kv-v3 stays$/m,
    );
    expect(text).toMatch(/^parent: +-$/m);
  });

  it('reads layer bitmaps as page runs (LSB first), shortening long lists', () => {
    expect(pageRuns(new Uint8Array([0b1000_1100, 0b0000_1001]), 12)).toEqual([
      [2, 2],
      [7, 2],
      [11, 1],
    ]);
    expect(pageRuns(new Uint8Array([0xff]), 8)).toEqual([[0, 8]]);
    expect(pageRuns(new Uint8Array(0), 8)).toEqual([]);
    expect(pageRunsText([[0, 1]])).toBe('0');
    expect(
      pageRunsText(
        Array.from({ length: 10 }, (_, i) => [i * 2, 1] as [number, number]),
        3,
      ),
    ).toBe('0, 2, 4, ... and 7 more runs');
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
    ['snapshot', /list[\s\S]*show[\s\S]*flatten[\s\S]*delete[\s\S]*export[\s\S]*import/],
    ['template', /create[\s\S]*list[\s\S]*show[\s\S]*flatten[\s\S]*delete/],
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
    ['snapshot', 'vmctl snapshot flatten kv-layer3 --as kv-flat'],
    ['template', 'vmctl template flatten kv-v3 --as kv-flat'],
  ])('%s flatten --help explains layers, the copy and that the original stays', async (c, ex) => {
    const r = await vmctl(c, 'flatten', '--help');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/--as <(snapshot|template)>/);
    expect(r.out).toMatch(/hold only the pages the clone wrote/);
    expect(r.out).toMatch(/original and its\s+parents stay/);
    expect(r.out).toContain(ex);
  });

  it.each([
    [['snapshot', 'flatten', 'kv-v3'], /required option '--as <snapshot>' not specified/],
    [['template', 'flatten', 'kv-v3'], /required option '--as <template>' not specified/],
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
