/**
 * A VM spec on the wire and back: the one conversion both of the vmm's protobuf edges need —
 * the gRPC service (api/) and the migration stream's header (migration/).
 *
 * @packageDocumentation
 */
import { vmm as pb } from '@handoff/proto';
import type { RamBackendKind, RamBlockSpec, VmSpec } from '../model/types.js';
import { VmmError } from '../model/vmm-error.js';

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

export function blockSpecToPb(b: RamBlockSpec): pb.RamBlockSpec {
  return {
    id: b.id,
    guestBase: BigInt(b.guestBase),
    size: BigInt(b.size),
    backend: BACKEND_TO_PB[b.backend],
    region: b.region,
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
