/** Limits of the vmm's VMs that every layer checks against. */

/** Largest RAM block the machine maps (typed-array views index it with int32 offsets). */
export const MAX_BLOCK_SIZE = 2 ** 31;

/**
 * The board's RAM window (QEMU `virt`): guest RAM lives at guest-physical addresses from
 * 0x80000000 up to the end of the 32-bit address space; the device windows sit below it.
 * Main RAM (`ram0`) starts at its base.
 */
export const RAM_WINDOW = { base: 0x8000_0000, end: 2 ** 32 } as const;
