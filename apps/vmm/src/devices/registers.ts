import type { AccessWidth } from '../memory/mmio.js';

/** Extracts the `width`-byte field at byte `offset & 3` of a 32-bit register value. */
export function readField(reg: number, offset: number, width: AccessWidth): number {
  if (width === 4) return reg | 0;
  const shift = (offset & 3) * 8;
  return (reg >>> shift) & (width === 2 ? 0xffff : 0xff);
}

/** Merges a `width`-byte write at byte `offset & 3` into a 32-bit register value. */
export function writeField(reg: number, offset: number, width: AccessWidth, value: number): number {
  if (width === 4) return value | 0;
  const shift = (offset & 3) * 8;
  const mask = (width === 2 ? 0xffff : 0xff) << shift;
  return (reg & ~mask) | ((value << shift) & mask) | 0;
}
