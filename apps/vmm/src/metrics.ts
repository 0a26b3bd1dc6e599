import { Counter, Gauge, type Registry } from '@handoff/service';
import type { MigrationManager } from './migration/index.js';
import type { VmState } from './model/types.js';
import type { Vm } from './vm/vm.js';
import type { VmHost } from './vm/host.js';

/** Every VM state, so `handoff_vms` reports 0 for the states no VM is in. */
const VM_STATES: readonly VmState[] = [
  'created',
  'running',
  'paused',
  'powered-off',
  'crashed',
  'postmigrate',
];

/**
 * Instructions retired by guests while they ran on this vmm, as a monotonic total. Each VM is
 * read (one atomic load) at every scrape, every change of the VM set and when it leaves. A VM
 * booted here counts from 0; for one that arrived with a state (migration, restore, clone) the
 * first read that is not 0 is its baseline (it reads 0 until its vCPU thread loaded its state),
 * so what it retired elsewhere (on the source, or in the template a clone came from) is not
 * counted here, nor what it ran between its arrival and that first read (the VM-set notice
 * comes about 20 ms after it arrived).
 */
export class GuestInstructionCounter {
  private readonly seen = new WeakMap<Vm, number>();
  private total = 0;

  constructor(private readonly host: VmHost) {}

  /** Adds what every VM retired since its last read; returns the total. */
  refresh(): number {
    this.host.forEachVm((vm) => this.read(vm));
    return this.total;
  }

  /** Takes a VM's last count as it leaves. */
  left(vm: Vm): void {
    this.read(vm);
    this.seen.delete(vm);
  }

  private read(vm: Vm): void {
    const now = vm.retiredInstructions();
    if (now === 0) return;
    const last = this.seen.get(vm) ?? (vm.bootedHere ? 0 : undefined);
    if (last !== undefined && now > last) this.total += now - last;
    this.seen.set(vm, now);
  }
}

/**
 * Registers the vmm's metrics on `registry`: VMs by state, guest instructions and MIPS, and
 * vCPU threads, all read from the VM host when scraped (one pass over the VMs, no per-VM
 * allocation); incoming and outgoing migrations counted as they end.
 */
export function registerVmmMetrics(
  registry: Registry,
  host: VmHost,
  migrations: MigrationManager,
): void {
  const byState = new Map<VmState, number>();
  new Gauge({
    name: 'handoff_vms',
    help: 'VMs on this vmm by state (read when scraped)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      for (const s of VM_STATES) byState.set(s, 0);
      host.forEachVm((vm) => {
        const s = vm.currentState;
        byState.set(s, (byState.get(s) ?? 0) + 1);
      });
      for (const [state, n] of byState) this.set({ state }, n);
    },
  });
  const instructions = new GuestInstructionCounter(host);
  host.onVmsChanged(() => instructions.refresh());
  host.onVmLeft((vm) => instructions.left(vm));
  new Counter({
    name: 'handoff_guest_instructions_total',
    help: 'instructions guests retired while running on this vmm (all VMs together)',
    registers: [registry],
    collect() {
      const total = instructions.refresh();
      this.reset();
      this.inc(total);
    },
  });
  new Gauge({
    name: 'handoff_guest_mips',
    help: 'million instructions per second of all running guests together, over the last second',
    registers: [registry],
    collect() {
      const now = performance.now();
      let mips = 0;
      host.forEachVm((vm) => {
        mips += vm.currentMips(now);
      });
      this.set(mips);
    },
  });
  new Gauge({
    name: 'handoff_vcpu_threads',
    help: 'vCPU threads of this vmm (each runs many VMs)',
    registers: [registry],
    collect() {
      this.set(host.counts().vcpuThreads);
    },
  });
  const ended = new Counter({
    name: 'handoff_vmm_migrations_total',
    help:
      'migrations of this vmm that ended, by direction (incoming, outgoing) and outcome ' +
      '(completed, failed, cancelled; incoming also dropped)',
    labelNames: ['direction', 'outcome'],
    registers: [registry],
  });
  migrations.onMigrationEnded = (outcome) => ended.inc({ direction: 'outgoing', outcome });
  // An arrival that was given up before anything moved (cancelled, token expired) is `dropped`.
  migrations.preparations.onArrivalEnded = (how) =>
    ended.inc({ direction: 'incoming', outcome: how === 'arrived' ? 'completed' : how });
}
