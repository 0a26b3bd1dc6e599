import { dateToTimestamp, memstore as msPb, vmm as pb } from '@handoff/proto';
import type { Snapshot, SnapshotKind } from '../model/snapshot.js';
import type { RamBlockInfo, VmEvent, VmEventKind, VmInfo } from '../model/types.js';
import { blockSpecToPb, specToPb } from '../wire/spec.js';
import { STATE_TO_PB } from '../wire/vm.js';

/** Wire ↔ domain conversions of the VmmService edge (a VM spec's are in ../wire/spec.ts). */

const EVENT_TO_PB: Record<VmEventKind, pb.VmEventKind> = {
  started: pb.VmEventKind.VM_EVENT_KIND_STARTED,
  paused: pb.VmEventKind.VM_EVENT_KIND_PAUSED,
  resumed: pb.VmEventKind.VM_EVENT_KIND_RESUMED,
  ready: pb.VmEventKind.VM_EVENT_KIND_READY,
  'powered-off': pb.VmEventKind.VM_EVENT_KIND_POWERED_OFF,
  'guest-error': pb.VmEventKind.VM_EVENT_KIND_GUEST_ERROR,
  destroyed: pb.VmEventKind.VM_EVENT_KIND_DESTROYED,
};

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
    memory:
      vm.memory === undefined
        ? undefined
        : {
            pssBytes: BigInt(vm.memory.pss),
            privateDirtyBytes: BigInt(vm.memory.privateDirty),
            rssBytes: BigInt(vm.memory.rss),
          },
    snapshot: vm.snapshot,
    postcopy:
      vm.postcopy === undefined
        ? undefined
        : {
            presentPages: BigInt(vm.postcopy.presentPages),
            totalPages: BigInt(vm.postcopy.totalPages),
            waiting: vm.postcopy.waiting,
            pageWaited: BigInt(vm.postcopy.pageWaited),
            sourcePaused: vm.postcopy.sourcePaused,
            pagesWaited: BigInt(vm.postcopy.pagesWaited),
            faultP50Us: BigInt(vm.postcopy.faultP50Us),
            faultP99Us: BigInt(vm.postcopy.faultP99Us),
          },
  };
}

const SNAPSHOT_KIND_TO_PB: Record<SnapshotKind, msPb.SnapshotKind> = {
  bypass: msPb.SnapshotKind.SNAPSHOT_KIND_BYPASS,
  full: msPb.SnapshotKind.SNAPSHOT_KIND_FULL,
  imported: msPb.SnapshotKind.SNAPSHOT_KIND_IMPORTED,
};

/** A snapshot on the wire, as SaveVm answers it (memstore's message). */
export function snapshotToPb(s: Snapshot): msPb.Snapshot {
  return {
    id: s.id,
    name: s.name,
    kind: SNAPSHOT_KIND_TO_PB[s.kind],
    template: s.template,
    createdAt: s.createdAt === null ? undefined : dateToTimestamp(s.createdAt),
    vmName: s.vmName,
    vmmId: s.vmmId,
    vmSpec: s.vmSpec,
    blocks: s.blocks.map((b) => ({
      id: b.id,
      guestBase: BigInt(b.guestBase),
      size: BigInt(b.size),
      regionId: b.regionId,
      regionName: b.regionName,
      identity: b.identity,
      owned: b.owned,
      storedBytes: BigInt(b.storedBytes),
      layerPages: b.layerPages,
      layerPageCount: BigInt(b.layerPageCount),
    })),
    deviceStateBytes: BigInt(s.deviceStateBytes),
    deviceStateCrc32c: s.deviceStateCrc32c,
    clones: [...s.clones],
    parent: s.parent,
    storedBytes: BigInt(s.storedBytes),
    depth: s.depth,
  };
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
