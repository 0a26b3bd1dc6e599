/**
 * The two ends of a migration stream, independent of what carries it: the gRPC
 * MigrationService.Incoming call, or the raw data channel (data-channel.ts). Both carry the
 * same protobuf messages in the same order (PROTOCOL.md); only the framing differs.
 */
import type * as grpc from '@grpc/grpc-js';
import type { vmmStream } from '@handoff/proto';
import { anyEvent } from '@handoff/service';
import { MigrationError } from '../../model/migration-error.js';

/** Frames a reader keeps before it stops reading from the peer (flow control). */
const READ_AHEAD = 4;

/** The target's end: requests in, replies out. */
export interface IncomingChannel {
  /** The next request, or null at a clean end. @throws MigrationError when the stream broke */
  next(): Promise<vmmStream.IncomingRequest | null>;
  /** Sends a reply (never blocks; replies are few and small). */
  write(reply: vmmStream.IncomingResponse): void;
  /** Ends the reply direction after pending writes. */
  end(): void;
  /** True once the source is gone (nothing written reaches it). */
  readonly gone: boolean;
  /**
   * The id of the source vmm as the transport authenticated it (the CN of its verified client
   * certificate), or null where the transport names nobody: a plaintext (`--insecure`) server,
   * or the data channel's unix socket, which only this user's processes can open. A stream with
   * an id presents a token only PrepareIncoming issued for that id (prepare.ts).
   */
  readonly peer: string | null;
  /**
   * The page frame's bytes are no longer needed (written, or never to be): the channel may
   * reuse their memory for a later frame. Optional; a channel may ignore it.
   */
  release?(frame: vmmStream.PageFrame): void;
}

/** What the source's end reports as it happens. */
export interface OutgoingEvents {
  reply(r: vmmStream.IncomingResponse): void;
  /** The stream broke or the target ended it; called at most once. */
  broken(err: Error): void;
}

/** The source's end: requests out; replies arrive through {@link OutgoingEvents}. */
export interface OutgoingChannel {
  /** What carries the stream, for logs: `grpc` or `data-channel`. */
  readonly kind: 'grpc' | 'data-channel';
  /** Queues a request; false when the caller should await {@link OutgoingChannel.drained}. */
  write(req: vmmStream.IncomingRequest): boolean;
  /** Resolves when more can be written, or when the stream broke. */
  drained(): Promise<void>;
  /** Abandons the stream (the target sees it cancelled). */
  close(): void;
}

/**
 * A queue of requests with flow control: `pause`/`resume` throttle the transport while
 * {@link READ_AHEAD} requests wait.
 */
export class RequestQueue {
  private readonly queue: vmmStream.IncomingRequest[] = [];
  private ended = false;
  private error: Error | null = null;
  private wake: (() => void) | undefined;

  constructor(private readonly flow: { pause(): void; resume(): void }) {}

  push(m: vmmStream.IncomingRequest): void {
    this.queue.push(m);
    if (this.queue.length >= READ_AHEAD) this.flow.pause();
    this.wake?.();
  }

  /** The source ended the stream (cleanly). */
  end(): void {
    this.ended = true;
    this.wake?.();
  }

  /** The stream broke; the first error wins. */
  fail(e: Error): void {
    this.error ??= e;
    this.wake?.();
  }

  async next(): Promise<vmmStream.IncomingRequest | null> {
    for (;;) {
      const m = this.queue.shift();
      if (m !== undefined) {
        if (this.queue.length < 2) this.flow.resume();
        return m;
      }
      if (this.error !== null) {
        throw new MigrationError(
          'MIGRATION_BAD_STREAM',
          `the stream broke before completion: ${this.error.message}`,
        );
      }
      if (this.ended) return null;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }
}

/**
 * The target's end of a gRPC Incoming call. Reading stops early without destroying the call,
 * so the last reply still goes out.
 */
export function grpcIncoming(
  call: grpc.ServerDuplexStream<vmmStream.IncomingRequest, vmmStream.IncomingResponse>,
  /** The caller's verified id (null on a plaintext server). */
  peer: string | null,
): IncomingChannel {
  const q = new RequestQueue(call);
  call.on('data', (m: vmmStream.IncomingRequest) => q.push(m));
  call.on('end', () => q.end());
  call.on('error', (e: Error) => q.fail(e));
  call.on('cancelled', () => q.fail(new Error('the source cancelled the stream')));
  return {
    next: () => q.next(),
    write: (reply) => void call.write(reply),
    end: () => call.end(),
    get gone() {
      return call.cancelled;
    },
    peer,
  };
}

/** The source's end of a gRPC Incoming call on `client`. */
export function grpcOutgoing(
  client: vmmStream.MigrationServiceClient,
  events: OutgoingEvents,
): OutgoingChannel {
  const call = client.incoming();
  let broken = false;
  const fail = (e: Error): void => {
    if (broken) return;
    broken = true;
    events.broken(e);
  };
  call.on('data', (r: vmmStream.IncomingResponse) => events.reply(r));
  call.on('error', fail);
  call.on('end', () => fail(new Error('the target ended the stream')));
  return {
    kind: 'grpc',
    write: (req) => call.write(req),
    drained: () => (broken ? Promise.resolve() : anyEvent(call, ['drain', 'error', 'end'])),
    close: () => {
      try {
        call.cancel();
      } catch {
        /* already closed */
      }
    },
  };
}
