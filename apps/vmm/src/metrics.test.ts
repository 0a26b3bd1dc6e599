import { describe, expect, it } from 'vitest';
import { parseExposition, sampleValue, ServiceMetrics } from '@handoff/service';
import { registerVmmMetrics } from './metrics.js';
import type { MigrationManager } from './migration/index.js';
import type { VmState } from './model/types.js';
import type { VmHost } from './vm/host.js';
import type { Vm } from './vm/vm.js';

/** A VM as the metrics read it: its state, instructions and MIPS. */
class FakeVm {
  constructor(
    public currentState: VmState,
    public instret: number,
    public mips = 0,
    readonly bootedHere = false,
  ) {}
  retiredInstructions(): number {
    return this.instret;
  }
  currentMips(): number {
    return this.mips;
  }
}

/** The parts of a VmHost and a MigrationManager the metrics use, over fake VMs. */
function fakeVmm(vms: FakeVm[]) {
  const listeners = new Set<() => void>();
  const leaveListeners = new Set<(vm: Vm) => void>();
  const host = {
    forEachVm: (fn: (vm: Vm) => void) => vms.forEach((vm) => fn(vm as unknown as Vm)),
    onVmsChanged: (l: () => void) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    onVmLeft: (l: (vm: Vm) => void) => {
      leaveListeners.add(l);
      return () => leaveListeners.delete(l);
    },
    counts: () => ({ total: vms.length, running: 0, vcpuThreads: 2 }),
  };
  const migrations = {
    preparations: {} as { onArrivalEnded?: (how: 'arrived' | 'failed' | 'dropped') => void },
  } as {
    onMigrationEnded?: (outcome: string) => void;
    preparations: { onArrivalEnded?: (how: 'arrived' | 'failed' | 'dropped') => void };
  };
  const metrics = new ServiceMetrics('vmm', { processMetrics: false });
  registerVmmMetrics(
    metrics.registry,
    host as unknown as VmHost,
    migrations as unknown as MigrationManager,
  );
  return {
    metrics,
    migrations,
    changed: () => listeners.forEach((l) => l()),
    left: (vm: FakeVm) => leaveListeners.forEach((l) => l(vm as unknown as Vm)),
    scrape: async () => parseExposition(await metrics.scrape()),
  };
}

describe('vmm metrics', () => {
  it('reports VMs by state, read when scraped, with 0 for empty states', async () => {
    const vms = [new FakeVm('running', 0), new FakeVm('running', 0), new FakeVm('paused', 0)];
    const vmm = fakeVmm(vms);
    let s = await vmm.scrape();
    expect(sampleValue(s, 'handoff_vms', { state: 'running' })).toBe(2);
    expect(sampleValue(s, 'handoff_vms', { state: 'paused' })).toBe(1);
    expect(sampleValue(s, 'handoff_vms', { state: 'crashed' })).toBe(0);
    vms[0]!.currentState = 'powered-off';
    vms.pop();
    s = await vmm.scrape();
    expect(sampleValue(s, 'handoff_vms', { state: 'running' })).toBe(1);
    expect(sampleValue(s, 'handoff_vms', { state: 'paused' })).toBe(0);
    expect(sampleValue(s, 'handoff_vms', { state: 'powered-off' })).toBe(1);
    expect(s.find((x) => x.name === 'handoff_vms')?.labels.service).toBe('vmm');
  });

  it('counts instructions retired here only, and never goes back when a VM leaves', async () => {
    // An arriving VM brings the instructions it retired elsewhere: they are its baseline.
    const arrived = new FakeVm('running', 1_000_000);
    const vms = [arrived];
    const vmm = fakeVmm(vms);
    const total = async () =>
      sampleValue(await vmm.scrape(), 'handoff_guest_instructions_total', {});
    expect(await total()).toBe(0);
    arrived.instret += 500;
    expect(await total()).toBe(500);
    // A clone reads 0 until its vCPU thread loaded its state: its first non-zero read is its
    // baseline.
    const created = new FakeVm('running', 0);
    vms.push(created);
    vmm.changed(); // the host tells of a new VM: it is read now
    created.instret = 7_000_000;
    vmm.changed();
    created.instret += 300;
    arrived.instret += 200;
    expect(await total()).toBe(1000);
    // Migrated away: what it retired since the last read is taken as it leaves.
    arrived.instret += 50;
    vms.shift();
    vmm.left(arrived);
    expect(await total()).toBe(1050);
    created.instret += 100;
    expect(await total()).toBe(1150);
    // A VM booted here counts from 0, even when it was first read long after it started.
    vms.push(new FakeVm('running', 5000, 0, true));
    expect(await total()).toBe(6150);
  });

  it('sums the MIPS of all VMs and counts migrations by direction and outcome', async () => {
    const vmm = fakeVmm([new FakeVm('running', 0, 120.5), new FakeVm('running', 0, 30)]);
    vmm.migrations.onMigrationEnded!('completed');
    vmm.migrations.preparations.onArrivalEnded!('failed');
    vmm.migrations.preparations.onArrivalEnded!('failed');
    vmm.migrations.preparations.onArrivalEnded!('arrived');
    const s = await vmm.scrape();
    expect(sampleValue(s, 'handoff_guest_mips')).toBe(150.5);
    expect(sampleValue(s, 'handoff_vcpu_threads')).toBe(2);
    const migrations = (direction: string, outcome: string) =>
      sampleValue(s, 'handoff_vmm_migrations_total', { direction, outcome });
    expect(migrations('outgoing', 'completed')).toBe(1);
    expect(migrations('incoming', 'failed')).toBe(2);
    expect(migrations('incoming', 'completed')).toBe(1);
  });

  it('scrapes 1000 VMs with one line per state, not per VM', async () => {
    const vms = Array.from({ length: 1000 }, (_, i) => new FakeVm('running', i + 1, 1));
    const vmm = fakeVmm(vms);
    await vmm.scrape();
    for (const vm of vms) vm.instret += 10;
    const text = await vmm.metrics.scrape();
    const s = parseExposition(text);
    expect(sampleValue(s, 'handoff_vms', { state: 'running' })).toBe(1000);
    expect(sampleValue(s, 'handoff_guest_instructions_total')).toBe(10_000);
    expect(sampleValue(s, 'handoff_guest_mips')).toBe(1000);
    expect(text.split('\n').filter((l) => l.startsWith('handoff_vms{')).length).toBe(6);
  });
});
