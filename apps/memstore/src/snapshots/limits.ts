import { MemstoreError } from '../errors.js';
import { MAX_DEVICE_STATE_BYTES } from './state-file.js';

/** Most RAM blocks one snapshot holds. */
export const MAX_SNAPSHOT_BLOCKS = 16;
/** Largest encoded VM spec a snapshot keeps. */
export const MAX_VM_SPEC_BYTES = 1024 * 1024;
/** Longest VM name recorded. */
export const MAX_VM_NAME_LENGTH = 63;
/** RAM block ids: 1 to 63 letters, digits, '.', '_' and '-'. */
export const BLOCK_ID_PATTERN = /^[A-Za-z0-9._-]{1,63}$/;
/** Guest addresses and sizes are page-aligned. */
const PAGE = 4096;

export { MAX_DEVICE_STATE_BYTES };

function invalid(message: string): MemstoreError {
  return new MemstoreError('SNAPSHOT_INVALID', message);
}

/** A RAM block's layout as a snapshot records it. */
export interface BlockLayout {
  readonly id: string;
  readonly guestBase: number;
  readonly size: number;
}

/**
 * Checks a snapshot's block table: 1 to 16 blocks, unique ids of the allowed characters, page
 * aligned bases and sizes, sizes at most `maxBlockSize`, guest ranges that do not overlap.
 *
 * @throws MemstoreError SNAPSHOT_INVALID saying which block and why
 */
export function checkBlockLayout(blocks: readonly BlockLayout[], maxBlockSize: number): void {
  if (blocks.length === 0) throw invalid('a snapshot needs at least one RAM block; none was given');
  if (blocks.length > MAX_SNAPSHOT_BLOCKS) {
    throw invalid(
      `a snapshot holds at most ${MAX_SNAPSHOT_BLOCKS} RAM blocks; ${blocks.length} were given`,
    );
  }
  const ids = new Set<string>();
  for (const b of blocks) {
    if (!BLOCK_ID_PATTERN.test(b.id)) {
      throw invalid(
        `RAM block id ${JSON.stringify(b.id.slice(0, 80))} is not valid; use 1 to 63 letters, digits, '.', '_' or '-'`,
      );
    }
    if (ids.has(b.id)) throw invalid(`RAM block id "${b.id}" is given twice; block ids are unique`);
    ids.add(b.id);
    if (
      !Number.isSafeInteger(b.size) ||
      b.size <= 0 ||
      b.size % PAGE !== 0 ||
      b.size > maxBlockSize
    ) {
      throw invalid(
        `RAM block "${b.id}" has size ${b.size}; give a positive multiple of ${PAGE} bytes of at most ${maxBlockSize}`,
      );
    }
    if (
      !Number.isSafeInteger(b.guestBase) ||
      b.guestBase < 0 ||
      b.guestBase % PAGE !== 0 ||
      !Number.isSafeInteger(b.guestBase + b.size)
    ) {
      throw invalid(
        `RAM block "${b.id}" has guest base ${b.guestBase}; give a page-aligned address (a multiple of ${PAGE})`,
      );
    }
  }
  const sorted = [...blocks].sort((a, b) => a.guestBase - b.guestBase);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (prev.guestBase + prev.size > cur.guestBase) {
      throw invalid(
        `RAM blocks "${prev.id}" and "${cur.id}" overlap in guest memory; give them disjoint ranges`,
      );
    }
  }
}

/** Checks a VM name as recorded in a snapshot: 1 to 63 printable characters. */
export function checkVmName(vmName: string): void {
  // eslint-disable-next-line no-control-regex
  if (vmName === '' || vmName.length > MAX_VM_NAME_LENGTH || /[\u0000-\u001f\u007f]/.test(vmName)) {
    throw invalid(
      `VM name ${JSON.stringify(vmName.slice(0, 80))} is not valid; give the saved VM's name (1 to ${MAX_VM_NAME_LENGTH} printable characters)`,
    );
  }
}

/** Checks the sizes of the spec and device state a snapshot keeps. */
export function checkPayloadSizes(vmSpec: Uint8Array, deviceState: Uint8Array): void {
  if (vmSpec.length > MAX_VM_SPEC_BYTES) {
    throw invalid(`the VM spec is ${vmSpec.length} bytes; at most ${MAX_VM_SPEC_BYTES} are kept`);
  }
  if (deviceState.length === 0) {
    throw invalid('the device state is empty; pass the vmm device-state container of the VM');
  }
  if (deviceState.length > MAX_DEVICE_STATE_BYTES) {
    throw invalid(
      `the device state is ${deviceState.length} bytes; a snapshot keeps at most ${MAX_DEVICE_STATE_BYTES} (4 MiB)`,
    );
  }
}
