import { HOST_ARGS_SIZE } from '../devices/control.js';
import { createMachine } from '../machine/machine.js';
import { DEFAULT_RAM_SIZE, VirtMap } from '../machine/virt-map.js';
import { PAGE_SIZE } from '../memory/pages.js';
import { MAX_BLOCK_SIZE } from '../model/limits.js';
import { VmmError } from '../model/vmm-error.js';
import type { RamBlockSpec, VmSpec } from '../model/types.js';

/** VM names: unique in the cluster, usable in region names and lease holders. */
export const VM_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,47}$/;
/** RAM block ids. */
export const BLOCK_ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,31}$/;
/** Host-argument keys (values are one token: no whitespace). */
const ARG_KEY_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
export { MAX_BLOCK_SIZE } from '../model/limits.js';
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

function invalid(message: string): never {
  throw new VmmError('VMM_INVALID_SPEC', message);
}

/**
 * Fills the defaults of a spec as it arrives from the wire: no blocks means one private
 * 128 MiB `ram0`; the first block's base 0 means main RAM (0x80000000); `private` blocks have
 * no region. Pure; does not validate.
 */
export function normalizeSpec(spec: VmSpec): VmSpec {
  const ram: RamBlockSpec[] =
    spec.ram.length === 0
      ? [
          {
            id: MAIN_BLOCK_ID,
            guestBase: VirtMap.DRAM,
            size: DEFAULT_RAM_SIZE,
            backend: 'private',
            region: '',
          },
        ]
      : spec.ram.map((b, k) => ({
          ...b,
          id: b.id === '' && k === 0 ? MAIN_BLOCK_ID : b.id,
          guestBase: b.guestBase === 0 && k === 0 ? VirtMap.DRAM : b.guestBase,
        }));
  return { ...spec, ram };
}

/**
 * Checks a normalized spec against the board, the machine and the instance's limits.
 *
 * @throws VmmError `VMM_INVALID_SPEC` (what is wrong and how to fix it) or
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
      'the spec names no guest: give a built-in guest (hello, ab, kvserver, bench) or an ELF path',
    );
  }
  validateBlocks(spec.ram, limits);
  hostArgsOf(spec.args);
}

/** The block-table rules (see {@link validateSpec}). */
export function validateBlocks(blocks: readonly RamBlockSpec[], limits: SpecLimits): void {
  if (blocks.length === 0) invalid('the VM has no RAM block; give at least ram0');
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
    if (!Number.isSafeInteger(b.size) || b.size <= 0 || b.size % PAGE_SIZE !== 0) {
      invalid(`${what}: size ${b.size} is not a positive multiple of 4 KiB`);
    }
    if (b.size > MAX_BLOCK_SIZE) {
      invalid(`${what}: size ${b.size} is over the 2 GiB a block can have; split it`);
    }
    if (!Number.isSafeInteger(b.guestBase) || b.guestBase < 0 || b.guestBase % PAGE_SIZE !== 0) {
      invalid(`${what}: base ${hex(b.guestBase)} is not 4 KiB-aligned`);
    }
    if (b.guestBase + b.size > 2 ** 32) {
      invalid(`${what}: ${hex(b.guestBase)}+${b.size} ends past the 32-bit address space`);
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
        'bytes; ask for less or raise --max-vm-memory',
    );
  }
  const sorted = [...blocks].sort((a, b) => a.guestBase - b.guestBase);
  for (let k = 1; k < sorted.length; k++) {
    const prev = sorted[k - 1]!;
    const cur = sorted[k]!;
    if (cur.guestBase < prev.guestBase + prev.size) {
      invalid(
        `RAM blocks "${prev.id}" (${hex(prev.guestBase)}+${prev.size}) and "${cur.id}" ` +
          `(${hex(cur.guestBase)}+${cur.size}) overlap`,
      );
    }
  }
  for (const b of blocks) {
    for (const d of deviceWindows()) {
      if (b.guestBase < d.base + d.size && d.base < b.guestBase + b.size) {
        invalid(
          `RAM block "${b.id}" (${hex(b.guestBase)}+${b.size}) overlaps the ${d.name} window ` +
            `at ${hex(d.base)}+${hex(d.size)}; main RAM starts at ${hex(VirtMap.DRAM)}`,
        );
      }
    }
  }
  // What the machine can map today: main RAM only.
  const main = blocks.find((b) => b.guestBase === VirtMap.DRAM);
  if (main === undefined) {
    invalid(`no RAM block starts at ${hex(VirtMap.DRAM)}; main RAM (ram0) must be there`);
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
