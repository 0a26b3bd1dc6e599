/** The migration stream's format version (PROTOCOL.md). */

/**
 * Stream format version: major must match, the receiver loads minor <= its own.
 * 1.1: the switchover slot. 1.2: the header's spec says which regions the VM owns
 * (`RamBlockSpec.region_owned`); a 1.1 header claims none, and the target keeps the region.
 */
export const STREAM_FORMAT = { major: 1, minor: 2 } as const;
