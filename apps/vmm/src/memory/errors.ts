/** Stable codes of {@link MemoryError}. */
export type MemoryErrorCode =
  | 'bad-block' // a RAM block description is invalid (size, alignment, buffer too small)
  | 'overlap' // a RAM block or device overlaps another mapping
  | 'out-of-range'; // a host-side access falls outside RAM

/** Raised by the physical address space for host-side misuse (never for guest accesses, which trap). */
export class MemoryError extends Error {
  override readonly name = 'MemoryError';
  constructor(
    readonly code: MemoryErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** True when `e` is a {@link MemoryError} (works across module copies, unlike `instanceof`). */
export function isMemoryError(e: unknown): e is MemoryError {
  return e instanceof Error && e.name === 'MemoryError' && 'code' in e;
}
