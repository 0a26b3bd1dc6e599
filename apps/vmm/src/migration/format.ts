/** The migration stream's format version (PROTOCOL.md). */

/**
 * Stream format version: major must match, the receiver loads minor <= its own.
 * 1.1: the switchover slot. 1.2: the header's spec says which regions the VM owns
 * (`RamBlockSpec.region_owned`); a 1.1 header claims none, and the target keeps the region.
 * 1.3: the target's data channel reads raw page frames (transport/raw-pages.ts); a source uses
 * them once the target's HeaderAck says 1.3.
 */
export const STREAM_FORMAT = { major: 1, minor: 3 } as const;

/**
 * The minor a source writes in its header: the lowest whose header a target must understand.
 * 1.3 changed no header field (raw page frames wait for the target's answer), so a 1.2 target
 * still takes a stream from this source, with protobuf page frames.
 */
export const HEADER_FORMAT_MINOR = 2;
