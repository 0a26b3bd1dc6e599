/**
 * The target's end of a plain (unix or TCP, not TLS) data channel socket, reading frames in
 * place: every read lands where its bytes stay — a frame's length prefix in a 4-byte buffer, its
 * payload (a page frame: ≈1 MiB) straight in a pooled buffer of its own, which the page receiver
 * then writes from. A `'data'` socket would instead hand over a fresh 64 KiB chunk per read, to
 * be copied into the frame's buffer and collected later: a copy of every page byte and a
 * gigabyte of short-lived buffers per gigabyte received, most of the target's CPU here.
 *
 * The framing is {@link FramedSocket}'s (a 4-byte big-endian length, then the payload), and so
 * are its rules: a length over the limit, a stream that ends mid-frame, and a frame still
 * incomplete `frameTimeoutMs` after it began (time paused by the owner does not count) fail the
 * stream with a {@link FrameError} and destroy the socket.
 *
 * @packageDocumentation
 */
import { Socket } from 'node:net';
import {
  FRAME_HEADER_BYTES,
  FrameError,
  frameHeader,
  StallWatch,
  type FramedSocketHandlers,
  type RecycledBuffers,
} from '@handoff/service';

/**
 * Cuts frames out of reads it places itself: {@link InPlaceDecoder.buffer} says where the next
 * read lands, {@link InPlaceDecoder.landed} takes how many bytes did. A frame's payload is read
 * into a buffer from `pool` (a fresh one when it is bigger than the pool's), handed out whole.
 */
export class InPlaceDecoder {
  private readonly head = new Uint8Array(FRAME_HEADER_BYTES);
  private got = 0;
  private frame: Uint8Array | null = null;
  private filled = 0;
  private done = 0;

  constructor(
    private readonly maxFrameBytes: number,
    private readonly pool: RecycledBuffers,
  ) {}

  /** Where the next read lands (never empty): the rest of the frame, or of its length prefix. */
  buffer(): Uint8Array {
    return this.frame !== null ? this.frame.subarray(this.filled) : this.head.subarray(this.got);
  }

  /**
   * `n` bytes landed in the last {@link InPlaceDecoder.buffer}: the frame they complete, or null.
   *
   * @throws FrameError when a length prefix exceeds the limit
   */
  landed(n: number): Uint8Array | null {
    if (this.frame !== null) {
      this.filled += n;
      if (this.filled < this.frame.length) return null;
      const f = this.frame;
      this.frame = null;
      this.done++;
      return f;
    }
    this.got += n;
    if (this.got < FRAME_HEADER_BYTES) return null;
    this.got = 0;
    const h = this.head;
    const length = ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!) >>> 0;
    if (length > this.maxFrameBytes) {
      throw new FrameError(
        `a frame of ${length} bytes arrived; this channel takes at most ` +
          `${this.maxFrameBytes} bytes per frame`,
      );
    }
    if (length === 0) {
      this.done++;
      return new Uint8Array(0);
    }
    this.frame = this.pool.take(length);
    this.filled = 0;
    return null;
  }

  /** True when no partial frame is buffered. */
  get idle(): boolean {
    return this.frame === null && this.got === 0;
  }

  /** Frames completed so far. */
  get completed(): number {
    return this.done;
  }

  /** The partial frame, for messages: its announced length (-1: prefix incomplete) and bytes in. */
  get partial(): { readonly length: number; readonly received: number } | null {
    if (this.frame !== null) return { length: this.frame.length, received: this.filled };
    return this.got === 0 ? null : { length: -1, received: this.got };
  }
}

/**
 * Takes over the connection of `accepted` — a plain socket a server accepted paused
 * (`pauseOnConnect`), nothing read from it yet — as a socket whose reads land where `place`
 * says and are reported to `landed` (Node's `onread`, which only sockets it creates itself
 * take). `accepted` is closed without closing the connection (it leaves its server's count).
 * Null when this Node offers no way to do so; `accepted` is then untouched.
 */
