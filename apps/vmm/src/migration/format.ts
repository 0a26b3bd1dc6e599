/** The migration stream's format version (PROTOCOL.md). */

/** Stream format version: major must match, the receiver loads minor <= its own. */
export const STREAM_FORMAT = { major: 1, minor: 1 } as const;
