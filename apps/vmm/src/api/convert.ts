import { dateToTimestamp, vmm as pb, type migrator as mpb } from '@handoff/proto';
import { VmmError } from '../vm/errors.js';
import type {
  RamBackendKind,
  RamBlockInfo,
  RamBlockSpec,
  VmEvent,
  VmEventKind,
  VmInfo,
  VmSpec,
  VmState,
} from '../vm/types.js';

/** Wire ↔ domain conversions of the VmmService edge; nothing else touches generated types. */

const BACKEND_FROM_PB: Partial<Record<pb.RamBackend, RamBackendKind>> = {
  [pb.RamBackend.RAM_BACKEND_UNSPECIFIED]: 'private',
  [pb.RamBackend.RAM_BACKEND_PRIVATE]: 'private',
  [pb.RamBackend.RAM_BACKEND_SHARED]: 'shared',
  [pb.RamBackend.RAM_BACKEND_CLONE]: 'clone',
};

const BACKEND_TO_PB: Record<RamBackendKind, pb.RamBackend> = {
  private: pb.RamBackend.RAM_BACKEND_PRIVATE,
  shared: pb.RamBackend.RAM_BACKEND_SHARED,
  clone: pb.RamBackend.RAM_BACKEND_CLONE,
};

const STATE_TO_PB: Record<VmState, pb.VmState> = {
  created: pb.VmState.VM_STATE_CREATED,
  running: pb.VmState.VM_STATE_RUNNING,
  paused: pb.VmState.VM_STATE_PAUSED,
  'powered-off': pb.VmState.VM_STATE_POWERED_OFF,
  crashed: pb.VmState.VM_STATE_CRASHED,
  postmigrate: pb.VmState.VM_STATE_POSTMIGRATE,
};

const EVENT_TO_PB: Record<VmEventKind, pb.VmEventKind> = {
  started: pb.VmEventKind.VM_EVENT_KIND_STARTED,
  paused: pb.VmEventKind.VM_EVENT_KIND_PAUSED,
  resumed: pb.VmEventKind.VM_EVENT_KIND_RESUMED,
  ready: pb.VmEventKind.VM_EVENT_KIND_READY,
  'powered-off': pb.VmEventKind.VM_EVENT_KIND_POWERED_OFF,
  'guest-error': pb.VmEventKind.VM_EVENT_KIND_GUEST_ERROR,
  destroyed: pb.VmEventKind.VM_EVENT_KIND_DESTROYED,
};

function safe(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new VmmError('VMM_INVALID_SPEC', `${what} ${value} is out of range`);
  }
  return Number(value);
}

function blockFromPb(b: pb.RamBlockSpec, k: number): RamBlockSpec {
  const what = `RAM block ${b.id === '' ? `#${k}` : `"${b.id}"`}`;
  const backend = BACKEND_FROM_PB[b.backend];
  if (backend === undefined) {
    const hint =
      b.backend === pb.RamBackend.RAM_BACKEND_LAZY
        ? 'lazy (post-copy) blocks arrive with the post-copy milestone'
        : 'use private, shared or clone';
    throw new VmmError(
      'VMM_INVALID_SPEC',
      `${what}: backend ${b.backend} is not supported; ${hint}`,
    );
  }
  return {
    id: b.id,
    guestBase: safe(b.guestBase, `${what}: guest base`),
    size: safe(b.size, `${what}: size`),
    backend,
    region: b.region,
  };
}

/** CreateVm's spec as a domain spec (defaults are filled later by the host). */
export function specFromPb(spec: pb.VmSpec | undefined): VmSpec {
  if (spec === undefined) {
    throw new VmmError(
      'VMM_INVALID_SPEC',
      'CreateVm needs a spec with at least a name and a guest',
    );
  }
  return {
    name: spec.name,
    guest: spec.guest,
    ram: spec.ram.map(blockFromPb),
    args: { ...spec.args },
  };
}

function blockSpecToPb(b: RamBlockSpec): pb.RamBlockSpec {
  return {
    id: b.id,
    guestBase: BigInt(b.guestBase),
    size: BigInt(b.size),
    backend: BACKEND_TO_PB[b.backend],
    region: b.region,
  };
}

function blockInfoToPb(b: RamBlockInfo): pb.RamBlockInfo {
  return {
    spec: blockSpecToPb(b.spec),
    dirtyPages: BigInt(b.dirtyPages),
    touchedPages: BigInt(b.touchedPages),
    regionRef:
      b.regionRef === null
        ? undefined
        : {
            regionId: b.regionRef.regionId,
            epoch: BigInt(b.regionRef.epoch),
            size: BigInt(b.regionRef.size),
            identity: b.regionRef.identity,
            memstore: b.regionRef.memstore,
          },
  };
}

/** A VM spec on the wire (the migration header carries it). */
export function specToPb(spec: VmSpec): pb.VmSpec {
  return {
    name: spec.name,
    guest: spec.guest,
    ram: spec.ram.map(blockSpecToPb),
    args: { ...spec.args },
  };
}

/** A VM on the wire. */
export function vmToPb(vm: VmInfo): pb.Vm {
  return {
    name: vm.name,
    vmmId: vm.vmmId,
    state: STATE_TO_PB[vm.state],
    spec: specToPb(vm.spec),
    ram: vm.ram.map(blockInfoToPb),
    instret: BigInt(vm.instret),
    mips: vm.mips,
    exitCode: vm.exitCode,
    error: vm.error,
    createdAt: dateToTimestamp(vm.createdAt),
    generationId: vm.generationId,
    ready: vm.ready,
  };
}

/** A VM as the migrator's RegisterVmm/ReportVms carry it: name, spec, state. */
export function hostedVmToPb(vm: VmInfo): mpb.HostedVm {
  return { name: vm.name, spec: specToPb(vm.spec), state: STATE_TO_PB[vm.state] };
}

/** A WatchVm event on the wire. */
export function eventToPb(e: VmEvent): pb.WatchVmResponse {
  return {
    kind: EVENT_TO_PB[e.kind],
    at: dateToTimestamp(e.at),
    vm: vmToPb(e.vm),
    detail: e.detail,
  };
}

/** The first WatchVm message: the VM as it is now (kind UNSPECIFIED, detail "current state"). */
export function currentToPb(vm: VmInfo): pb.WatchVmResponse {
  return {
    kind: pb.VmEventKind.VM_EVENT_KIND_UNSPECIFIED,
    at: dateToTimestamp(new Date()),
    vm: vmToPb(vm),
    detail: 'current state',
  };
}
