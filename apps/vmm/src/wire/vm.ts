/**
 * A VM's state, and a VM as the migrator's registry hears of it, on the wire: shared by the
 * gRPC service (api/) and the registration with the migrator (registration/).
 *
 * @packageDocumentation
 */
import { vmm as pb, type migrator as mpb } from '@handoff/proto';
import type { HostedVm, VmState } from '../model/types.js';
import { specToPb } from './spec.js';

/** A VM state on the wire. */
export const STATE_TO_PB: Record<VmState, pb.VmState> = {
  created: pb.VmState.VM_STATE_CREATED,
  running: pb.VmState.VM_STATE_RUNNING,
  paused: pb.VmState.VM_STATE_PAUSED,
  'powered-off': pb.VmState.VM_STATE_POWERED_OFF,
  crashed: pb.VmState.VM_STATE_CRASHED,
  postmigrate: pb.VmState.VM_STATE_POSTMIGRATE,
};

/** A VM as the migrator's RegisterVmm/ReportVms carry it: name, spec, state. */
export function hostedVmToPb(vm: HostedVm): mpb.HostedVm {
  return { name: vm.name, spec: specToPb(vm.spec), state: STATE_TO_PB[vm.state] };
}
