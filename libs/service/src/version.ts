/** Release version of the Handoff services and tools (independent of wire/file format versions). */
export const HANDOFF_VERSION = '0.1.0';
