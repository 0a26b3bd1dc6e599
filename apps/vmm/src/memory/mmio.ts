/** Access width of a memory operation, in bytes. */
export type AccessWidth = 1 | 2 | 4;

/**
 * A memory-mapped device window. Offsets are relative to `base`; `read` returns the value
 * zero-extended to 32 bits (the CPU sign-extends). Devices decide what unsupported widths or
 * offsets do (usually: read 0, ignore the write); they never fault, except that a `wordOnly`
 * device's narrower accesses fault before they reach it.
 */
export interface MmioDevice {
  /** Short name for diagnostics, e.g. `uart0`. */
  readonly name: string;
  /** Guest-physical base address. */
  readonly base: number;
  /** Window size in bytes. */
  readonly size: number;
  /** When true, accesses narrower than 32 bits fault as if unmapped (QEMU's PLIC takes only words). */
  readonly wordOnly?: boolean;
  read(offset: number, width: AccessWidth): number;
  write(offset: number, width: AccessWidth, value: number): void;
}
