/**
 * A fixed set of equally sized buffers reused across the messages of one
 * stream: a buffer goes back to the pool when grpc-js has serialised the
 * message that referenced it (the write callback). Waiting for a free buffer
 * bounds the bytes in flight; abort() wakes every waiter (stream cancelled).
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly waiters: ((b: Buffer | undefined) => void)[] = [];
  private aborted = false;

  constructor(bufferBytes: number, count: number) {
    for (let i = 0; i < count; i++) this.free.push(Buffer.allocUnsafe(bufferBytes));
  }

  /** A free buffer, waiting if none is; undefined once aborted. */
  acquire(): Promise<Buffer | undefined> {
    if (this.aborted) return Promise.resolve(undefined);
    const b = this.free.pop();
    if (b !== undefined) return Promise.resolve(b);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Returns a buffer to the pool (or hands it to the oldest waiter). */
  release(b: Buffer): void {
    const waiter = this.waiters.shift();
    if (waiter !== undefined) waiter(this.aborted ? undefined : b);
    else this.free.push(b);
  }

  /** Wakes every waiter with undefined; later acquires return undefined. */
  abort(): void {
    this.aborted = true;
    for (const w of this.waiters.splice(0)) w(undefined);
  }
}
