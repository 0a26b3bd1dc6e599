/**
 * A VM's console output on its way to the host, batched: posted when {@link OUT_CAPACITY} piled
 * up, and whenever the vCPU asks (every couple of milliseconds while it runs, before it sleeps,
 * at every state change). The buffer starts small and grows with what the guest writes, so a
 * quiet VM holds a few hundred bytes, not a full batch.
 *
 * @packageDocumentation
 */

/** Output is posted when this much piled up. */
export const OUT_CAPACITY = 64 * 1024;
/** The first buffer of a VM that writes anything. */
const FIRST_BYTES = 256;
const NONE = new Uint8Array(0);

/** Console output of one VM. */
export class OutputBatch {
  private buf: Uint8Array<ArrayBuffer> = NONE;
  private len = 0;
  /** performance.now() of the last post. */
  lastFlush = 0;

  /** @param post receives each batch (a fresh copy, transferable) */
  constructor(private readonly post: (bytes: Uint8Array<ArrayBuffer>) => void) {}

  /** The UART's sink: one byte. */
  readonly put = (byte: number): void => {
    if (this.len === this.buf.length) this.makeRoom();
    this.buf[this.len++] = byte;
  };

  /** Whether bytes wait to be posted. */
  get pending(): boolean {
    return this.len > 0;
  }

  /** Posts what piled up (nothing when empty). */
  flush(): void {
    if (this.len === 0) return;
    const bytes = this.buf.slice(0, this.len);
    this.len = 0;
    this.lastFlush = performance.now();
    this.post(bytes);
  }

  private makeRoom(): void {
    if (this.buf.length >= OUT_CAPACITY) {
      this.flush();
      return;
    }
    const bigger = new Uint8Array(
      Math.min(OUT_CAPACITY, Math.max(FIRST_BYTES, this.buf.length * 2)),
    );
    bigger.set(this.buf.subarray(0, this.len));
    this.buf = bigger;
  }
}
