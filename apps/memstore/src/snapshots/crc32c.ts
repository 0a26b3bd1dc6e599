import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/**
 * CRC-32C (Castagnoli, the iSCSI polynomial 0x1EDC6F41, reflected; check value of "123456789"
 * is 0xE3069283), hardware-accelerated where the CPU has it. Pass the previous result as `seed`
 * to continue a checksum over more bytes.
 */
export function crc32c(bytes: Uint8Array, seed = 0): number {
  return nativeCrc32c(bytes, seed) >>> 0;
}

/** `0x1234abcd` for messages. */
export function hex32(value: number): string {
  return `0x${(value >>> 0).toString(16).padStart(8, '0')}`;
}
