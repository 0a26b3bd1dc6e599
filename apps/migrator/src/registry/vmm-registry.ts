import { MigratorError } from '../errors.js';
import type { HostedVm, HostedVms } from './hosted-vm.js';
import { Placement, fewestVms } from './placement.js';

/** A vmm instance as the migrator knows it. */
export interface VmmRecord {
  id: string;
  address: string;
  version: string;
  vmCount: number;
  /** The host it runs on: instances of one host share its memstore and its files. */
  hostId: string;
  /** Its host's memstore (gRPC address); '' when the instance did not say. */
  memstoreAddress: string;
  lastSeen: Date;
  alive: boolean;
}

/** A registration or heartbeat of a vmm instance. */
export interface Registration {
  id: string;
  address: string;
  version: string;
  vmCount: number;
  /** The version of the instance's VM set now. */
  vmsVersion: number;
  /** The set itself, when the instance sends it along (else a plain heartbeat). */
  vms?: HostedVms;
  /** The host it runs on; absent or '': {@link DEFAULT_HOST_ID} (an instance from before hosts). */
  hostId?: string;
  /** Its host's memstore address; absent: ''. */
  memstoreAddress?: string;
}

/** Where a VM runs: its instance and the VM as that instance reported it. */
export interface VmLocation {
  vmm: VmmRecord;
  vm: HostedVm;
}

const ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** The host of an instance that names none: a cluster of one host. */
export const DEFAULT_HOST_ID = 'host-1';

/** What a host id may be: the form of a vmm id. */
export const HOST_ID_PATTERN = ID_PATTERN;

/**
 * The registry of vmm instances and of the VMs they host. Instances register on start and
 * repeat the call as a heartbeat; one not heard from within `expiryMs` is reported not alive
 * (kept in the list) and its VMs are no longer placed until it reports them again. Instances
 * report their VM set with the registration and after every change; a heartbeat carries the
 * set's version only, and a version the registry does not hold is answered "send it". State is
 * in memory: after a migrator restart every instance re-registers within one heartbeat and
 * reports its VMs right after.
 */
export class VmmRegistry {
  private readonly records = new Map<string, Omit<VmmRecord, 'alive'>>();
  private readonly placement = new Placement();

  /**
   * @param homeMemstore the migrator's memstore (`--memstore`), which holds the snapshots and
   *   templates its jobs use: {@link place} prefers instances of its host. '' for none.
   */
  constructor(
    private readonly expiryMs: number,
    private readonly now: () => number = Date.now,
    private readonly homeMemstore = '',
  ) {}

  /**
   * Records a registration or heartbeat (and the VM set it carries). `isNew`: the instance was
   * unknown; `vmsWanted`: the registry does not hold its VM set at `vmsVersion`.
   *
   * @throws MigratorError `MIGRATOR_INVALID_ARGUMENT` for a bad id or host id, or no address
   */
  register(entry: Registration): { isNew: boolean; vmsWanted: boolean } {
    const hostId =
      entry.hostId === undefined || entry.hostId === '' ? DEFAULT_HOST_ID : entry.hostId;
    if (!HOST_ID_PATTERN.test(hostId)) {
      throw new MigratorError(
        'MIGRATOR_INVALID_ARGUMENT',
        `vmm ${entry.id} names host "${hostId}", which is not a host id: use lower-case letters, ` +
          `digits and dashes (--host-id, e.g. ${DEFAULT_HOST_ID})`,
      );
    }
    if (!ID_PATTERN.test(entry.id)) {
      throw new MigratorError(
        'MIGRATOR_INVALID_ARGUMENT',
        `vmm id "${entry.id}" is invalid: use lower-case letters, digits and dashes (e.g. vmm-a)`,
      );
    }
    if (entry.address === '') {
      throw new MigratorError(
        'MIGRATOR_INVALID_ARGUMENT',
        `vmm ${entry.id} registered without an address`,
      );
    }
    const before = this.records.get(entry.id);
    // An instance back from expiry reports its VMs anew: what it said before may be stale.
    if (before !== undefined && !this.isAlive(before)) this.placement.forget(entry.id);
    const { vms, vmsVersion: _version, hostId: _host, memstoreAddress = '', ...record } = entry;
    this.records.set(entry.id, {
      ...record,
      hostId,
      memstoreAddress,
      lastSeen: new Date(this.now()),
    });
    if (vms !== undefined) this.placement.replace(entry.id, vms);
    return {
      isNew: before === undefined,
      vmsWanted: this.placement.versionOf(entry.id) !== entry.vmsVersion,
    };
  }

