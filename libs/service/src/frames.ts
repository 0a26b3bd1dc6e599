import type { Socket } from 'node:net';

/**
 * Length-prefixed frames over a byte stream (a unix or TCP socket): the raw side channels that
 * carry protobuf messages where a gRPC call costs too much (the vmm data channel, memstore's
 * lease channel). A frame is a 4-byte big-endian payload length, then the payload. The payload
 * format (which protobuf message) is the channel's business; this module only cuts frames and
 * refuses oversize ones, because every incoming stream is hostile.
 */

/** Bytes of the length prefix. */
export const FRAME_HEADER_BYTES = 4;

/** Thrown (and emitted by {@link FramedSocket}) when the peer breaks the framing. */
export class FrameError extends Error {
  readonly code = 'SERVICE_BAD_FRAME';
}

/**
 * Cuts a byte stream into frames. Push chunks in arrival order; each call returns the frames
 * completed by that chunk. A frame that lies inside one chunk is returned as a view of it (no
 * copy); a frame spread over chunks is assembled once.
 */
export class FrameDecoder {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  /** Payload length of the frame being assembled, or -1 while its header is incomplete. */
  private want = -1;
  private assembly: Uint8Array | null = null;
  private filled = 0;

  /** @param maxFrameBytes largest payload accepted; a larger length fails the stream */
  constructor(private readonly maxFrameBytes: number) {}

  /** @throws FrameError when a length prefix exceeds the limit */
  push(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.assembly !== null) {
        const n = Math.min(chunk.length - at, this.assembly.length - this.filled);
        this.assembly.set(chunk.subarray(at, at + n), this.filled);
        this.filled += n;
        at += n;
        if (this.filled === this.assembly.length) {
          out.push(this.assembly);
          this.assembly = null;
        }
        continue;
      }
      if (this.want < 0) {
        // Header: usually whole in this chunk; otherwise gather its bytes first.
        if (this.pendingBytes === 0 && chunk.length - at >= FRAME_HEADER_BYTES) {
          this.want = readLength(chunk, at);
          at += FRAME_HEADER_BYTES;
        } else {
          const n = Math.min(FRAME_HEADER_BYTES - this.pendingBytes, chunk.length - at);
          this.pending.push(chunk.subarray(at, at + n));
          this.pendingBytes += n;
          at += n;
          if (this.pendingBytes < FRAME_HEADER_BYTES) break;
          const head = concat(this.pending, FRAME_HEADER_BYTES);
          this.pending = [];
          this.pendingBytes = 0;
          this.want = readLength(head, 0);
        }
        if (this.want > this.maxFrameBytes) {
          throw new FrameError(
            `a frame of ${this.want} bytes arrived; this channel takes at most ` +
              `${this.maxFrameBytes} bytes per frame`,
          );
        }
      }
      const left = chunk.length - at;
      if (left >= this.want) {
        out.push(chunk.subarray(at, at + this.want));
        at += this.want;
      } else {
        this.assembly = new Uint8Array(this.want);
        this.assembly.set(chunk.subarray(at), 0);
        this.filled = left;
        at = chunk.length;
      }
      this.want = -1;
    }
    return out;
  }

  /** True when no partial frame is buffered (a clean place for the stream to end). */
  get idle(): boolean {
    return this.assembly === null && this.want < 0 && this.pendingBytes === 0;
  }
}

function readLength(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The 4-byte length prefix of a payload of `length` bytes. */
export function frameHeader(length: number): Uint8Array {
  const h = new Uint8Array(FRAME_HEADER_BYTES);
  h[0] = length >>> 24;
  h[1] = (length >>> 16) & 0xff;
  h[2] = (length >>> 8) & 0xff;
  h[3] = length & 0xff;
  return h;
}

/** Events of a {@link FramedSocket}. */
export interface FramedSocketHandlers {
  /** One whole frame; the view stays valid (it is never reused). */
  frame(payload: Uint8Array): void;
  /**
   * The socket ended or failed; called once. `error` is null for a clean end (the peer closed
   * between frames), a FrameError for broken framing, or the socket's error.
   */
  closed(error: Error | null): void;
}

/**
 * A socket speaking frames. Writes go out in order; {@link FramedSocket.send} returns false
 * when the kernel buffer is full (await {@link FramedSocket.drained} before sending more).
 * Reading pauses while the owner says it is busy ({@link FramedSocket.pause}).
 */
export class FramedSocket {
  private readonly decoder: FrameDecoder;
  private done = false;

  constructor(
    readonly socket: Socket,
    maxFrameBytes: number,
    private readonly on: FramedSocketHandlers,
  ) {
    this.decoder = new FrameDecoder(maxFrameBytes);
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => {
      if (this.done) return;
      let frames: Uint8Array[];
      try {
        frames = this.decoder.push(chunk);
      } catch (err) {
        this.finish(err as Error);
        socket.destroy();
        return;
      }
      for (const f of frames) {
        if (this.done) return;
        this.on.frame(f);
      }
    });
    socket.on('end', () => {
      this.finish(
        this.decoder.idle ? null : new FrameError('the stream ended in the middle of a frame'),
      );
    });
    socket.on('error', (err) => this.finish(err));
    socket.on('close', () => this.finish(new Error('the connection closed')));
  }

  /** Sends one frame made of `parts` (concatenated on the wire). */
  send(...parts: Uint8Array[]): boolean {
    let length = 0;
    for (const p of parts) length += p.length;
    if (length <= 64 * 1024) {
      // Small frames go out as one write (one syscall, one segment).
      const one = new Uint8Array(FRAME_HEADER_BYTES + length);
      one.set(frameHeader(length), 0);
      let at = FRAME_HEADER_BYTES;
      for (const p of parts) {
        one.set(p, at);
        at += p.length;
      }
      return this.socket.write(one);
    }
    this.socket.cork();
    this.socket.write(frameHeader(length));
    let ok = true;
    for (const p of parts) ok = this.socket.write(p);
    this.socket.uncork();
    return ok && this.socket.writableLength < this.socket.writableHighWaterMark;
  }

  /** Resolves when the socket can take more, or at once when it already can. */
  drained(): Promise<void> {
    if (this.socket.destroyed || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  /** Stops delivering frames until {@link FramedSocket.resume}. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** Ends the stream after pending writes; the peer sees a clean end. */
  end(): void {
    this.socket.end();
  }

  /** Closes at once. */
  destroy(): void {
    this.socket.destroy();
  }

  get closed(): boolean {
    return this.done;
  }

  private finish(error: Error | null): void {
    if (this.done) return;
    this.done = true;
    this.on.closed(error);
  }
}