function takeOver(
  accepted: Socket,
  place: () => Uint8Array,
  landed: (n: number) => void,
): Socket | null {
  // Node's own field: the connection's handle, which a new Socket may wrap.
  const holder = accepted as unknown as { _handle: unknown };
  const handle = holder._handle;
  if (handle === null || handle === undefined) return null;
  const socket = new Socket({
    handle,
    allowHalfOpen: true,
    readable: true,
    writable: true,
    onread: {
      buffer: place,
      callback: (n: number) => {
        landed(n);
      },
    },
  } as ConstructorParameters<typeof Socket>[0]);
  holder._handle = null; // the new socket owns the connection now
  accepted.destroy();
  return socket;
}

/** Options of an {@link InPlaceSocket}. */
export interface InPlaceOptions {
  readonly pool: RecycledBuffers;
  /** How long a begun frame may take to arrive in full (0: no bound). */
  readonly frameTimeoutMs: number;
}

/**
 * A plain accepted socket speaking frames, read in place (see the top of this file). Replies are
 * few and small: each goes out as one write.
 */
export class InPlaceSocket {
  private readonly decoder: InPlaceDecoder;
  private done = false;
  private paused = false;
  private readonly watch: StallWatch;
  /** The connection (the socket that took over the accepted one). */
  readonly socket: Socket;

  /** Takes over `accepted` (see {@link InPlaceSocket.open}). */
  private constructor(
    maxFrameBytes: number,
    private readonly on: FramedSocketHandlers,
    opts: InPlaceOptions,
    accepted: Socket,
  ) {
    this.decoder = new InPlaceDecoder(maxFrameBytes, opts.pool);
    this.watch = new StallWatch(
      this.decoder,
      Math.max(0, opts.frameTimeoutMs / 2),
      () => this.paused,
      (err) => {
        this.finish(err);
        this.socket.destroy();
      },
    );
    const socket = takeOver(
      accepted,
      () => this.decoder.buffer(),
      (n) => this.landed(n),
    );
    if (socket === null) throw new Error('cannot read this socket in place');
    this.socket = socket;
    socket.setNoDelay?.(true);
    socket.on('end', () => {
      this.finish(
        this.decoder.idle ? null : new FrameError('the stream ended in the middle of a frame'),
      );
    });
    socket.on('error', (err) => this.finish(err));
    socket.on('close', () => this.finish(new Error('the connection closed')));
  }

  /**
   * Takes over `accepted`, a plain socket accepted paused with nothing read yet, to read its
   * frames in place; null when that cannot be done here (then use `accepted` as it is).
   */
  static open(
    accepted: Socket,
    maxFrameBytes: number,
    on: FramedSocketHandlers,
    opts: InPlaceOptions,
  ): InPlaceSocket | null {
    try {
      return new InPlaceSocket(maxFrameBytes, on, opts, accepted);
    } catch {
      return null;
    }
  }

  /** Sends one frame (one write). */
  send(payload: Uint8Array): void {
    const one = new Uint8Array(FRAME_HEADER_BYTES + payload.length);
    one.set(frameHeader(payload.length), 0);
    one.set(payload, FRAME_HEADER_BYTES);
    this.socket.write(one);
  }

  /** Stops delivering frames until {@link InPlaceSocket.resume}. */
  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    this.paused = false;
    this.socket.resume();
  }

  /** Ends the stream after pending writes. */
  end(): void {
    this.socket.end();
  }

  /** Closes at once. */
  destroy(): void {
    this.socket.destroy();
  }

  private landed(n: number): void {
    if (this.done) return;
    let frame: Uint8Array | null;
    try {
      frame = this.decoder.landed(n);
    } catch (err) {
      this.finish(err as Error);
      this.socket.destroy();
      return;
    }
    this.watch.landed();
    if (frame !== null) this.on.frame(frame);
  }

  private finish(error: Error | null): void {
    if (this.done) return;
    this.done = true;
    this.watch.stop();
    this.on.closed(error);
  }
}
