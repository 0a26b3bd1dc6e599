import { ownsVm, type HostedVm, type HostedVms } from './hosted-vm.js';

/** Where a VM runs, by the reports. */
export interface Located {
  readonly vmmId: string;
  readonly vm: HostedVm;
}

interface Entry {
  vm: HostedVm;
  /** When the migrator learned that this instance holds the VM (higher is newer). */
  readonly seq: number;
}

interface InstanceVms {
  /** The reported version; undefined while the set is partial (learned VM by VM). */
  version: number | undefined;
  readonly vms: Map<string, Entry>;
}

/**
 * Which vmm instance holds which VM, from the instances' reports and what the migrator's own
 * jobs moved. Reports come at different times, so two instances may both list a VM for a moment
 * (the target reports its arrival while the source still retires it, or one report is late);
 * the instance that most recently started holding the VM wins. A report keeps the age of the
 * VMs the instance already held, so a late report never makes an old location look new.
 */
export class Placement {
  private readonly sets = new Map<string, InstanceVms>();
  private seq = 0;

  /** Replaces everything known of instance `vmmId` with its report. */
  replace(vmmId: string, report: HostedVms): void {
    const before = this.sets.get(vmmId)?.vms;
    const vms = new Map<string, Entry>();
    for (const vm of report.vms) {
      vms.set(vm.name, { vm, seq: before?.get(vm.name)?.seq ?? ++this.seq });
    }
    this.sets.set(vmmId, { version: report.version, vms });
  }

  /** The version of the last report of `vmmId`; undefined when none is held (or only a part). */
  versionOf(vmmId: string): number | undefined {
    return this.sets.get(vmmId)?.version;
  }

  /** Forgets instance `vmmId` (it expired): its VMs are placed again by its next report. */
  forget(vmmId: string): void {
    this.sets.delete(vmmId);
  }

  /** Instance `vmmId` said it holds `vm` now (outside a report): it becomes its newest place. */
  learn(vmmId: string, vm: HostedVm): void {
    this.setOf(vmmId).vms.set(vm.name, { vm, seq: ++this.seq });
  }

  /** Instance `vmmId` no longer holds `vm` (a job saw it destroyed, before its report came). */
  drop(vmmId: string, name: string): void {
    this.sets.get(vmmId)?.vms.delete(name);
  }

  /**
   * A job moved VM `name` from `from` to `to`: the target holds it now (as the newest place,
   * whether or not its report arrived yet) and the source's copy is `postmigrate` until the
   * source's next report drops it.
   */
  moved(name: string, from: string, to: string): void {
    const source = this.sets.get(from)?.vms.get(name);
    const was = source?.vm;
    if (source !== undefined) source.vm = { ...source.vm, state: 'postmigrate' };
    const state = was !== undefined && ownsVm(was.state) ? was.state : 'running';
    const spec = was?.spec ?? this.sets.get(to)?.vms.get(name)?.vm.spec;
    this.setOf(to).vms.set(name, { vm: { name, spec, state }, seq: ++this.seq });
  }

  /** The instance that owns VM `name`, among the instances `counts` accepts. */
  locate(name: string, counts: (vmmId: string) => boolean): Located | undefined {
    let best: (Located & { seq: number }) | undefined;
    for (const [vmmId, set] of this.sets) {
      const e = set.vms.get(name);
      if (e === undefined || !ownsVm(e.vm.state) || !counts(vmmId)) continue;
      if (best === undefined || e.seq > best.seq) best = { vmmId, vm: e.vm, seq: e.seq };
    }
    return best === undefined ? undefined : { vmmId: best.vmmId, vm: best.vm };
  }

  /**
   * The VMs instance `vmmId` owns (those no other instance holds more recently), by name;
   * undefined when no report of it is held.
   */
  vmsOf(vmmId: string, counts: (vmmId: string) => boolean): HostedVm[] | undefined {
    const set = this.sets.get(vmmId);
    if (set === undefined || set.version === undefined) return undefined;
    return [...set.vms.values()]
      .filter((e) => this.locate(e.vm.name, counts)?.vmmId === vmmId)
      .map((e) => e.vm)
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * How many VMs instance `vmmId` holds by what the migrator knows (a `postmigrate` copy being
   * retired does not count); undefined when it knows nothing of the instance's VMs.
   */
  countOf(vmmId: string): number | undefined {
    const set = this.sets.get(vmmId);
    if (set === undefined) return undefined;
    return [...set.vms.values()].filter((e) => ownsVm(e.vm.state)).length;
  }

  /** The name of every VM any instance holds or retires, as far as the migrator knows. */
  names(): Set<string> {
    const out = new Set<string>();
    for (const set of this.sets.values()) for (const name of set.vms.keys()) out.add(name);
    return out;
  }

  private setOf(vmmId: string): InstanceVms {
    let set = this.sets.get(vmmId);
    if (set === undefined) this.sets.set(vmmId, (set = { version: undefined, vms: new Map() }));
    return set;
  }
}

/** An instance a new VM could go to, with how many VMs it holds. */
export interface Candidate {
  readonly id: string;
  readonly vms: number;
}

/**
 * Where a new VM goes when the request names no instance: the candidate with the fewest VMs,
 * the first id in order among equals; undefined when there is none.
 */
export function fewestVms(candidates: readonly Candidate[]): string | undefined {
  let best: Candidate | undefined;
  for (const c of candidates) {
    if (best === undefined || c.vms < best.vms || (c.vms === best.vms && c.id < best.id)) best = c;
  }
  return best?.id;
}
