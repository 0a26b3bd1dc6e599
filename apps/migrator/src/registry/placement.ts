import { MigratorError } from '../errors.js';
import {
  ownsVm,
  type HostedVm,
  type HostedVms,
  type RamBackend,
  type VmSpec,
} from './hosted-vm.js';

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

/** What the host checks need of a vmm instance (a `VmmRecord` fits). */
export interface OnHost {
  readonly id: string;
  /** The host it runs on: instances of one host share its memstore and map its files. */
  readonly hostId: string;
}

/**
 * Whether two vmm instances run on one host: then RAM in their memstore can change hands by
 * reference (bypass), since both map the same files. Instances on different hosts never share
 * a file.
 */
export function sameHost(a: OnHost, b: OnHost): boolean {
  return a.hostId === b.hostId;
}

/** RAM kinds whose pages live in a memstore region (the source host's), not in the vmm. */
const IN_MEMSTORE: ReadonlySet<RamBackend> = new Set<RamBackend>(['shared', 'clone', 'lazy']);

/** The RAM blocks of `spec` whose pages are in the source host's memstore. */
function memstoreBlocks(spec: VmSpec | undefined): string[] {
  return (spec?.ram ?? []).filter((b) => IN_MEMSTORE.has(b.backend)).map((b) => b.id);
}

/** A migration as {@link refuseCrossHostBypass} judges it. */
export interface CrossHostMove {
  readonly vm: string;
  /** The spec the source reported; undefined: unknown, judged as RAM in memstore. */
  readonly spec: VmSpec | undefined;
  readonly source: OnHost;
  readonly target: OnHost;
  /** The migration's capabilities (only these two matter here). */
  readonly capabilities: {
    readonly 'bypass-shared-memory': boolean;
    readonly 'postcopy-ram': boolean;
  };
}

/**
 * Refuses what cannot work across hosts: a bypass migration (RAM handed over by reference) of
 * a VM whose RAM is in the source host's memstore (shared, clone or lazy blocks) to a vmm on
 * another host, which cannot map that memstore's files. Post-copy moves such RAM (the target
 * host's memstore fills a lazy region from the source's), and `--no-bypass` copies it; a VM
 * with private RAM only, or a move within one host, passes.
 *
 * @throws MigratorError `MIGRATOR_CROSS_HOST` (FAILED_PRECONDITION), saying which flag to add
 */
export function refuseCrossHostBypass(move: CrossHostMove): void {
  const { vm, source, target, capabilities } = move;
  if (sameHost(source, target)) return;
  if (!capabilities['bypass-shared-memory'] || capabilities['postcopy-ram']) return;
  const blocks = memstoreBlocks(move.spec);
  if (move.spec !== undefined && blocks.length === 0) return;
  const which = blocks.length === 0 ? 'memory' : `memory (${blocks.join(', ')})`;
  throw new MigratorError(
    'MIGRATOR_CROSS_HOST',
    `${target.id} is on ${target.hostId} but ${vm}'s ${which} is in ${source.hostId}'s ` +
      `memstore (it runs on ${source.id}): add --postcopy to move it by post-copy, or ` +
      '--no-bypass to copy it',
  );
}
