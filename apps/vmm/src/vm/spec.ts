import { HOST_ARGS_SIZE } from '../devices/control.js';
import { createMachine } from '../machine/machine.js';
import { VirtMap } from '../machine/virt-map.js';
import { PAGE_SIZE } from '../memory/pages.js';
import { MAX_BLOCK_SIZE, RAM_WINDOW } from '../model/limits.js';
import { VmmError } from '../model/vmm-error.js';
import type { RamBlockSpec, VmSpec } from '../model/types.js';

/** VM names: unique in the cluster, usable in region names and lease holders. */
export const VM_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,47}$/;
/** RAM block ids. */
export const BLOCK_ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,31}$/;
/** Longest guest name (a built-in name or a path in the guest folder). */
const MAX_GUEST_NAME = 1024;
/** Host-argument keys (values are one token: no whitespace). */
const ARG_KEY_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
export { MAX_BLOCK_SIZE, RAM_WINDOW } from '../model/limits.js';
/** Id of main RAM, the one block the machine inlines. */
export const MAIN_BLOCK_ID = 'ram0';

/** Limits of one vmm instance. */
export interface SpecLimits {
  /** Total RAM one VM may have, in bytes (`--max-vm-memory`). */
  readonly maxVmMemory: number;
}

/** A device window of the board (QEMU virt map): RAM blocks must stay clear of them. */
export interface DeviceWindow {
  readonly name: string;
  readonly base: number;
  readonly size: number;
}

let windows: readonly DeviceWindow[] | undefined;

