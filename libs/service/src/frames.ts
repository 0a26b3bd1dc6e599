import type { Socket } from 'node:net';

/**
 * Length-prefixed frames over a byte stream (a unix or TCP socket): the raw side channels that
 * carry protobuf messages where a gRPC call costs too much (the vmm data channel, memstore's
 * lease channel). A frame is a 4-byte big-endian payload length, then the payload. The payload
 * format (which protobuf message) is the channel's business; this module only cuts frames,
 * refuses oversize ones and bounds how long a begun frame may take to arrive (a peer that
 * announces 3 MiB and sends 10 bytes would otherwise hold the connection and its buffer open
 * for ever), because every incoming stream is hostile.
 */

/** Bytes of the length prefix. */
export const FRAME_HEADER_BYTES = 4;

/** How long a begun frame may take to arrive in full, by default (see {@link FramedSocket}). */
export const DEFAULT_FRAME_TIMEOUT_MS = 10_000;

/**
 * Thrown (and emitted by {@link FramedSocket}) when the peer breaks the framing: an oversize
 * length, a stream that ends mid-frame, or (`timedOut`) a frame that did not arrive in time.
 */
export class FrameError extends Error {
  readonly code = 'SERVICE_BAD_FRAME';
  /** The peer stalled inside a frame past the bound (see {@link FramedSocket}). */
  readonly timedOut: boolean;

  constructor(message: string, opts: { timedOut?: boolean } = {}) {
    super(message);
    this.timedOut = opts.timedOut ?? false;
  }
}

/**
 * Recycled buffers for assembling big frames: a stream of 1 MiB frames would otherwise allocate
 * a fresh 1 MiB buffer per frame, and V8 answers that much new external memory with frequent
 * full garbage collections. {@link RecycledBuffers.take} hands out a view of a pooled buffer (or a
 * fresh one when none is free); whoever is done with a frame's bytes gives them back with
 * {@link RecycledBuffers.give}, and only then may the buffer carry another frame. Taking never
 * waits (a decoder cannot); flow control is the reader's business. (memstore's ReadPages pool is
 * the other kind: a fixed set whose acquire waits, bounding a stream's bytes in flight.)
 */
export class RecycledBuffers {
  private readonly free: ArrayBuffer[] = [];
  private readonly owned = new WeakSet<ArrayBuffer>();

  /**
   * @param bufferBytes capacity of each pooled buffer; bigger requests get a fresh buffer
   * @param maxFree buffers kept for reuse at most
   */
  constructor(
    readonly bufferBytes: number,
    private readonly maxFree: number,
  ) {}

  /** A buffer of exactly `length` bytes (contents undefined). */
  take(length: number): Uint8Array {
    if (length > this.bufferBytes) return new Uint8Array(length);
    let buf = this.free.pop();
    if (buf === undefined) {
      buf = new ArrayBuffer(this.bufferBytes);
      this.owned.add(buf);
    }
    return new Uint8Array(buf, 0, length);
  }

  /**
   * Gives back the buffer under `view` (any view of a buffer from {@link RecycledBuffers.take});
   * anything else is ignored. The caller must hold no other view of it any more.
   */
  give(view: Uint8Array): void {
    const buf = view.buffer as ArrayBuffer;
    if (!this.owned.has(buf) || this.free.length >= this.maxFree) return;
    if (this.free.includes(buf)) return; // given twice: keep one entry
    this.free.push(buf);
  }

  /** Buffers waiting for reuse (tests). */
  get freeCount(): number {
    return this.free.length;
  }
}

/**
 * Cuts a byte stream into frames. Push chunks in arrival order; each call returns the frames
 * completed by that chunk. A frame that lies inside one chunk is returned as a view of it (no
 * copy); a frame spread over chunks is assembled once, in a buffer from `pool` when given.
 */
export class FrameDecoder {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  /** Payload length of the frame being assembled, or -1 while its header is incomplete. */
  private want = -1;
  private assembly: Uint8Array | null = null;
  private filled = 0;
  private done = 0;

