/** Limits of the vmm's VMs that every layer checks against. */

/** Largest RAM block the machine maps (typed-array views index it with int32 offsets). */
export const MAX_BLOCK_SIZE = 2 ** 31;
