/**
 * What a vmm instance reports of the VMs it hosts, in the migrator's terms. The migrator never
 * interprets a spec: it hands the spec the source reported to the target's PrepareIncoming.
 */

/** How a RAM block is backed (the vmm's kinds). */
export type RamBackend = 'private' | 'shared' | 'clone' | 'lazy';

/** One RAM block of a VM's spec. */
export interface RamBlockSpec {
  readonly id: string;
  readonly guestBase: number;
  readonly size: number;
  readonly backend: RamBackend;
  readonly region: string;
  /** The VM owns (and deletes) `region`: passed on to the target, which checks the claim. */
  readonly regionOwned: boolean;
}

/** The spec a VM runs with, as its vmm reported it. */
export interface VmSpec {
  readonly name: string;
  readonly guest: string;
  readonly ram: readonly RamBlockSpec[];
  readonly args: Readonly<Record<string, string>>;
}

/** A VM's state when its vmm reported it (`unknown`: a state this migrator does not know). */
export type VmState =
  | 'created'
  | 'running'
  | 'paused'
  | 'postmigrate'
  | 'inmigrate'
  | 'powered-off'
  | 'crashed'
  | 'unknown';

/** One VM as the instance hosting it reported it. */
export interface HostedVm {
  readonly name: string;
  /** Undefined when the report carried none (PrepareIncoming then goes without it). */
  readonly spec: VmSpec | undefined;
  readonly state: VmState;
}

/**
 * A VM as its vmm answers GetVm, ListVms, CreateVm or RestoreVm: what a report says of it, plus
 * what snapshot jobs look at.
 */
export interface VmStatus extends HostedVm {
  /** The snapshot (or template) it was restored or cloned from; '' for a booted VM. */
  readonly snapshot: string;
  /** Its guest rang the ready doorbell. */
  readonly ready: boolean;
}

/** Every VM of one instance, at one version of that set (it grows with every change). */
export interface HostedVms {
  readonly version: number;
  readonly vms: readonly HostedVm[];
}

/**
 * Whether an instance reporting a VM in `state` owns it: a `postmigrate` VM moved away (its
 * instance is retiring it) and an `inmigrate` one is still arriving.
 */
export function ownsVm(state: VmState): boolean {
  return state !== 'postmigrate' && state !== 'inmigrate';
}

/** Whether a live update moves a VM in `state` (created, running or paused). */
export function isMovable(state: VmState): boolean {
  return state === 'created' || state === 'running' || state === 'paused';
}