  /**
   * @param maxFrameBytes largest payload accepted; a larger length fails the stream
   * @param pool where assembly buffers come from (else each is allocated)
   */
  constructor(
    private readonly maxFrameBytes: number,
    private readonly pool?: RecycledBuffers,
  ) {}

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
        this.assembly = this.pool?.take(this.want) ?? new Uint8Array(this.want);
        this.assembly.set(chunk.subarray(at), 0);
        this.filled = left;
        at = chunk.length;
      }
      this.want = -1;
    }
    this.done += out.length;
    return out;
  }

  /** True when no partial frame is buffered (a clean place for the stream to end). */
  get idle(): boolean {
    return this.assembly === null && this.want < 0 && this.pendingBytes === 0;
  }

  /** Frames completed so far (a partial frame is a new one when this moved since it was seen). */
  get completed(): number {
    return this.done;
  }

  /** The partial frame, for messages: its announced length (-1: header incomplete) and bytes in. */
  get partial(): { readonly length: number; readonly received: number } | null {
    if (this.idle) return null;
    if (this.assembly !== null) return { length: this.assembly.length, received: this.filled };
    return { length: -1, received: this.pendingBytes };
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

/** Options of a {@link FramedSocket}. */
export interface FramedSocketOptions {
  /** Buffers for frames that span socket reads (see {@link RecycledBuffers}). */
  readonly pool?: RecycledBuffers;
  /**
   * Bytes handed to the socket and not yet written to the kernel before
   * {@link FramedSocket.send} says to wait (default 1 MiB). Waiting ends when half of it went
   * out, so the next frames are prepared while earlier ones still flow.
   */
  readonly queueBytes?: number;
  /**
   * How long a begun frame may take to arrive in full (default {@link DEFAULT_FRAME_TIMEOUT_MS};
   * 0: no bound). Time while the owner paused reading does not count. See {@link FramedSocket}.
   */
  readonly frameTimeoutMs?: number;
}

/** What a {@link StallWatch} reads of a frame decoder. */
export interface WatchedDecoder {
  /** No partial frame is buffered. */
  readonly idle: boolean;
  /** Frames completed so far. */
  readonly completed: number;
  /** The partial frame: its length (-1 while the header is incomplete) and bytes received. */
  readonly partial: { readonly length: number; readonly received: number } | null;
}

/**
 * The per-socket watch of a frame bound: re-armed without allocation and only while a partial
 * frame is buffered, it looks every half bound and fails the frame the third time it sees the
 * same one (so a frame gets at least the bound and at most one and a half). A paused reader's
 * frame is its owner's doing, never the peer's. An idle connection costs nothing.
 */
export class StallWatch {
  private timer: NodeJS.Timeout | undefined;
  private watching = false;
  /** Looks at the same partial frame in a row, and the decoder's count of frames then. */
  private strikes = 0;
  private seenCompleted = -1;
  private stopped = false;

  /**
   * @param halfMs - half the frame bound (0: no bound)
   * @param paused - whether the owner holds reading back now
   * @param stalled - called once with the error when a frame stalled (the owner closes)
   */
  constructor(
    private readonly decoder: WatchedDecoder,
    private readonly halfMs: number,
    private readonly paused: () => boolean,
    private readonly stalled: (err: FrameError) => void,
  ) {}

  /** After bytes landed: starts watching a partial frame, if one is buffered. */
  landed(): void {
    if (!this.watching && !this.stopped && this.halfMs > 0 && !this.decoder.idle) this.start();
  }

  /** The connection ended: no more looks. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private start(): void {
    this.watching = true;
    this.strikes = 0;
    this.seenCompleted = this.decoder.completed;
    if (this.timer === undefined) {
      this.timer = setTimeout(() => this.look(), this.halfMs);
      this.timer.unref();
    } else {
      this.timer.refresh();
    }
  }

  private look(): void {
    if (this.stopped) return;
    if (this.decoder.idle) {
      this.watching = false;
      return;
    }
    const completed = this.decoder.completed;
    if (this.paused() || completed !== this.seenCompleted) {
      // Paused: the owner holds the frame back, not the peer. Moved: another frame since.
      this.strikes = 0;
      this.seenCompleted = completed;
    } else if (++this.strikes >= 2) {
      const p = this.decoder.partial!;
      const what =
        p.length < 0
          ? `a frame header (${p.received} of ${FRAME_HEADER_BYTES} bytes)`
          : `a frame of ${p.length} bytes (${p.received} received)`;
      this.stopped = true;
      this.stalled(
        new FrameError(
          `${what} was still incomplete ${this.halfMs * 2} ms after it began; the peer stalled ` +
            'mid-frame, so the connection is closed',
          { timedOut: true },
        ),
      );
      return;
    }
    this.timer!.refresh();
  }
}

/**
 * A socket speaking frames. Writes go out in order; {@link FramedSocket.send} returns false
 * when `queueBytes` wait to be written (await {@link FramedSocket.drained} before sending more).
 * Reading pauses while the owner says it is busy ({@link FramedSocket.pause}).
 *
 * A frame that began arriving must be complete within `frameTimeoutMs` of reading time (paused
 * time does not count), else the stream fails with a {@link FrameError} (`timedOut`) and the
 * socket is destroyed: a peer that stalls mid-frame cannot hold the connection open. One timer
 * per socket watches it, re-armed without allocation and only while a partial frame is
 * buffered: it looks every half bound and fails the frame the third time it sees the same one,
 * so a frame gets at least the bound and at most one and a half. Reading a chunk costs two
 * field reads more; an idle connection costs nothing.
 */
export class FramedSocket {
  private readonly decoder: FrameDecoder;
  private readonly queueBytes: number;
  private queued = 0;
  private waiters: (() => void)[] = [];
  private done = false;
  private readonly watch: StallWatch;
  private paused = false;

  constructor(
    readonly socket: Socket,
    maxFrameBytes: number,
    private readonly on: FramedSocketHandlers,
    opts: FramedSocketOptions = {},
  ) {
    this.decoder = new FrameDecoder(maxFrameBytes, opts.pool);
    this.queueBytes = opts.queueBytes ?? 1024 * 1024;
    this.watch = new StallWatch(
      this.decoder,
      Math.max(0, (opts.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS) / 2),
      () => this.paused,
      (err) => {
        this.finish(err);
        socket.destroy();
      },
    );
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
      this.watch.landed();
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
    socket.on('close', () => {
      this.finish(new Error('the connection closed'));
      this.wakeWriters();
    });
  }

  /** Sends one frame made of `parts` (concatenated on the wire). */
  send(...parts: Uint8Array[]): boolean {
    let length = 0;
    for (const p of parts) length += p.length;
    const size = FRAME_HEADER_BYTES + length;
    this.queued += size;
    const written = (): void => {
      this.queued -= size;
      if (this.queued <= this.queueBytes / 2) this.wakeWriters();
    };
    if (length <= 64 * 1024) {
      // Small frames go out as one write (one syscall, one segment).
      const one = new Uint8Array(size);
      one.set(frameHeader(length), 0);
      let at = FRAME_HEADER_BYTES;
      for (const p of parts) {
        one.set(p, at);
        at += p.length;
      }
      this.socket.write(one, written);
    } else {
      this.socket.cork();
      this.socket.write(frameHeader(length));
      for (let k = 0; k < parts.length; k++) {
        this.socket.write(parts[k]!, k === parts.length - 1 ? written : undefined);
      }
      this.socket.uncork();
    }
    return this.queued < this.queueBytes;
  }

  /** Resolves when half the send queue went out (at once when it is short), or on close. */
  drained(): Promise<void> {
    if (this.socket.destroyed || this.queued <= this.queueBytes / 2) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Stops delivering frames until {@link FramedSocket.resume}. */
  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    this.paused = false;
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

  private wakeWriters(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const resolve of w) resolve();
  }

  private finish(error: Error | null): void {
    if (this.done) return;
    this.done = true;
    this.watch.stop();
    this.on.closed(error);
  }
}
