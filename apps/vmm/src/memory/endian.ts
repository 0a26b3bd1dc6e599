/**
 * Guest RAM is accessed through host-endian typed arrays; RISC-V is little-endian, so the
 * host must be too. Call once at start-up.
 *
 * @throws Error on a big-endian host.
 */
export function assertLittleEndianHost(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new Error('Handoff needs a little-endian host: guest RAM is accessed with typed arrays');
  }
}
