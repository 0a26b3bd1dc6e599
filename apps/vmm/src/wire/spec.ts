/**
 * A VM spec on the wire and back: the one conversion both of the vmm's protobuf edges need —
 * the gRPC service (api/) and the migration stream's header (migration/).
 *
 * @packageDocumentation
 */
import { vmm as pb } from '@handoff/proto';
import type { RamBackendKind, RamBlockSpec, VmSpec } from '../model/types.js';
import { MAX_BLOCK_SIZE, RAM_WINDOW } from '../model/limits.js';
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

/**
 * A block's size from the wire, refused as a bigint when it could not be a block's (so a
 * 2^63-byte size never becomes an imprecise number, let alone an allocation).
 */
function sizeOf(value: bigint, what: string): number {
  if (value > BigInt(MAX_BLOCK_SIZE)) {
    throw new VmmError(
      'VMM_INVALID_SPEC',
      `${what}: size ${value} bytes is over the 2 GiB (${MAX_BLOCK_SIZE} bytes) a block can ` +
        'have; give at most 2 GiB',
    );
  }
  return Number(value);
}

/** A block's guest base from the wire, refused as a bigint when it is past the 32-bit board. */
function baseOf(value: bigint, what: string): number {
  if (value >= BigInt(RAM_WINDOW.end)) {
    throw new VmmError(
      'VMM_INVALID_SPEC',
      `${what} at 0x${value.toString(16)} is outside the board's RAM window ` +
        `(0x${RAM_WINDOW.base.toString(16)}-0x${(RAM_WINDOW.end - 1).toString(16)}); put ram0 at ` +
        `0x${RAM_WINDOW.base.toString(16)}`,
    );
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
    guestBase: baseOf(b.guestBase, what),
    size: sizeOf(b.size, what),
    backend,
    region: b.region,
    ...(b.regionOwned ? { regionOwned: true } : {}),
  };
}

/**
 * A spec from the wire (CreateVm, PrepareIncoming, a migration header) as a domain spec. Refuses
 * numbers no block can have; the board's other rules are checked by the host (vm/spec.ts).
 */
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
    regionOwned: b.regionOwned === true ? true : undefined,
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

/** A VM spec as the bytes a snapshot keeps (`handoff.vmm.v1.VmSpec`, encoded). */
export function encodeSpecBytes(spec: VmSpec): Uint8Array {
  return pb.VmSpec.encode(specToPb(spec)).finish();
}

/**
 * A spec from a snapshot's bytes. They come from memstore, which stores them unread: anything
 * that does not decode, or decodes to no spec a block could have, is refused.
 *
 * @throws VmmError `VMM_SNAPSHOT_INVALID`
 */
export function decodeSpecBytes(bytes: Uint8Array, what: string): VmSpec {
  let decoded: pb.VmSpec;
  try {
    decoded = pb.VmSpec.decode(bytes);
  } catch (err) {
    throw new VmmError(
      'VMM_SNAPSHOT_INVALID',
      `${what}: its VM spec does not decode (${(err as Error).message}); the snapshot is ` +
        'damaged: delete it and save the VM again',
      { cause: err },
    );
  }
  try {
    return specFromPb(decoded);
  } catch (err) {
    throw new VmmError('VMM_SNAPSHOT_INVALID', `${what}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}