  /**
   * Replaces the VM set of a registered instance with its report.
   *
   * @throws MigratorError `MIGRATOR_VMM_NOT_FOUND` when the instance is not registered
   */
  reportVms(id: string, vms: HostedVms): void {
    const r = this.records.get(id);
    if (r === undefined) {
      throw new MigratorError(
        'MIGRATOR_VMM_NOT_FOUND',
        `vmm ${id} reported its VMs before it registered; call RegisterVmm first`,
      );
    }
    // Reports count as signs of life between heartbeats.
    if (!this.isAlive(r)) this.placement.forget(id);
    r.lastSeen = new Date(this.now());
    this.placement.replace(id, vms);
  }

  /** Every known instance, sorted by id. */
  list(): VmmRecord[] {
    return [...this.records.values()]
      .map((r) => this.withLiveness(r))
      .sort((a, b) => a.id.localeCompare(b.id));
  }

  /** One instance, or undefined when it is not registered. */
  find(id: string): VmmRecord | undefined {
    const r = this.records.get(id);
    return r === undefined ? undefined : this.withLiveness(r);
  }

  /** One instance; MIGRATOR_VMM_NOT_FOUND if unknown. */
  get(id: string): VmmRecord {
    const r = this.records.get(id);
    if (r === undefined) {
      const known = [...this.records.keys()].sort().join(', ') || 'none';
      throw new MigratorError(
        'MIGRATOR_VMM_NOT_FOUND',
        `no vmm instance "${id}" is registered (known: ${known}); check the id with \`vmctl status\``,
      );
    }
    return this.withLiveness(r);
  }

  /** The alive instance that owns VM `name` by the reports, or undefined. */
  locate(name: string): VmLocation | undefined {
    const found = this.placement.locate(name, (id) => this.aliveId(id));
    return found === undefined ? undefined : { vmm: this.get(found.vmmId), vm: found.vm };
  }

  /**
   * The VMs alive instance `id` owns by its reports; undefined when it sent none yet (or it is
   * not alive).
   */
  vmsOn(id: string): HostedVm[] | undefined {
    if (!this.aliveId(id)) return undefined;
    return this.placement.vmsOf(id, (other) => this.aliveId(other));
  }

  /**
   * The instance a new VM (a restore, a clone, a template's guest) goes to: `id` when given,
   * else the alive instance with the fewest VMs (by its report, else its heartbeat's count)
   * among those whose memstore is the migrator's (the one with the snapshots and templates:
   * another host's memstore does not have them), or among all alive ones when none is.
   *
   * @throws MigratorError `MIGRATOR_VMM_NOT_FOUND` for an unknown `id`;
   *   `MIGRATOR_VMM_UNAVAILABLE` when that instance, or every instance, is not alive
   */
  place(id?: string): VmmRecord {
    if (id !== undefined && id !== '') {
      const r = this.get(id);
      if (!r.alive) {
        throw new MigratorError(
          'MIGRATOR_VMM_UNAVAILABLE',
          `vmm ${id} has not been heard from for over ${this.expiryMs} ms (not alive); ` +
            'check it with `vmctl status`, or leave --vmm out to pick an alive one',
        );
      }
      return r;
    }
    const alive = this.list().filter((r) => r.alive);
    const home = alive.filter((r) => r.memstoreAddress === this.homeMemstore);
    const pick = fewestVms(
      (this.homeMemstore !== '' && home.length > 0 ? home : alive).map((r) => ({
        id: r.id,
        vms: this.placement.countOf(r.id) ?? r.vmCount,
      })),
    );
    if (pick === undefined) {
      throw new MigratorError(
        'MIGRATOR_VMM_UNAVAILABLE',
        'no vmm instance is alive to run the VM; start one (`npm start` runs vmm-a and vmm-b) ' +
          'and check with `vmctl status`',
      );
    }
    return this.get(pick);
  }

  /**
   * Names of every VM the instances reported (alive or not, retiring ones too): names a new VM
   * must not take.
   */
  vmNames(): Set<string> {
    return this.placement.names();
  }

  /** Instance `id` answered that it holds `vm` (a lookup outside its reports). */
  learned(id: string, vm: HostedVm): void {
    if (this.records.has(id)) this.placement.learn(id, vm);
  }

  /** A job saw instance `id` destroy VM `name` (a save with stop): it is not placed there now. */
  gone(id: string, name: string): void {
    this.placement.drop(id, name);
  }

  /** A job moved VM `name` from instance `from` to `to` (the migrator saw it complete). */
  moved(name: string, from: string, to: string): void {
    this.placement.moved(name, from, to);
  }

  private aliveId(id: string): boolean {
    const r = this.records.get(id);
    return r !== undefined && this.isAlive(r);
  }

  private isAlive(r: Omit<VmmRecord, 'alive'>): boolean {
    return this.now() - r.lastSeen.getTime() <= this.expiryMs;
  }

  private withLiveness(r: Omit<VmmRecord, 'alive'>): VmmRecord {
    return { ...r, alive: this.isAlive(r) };
  }
}