/** The board's MMIO windows, read from a throw-away machine so they always match it. */
export function deviceWindows(): readonly DeviceWindow[] {
  windows ??= createMachine({ ramSize: PAGE_SIZE }).memory.devices.map((d) => ({
    name: d.name,
    base: d.base,
    size: d.size,
  }));
  return windows;
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** `n` bytes as people read it: "128 MiB", "4 KiB", else the plain count. */
function bytes(n: number): string {
  for (const [unit, div] of [
    ['GiB', GiB],
    ['MiB', MiB],
    ['KiB', KiB],
  ] as const) {
    if (n >= div && n % div === 0) return `${n / div} ${unit}`;
  }
  return `${n} bytes`;
}

function invalid(message: string): never {
  throw new VmmError('VMM_INVALID_SPEC', message);
}

/**
 * Fills the one default of a spec as it arrives from the wire: the first block's empty id means
 * `ram0`. Nothing else is filled in — no RAM size, no base: a spec that names no RAM, or a block
 * with no size or base 0, is refused by {@link validateSpec} with what fits instead. Pure.
 */
export function normalizeSpec(spec: VmSpec): VmSpec {
  const ram: RamBlockSpec[] = spec.ram.map((b, k) => ({
    ...b,
    id: b.id === '' && k === 0 ? MAIN_BLOCK_ID : b.id,
  }));
  return { ...spec, ram };
}

/**
 * Checks a normalized spec against the board, the machine and the instance's limits. Runs
 * before anything is allocated for the VM: every size and address is checked as a number first.
 *
 * @throws VmmError `VMM_INVALID_SPEC` (what is wrong and what fits instead) or
 *   `VMM_LIMIT_EXCEEDED` (more RAM than `--max-vm-memory`).
 */
export function validateSpec(spec: VmSpec, limits: SpecLimits): void {
  if (!VM_NAME_PATTERN.test(spec.name)) {
    invalid(
      `VM name "${spec.name}" is not valid: use 1-48 lower-case letters, digits, ".", "_" or "-", ` +
        'starting with a letter or digit',
    );
  }
  if (spec.guest.trim() === '') {
    invalid(
      'the spec names no guest: give a built-in guest (hello, ab, kvserver, bench, ' +
        "conformance/<test>) or the name of an ELF in the vmm's --guest-dir",
    );
  }
  if (spec.guest.length > MAX_GUEST_NAME) {
    invalid(
      `the guest name is ${spec.guest.length} characters long; a guest is named in at most ` +
        `${MAX_GUEST_NAME}`,
    );
  }
  validateBlocks(spec.ram, limits);
  hostArgsOf(spec.args);
}

/** What one VM's RAM may be on this board and instance, for messages. */
function whatFits(limits: SpecLimits): string {
  return (
    `one block "${MAIN_BLOCK_ID}" at ${hex(VirtMap.DRAM)}, its size a multiple of 4 KiB ` +
    `up to ${bytes(Math.min(MAX_BLOCK_SIZE, limits.maxVmMemory))} (e.g. 128 MiB = 134217728)`
  );
}

/**
 * The block-table rules (see {@link validateSpec}): at least one block; ids valid and unique;
 * sizes positive, whole 4 KiB pages, at most {@link MAX_BLOCK_SIZE} each and `maxVmMemory` in
 * total; bases 4 KiB-aligned, clear of the board's device windows and inside its RAM window
 * ({@link RAM_WINDOW}); no two blocks overlapping; the backend's region rules; and what the
 * machine maps today: one block, `ram0`, at the window's base.
 */
export function validateBlocks(blocks: readonly RamBlockSpec[], limits: SpecLimits): void {
  if (blocks.length === 0) {
    invalid(
      `the spec names no RAM; give ${whatFits(limits)}. The vmm fills in no RAM size: ` +
        'vmctl sends --memory (128M unless told otherwise)',
    );
  }
  const ids = new Set<string>();
  let total = 0;
  for (const b of blocks) {
    const what = `RAM block "${b.id}"`;
    if (!BLOCK_ID_PATTERN.test(b.id)) {
      invalid(
        `RAM block id "${b.id}" is not valid: use 1-32 lower-case letters, digits, "_" or "-"`,
      );
    }
    if (ids.has(b.id)) invalid(`RAM block id "${b.id}" is used twice; block ids must be unique`);
    ids.add(b.id);
    if (b.size === 0) {
      invalid(`${what} has no size; give ${whatFits(limits)}`);
    }
    if (!Number.isInteger(b.size) || b.size < 0) {
      invalid(`${what}: size ${b.size} is not a whole, positive number of bytes`);
    }
    if (b.size > MAX_BLOCK_SIZE) {
      invalid(
        `${what}: size ${b.size} bytes is over the 2 GiB (${MAX_BLOCK_SIZE} bytes) a block can ` +
          'have; give at most 2 GiB',
      );
    }
    if (b.size % PAGE_SIZE !== 0) {
      invalid(
        `${what}: size ${b.size} is not a multiple of 4 KiB; round it to whole pages ` +
          '(4096 bytes each)',
      );
    }
    if (!Number.isInteger(b.guestBase) || b.guestBase < 0) {
      invalid(
        `${what}: base ${b.guestBase} is not an address; main RAM starts at ${hex(VirtMap.DRAM)}`,
      );
    }
    if (b.guestBase % PAGE_SIZE !== 0) {
      invalid(
        `${what}: base ${hex(b.guestBase)} is not 4 KiB-aligned; main RAM starts at ` +
          hex(VirtMap.DRAM),
      );
    }
    for (const d of deviceWindows()) {
      if (b.guestBase < d.base + d.size && d.base < b.guestBase + b.size) {
        invalid(
          `${what} (${hex(b.guestBase)}+${bytes(b.size)}) overlaps the board's ${d.name} ` +
            `device window at ${hex(d.base)}+${hex(d.size)}; RAM goes in the RAM window from ` +
            `${hex(RAM_WINDOW.base)}: put ${MAIN_BLOCK_ID} at ${hex(VirtMap.DRAM)}`,
        );
      }
    }
    if (b.guestBase < RAM_WINDOW.base || b.guestBase >= RAM_WINDOW.end) {
      invalid(
        `${what} at ${hex(b.guestBase)} is outside the board's RAM window ` +
          `(${hex(RAM_WINDOW.base)}-${hex(RAM_WINDOW.end - 1)}); put ${MAIN_BLOCK_ID} at ` +
          hex(VirtMap.DRAM),
      );
    }
    if (b.guestBase + b.size > RAM_WINDOW.end) {
      invalid(
        `${what} (${hex(b.guestBase)}+${bytes(b.size)}) ends past the board's RAM window ` +
          `(${hex(RAM_WINDOW.base)}-${hex(RAM_WINDOW.end - 1)}); from ${hex(b.guestBase)} at ` +
          `most ${bytes(RAM_WINDOW.end - b.guestBase)} fits`,
      );
    }
    if (b.backend === 'private' && b.region !== '') {
      invalid(`${what}: a private block takes no region (got "${b.region}"); use backend shared`);
    }
    if (b.backend === 'clone' && b.region === '') {
      invalid(`${what}: a clone block needs the name of a sealed template in "region"`);
    }
    total += b.size;
  }
  if (total > limits.maxVmMemory) {
    throw new VmmError(
      'VMM_LIMIT_EXCEEDED',
      `the VM asks for ${total} bytes of RAM, over this instance's limit of ${limits.maxVmMemory} ` +
        `bytes (${bytes(limits.maxVmMemory)}); ask for less or raise --max-vm-memory`,
    );
  }
  const sorted = [...blocks].sort((a, b) => a.guestBase - b.guestBase);
  for (let k = 1; k < sorted.length; k++) {
    const prev = sorted[k - 1]!;
    const cur = sorted[k]!;
    if (cur.guestBase < prev.guestBase + prev.size) {
      invalid(
        `RAM blocks "${prev.id}" (${hex(prev.guestBase)}+${bytes(prev.size)}) and "${cur.id}" ` +
          `(${hex(cur.guestBase)}+${bytes(cur.size)}) overlap; give each its own addresses`,
      );
    }
  }
  // What the machine can map today: main RAM only.
  const main = blocks.find((b) => b.guestBase === VirtMap.DRAM);
  if (main === undefined) {
    invalid(
      `no RAM block starts at ${hex(VirtMap.DRAM)}; main RAM (${MAIN_BLOCK_ID}) must be there`,
    );
  }
  if (main.id !== MAIN_BLOCK_ID) {
    invalid(
      `the block at ${hex(VirtMap.DRAM)} must be called "${MAIN_BLOCK_ID}", not "${main.id}"`,
    );
  }
  if (blocks.length > 1) {
    const extra = blocks
      .filter((b) => b !== main)
      .map((b) => b.id)
      .join(', ');
    invalid(
      `this vmm maps one RAM block (ram0 at ${hex(VirtMap.DRAM)}); extra blocks (${extra}) are ` +
        'not supported yet: put all RAM in ram0',
    );
  }
}

/**
 * The control device's host-args bytes for `args`: `key=value` tokens joined by spaces, keys
 * sorted (what the guests' `rt_arg_u32` parses).
 *
 * @throws VmmError `VMM_INVALID_SPEC` for a bad key or value, or more than 256 bytes.
 */
export function hostArgsOf(args: Readonly<Record<string, string>>): Uint8Array {
  const tokens: string[] = [];
  for (const key of Object.keys(args).sort()) {
    const value = args[key]!;
    if (!ARG_KEY_PATTERN.test(key)) {
      invalid(`guest argument key "${key}" is not valid: use letters, digits, ".", "_" or "-"`);
    }
    if (/\s/.test(value)) {
      invalid(`guest argument ${key}="${value}" contains whitespace; values are one token`);
    }
    tokens.push(`${key}=${value}`);
  }
  const bytes = new TextEncoder().encode(tokens.join(' '));
  if (bytes.length > HOST_ARGS_SIZE) {
    invalid(
      `guest arguments take ${bytes.length} bytes, over the control device's ${HOST_ARGS_SIZE}; ` +
        'pass fewer or shorter arguments',
    );
  }
  return bytes;
}
