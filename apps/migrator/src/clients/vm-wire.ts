import { vmm as vpb, type migrator as mpb } from '@handoff/proto';
import type {
  HostedVm,
  HostedVms,
  RamBackend,
  RamBlockSpec,
  VmSpec,
  VmState,
  VmStatus,
} from '../registry/hosted-vm.js';

/**
 * Wire <-> domain forms of the VMs a vmm instance hosts: its reports (RegisterVmm, ReportVms,
 * served by the api edge) and its VmmService answers and requests (this client edge) carry the
 * same `handoff.vmm.v1` types.
 */

const STATE_FROM_WIRE: Partial<Record<vpb.VmState, VmState>> = {
  [vpb.VmState.VM_STATE_CREATED]: 'created',
  [vpb.VmState.VM_STATE_RUNNING]: 'running',
  [vpb.VmState.VM_STATE_PAUSED]: 'paused',
  [vpb.VmState.VM_STATE_POSTMIGRATE]: 'postmigrate',
  [vpb.VmState.VM_STATE_INMIGRATE]: 'inmigrate',
  [vpb.VmState.VM_STATE_POWERED_OFF]: 'powered-off',
  [vpb.VmState.VM_STATE_CRASHED]: 'crashed',
};

const BACKEND_FROM_WIRE: Partial<Record<vpb.RamBackend, RamBackend>> = {
  [vpb.RamBackend.RAM_BACKEND_UNSPECIFIED]: 'private',
  [vpb.RamBackend.RAM_BACKEND_PRIVATE]: 'private',
  [vpb.RamBackend.RAM_BACKEND_SHARED]: 'shared',
  [vpb.RamBackend.RAM_BACKEND_CLONE]: 'clone',
  [vpb.RamBackend.RAM_BACKEND_LAZY]: 'lazy',
};

const BACKEND_TO_WIRE: Record<RamBackend, vpb.RamBackend> = {
  private: vpb.RamBackend.RAM_BACKEND_PRIVATE,
  shared: vpb.RamBackend.RAM_BACKEND_SHARED,
  clone: vpb.RamBackend.RAM_BACKEND_CLONE,
  lazy: vpb.RamBackend.RAM_BACKEND_LAZY,
};

/** A VM state from the wire; a value this migrator does not know is `unknown`. */
export function vmStateFromWire(state: vpb.VmState): VmState {
  return STATE_FROM_WIRE[state] ?? 'unknown';
}

/** A spec from the wire (the migrator only passes it on: nothing is checked here). */
export function vmSpecFromWire(spec: vpb.VmSpec): VmSpec {
  return {
    name: spec.name,
    guest: spec.guest,
    ram: spec.ram.map((b): RamBlockSpec => ({
      id: b.id,
      guestBase: Number(b.guestBase),
      size: Number(b.size),
      // an unknown backend reaches the target as private: the stream's header then decides
      backend: BACKEND_FROM_WIRE[b.backend] ?? 'private',
      region: b.region,
      regionOwned: b.regionOwned === true,
    })),
    args: { ...spec.args },
  };
}

/** A spec on the wire, as PrepareIncoming takes it. */
export function vmSpecToWire(spec: VmSpec): vpb.VmSpec {
  return {
    name: spec.name,
    guest: spec.guest,
    ram: spec.ram.map((b) => ({
      id: b.id,
      guestBase: BigInt(b.guestBase),
      size: BigInt(b.size),
      backend: BACKEND_TO_WIRE[b.backend],
      region: b.region,
      regionOwned: b.regionOwned ? true : undefined,
    })),
    args: { ...spec.args },
  };
}

/** One VM from a report (or a VmmService `Vm`, which has the same three fields). */
export function hostedVmFromWire(vm: Pick<mpb.HostedVm, 'name' | 'spec' | 'state'>): HostedVm {
  return {
    name: vm.name,
    spec: vm.spec === undefined ? undefined : vmSpecFromWire(vm.spec),
    state: vmStateFromWire(vm.state),
  };
}

/** A VM as a vmm answers it (GetVm, ListVms, CreateVm, RestoreVm, CloneVms). */
export function vmStatusFromWire(vm: vpb.Vm): VmStatus {
  return { ...hostedVmFromWire(vm), snapshot: vm.snapshot, ready: vm.ready };
}

/** A report's VM set from the wire. */
export function hostedVmsFromWire(set: mpb.HostedVms): HostedVms {
  return { version: Number(set.version), vms: set.vms.map(hostedVmFromWire) };
}
