/**
 * The source's view of how it reaches the target, chosen once at setup ({@link chooseTransport})
 * and, when the migration needs a stream, the stream itself ({@link StreamToTarget}): requests
 * out with flow control, replies in order, one error for a broken stream or a refusal.
 *
 * @packageDocumentation
 */
import type { vmmStream } from '@handoff/proto';
import type { Logger, TlsMaterial } from '@handoff/service';
import { MigrationError } from '../../model/migration-error.js';
import { grpcOutgoing, type OutgoingChannel, type OutgoingEvents } from './channel.js';
import { connectDataChannel } from './data-channel.js';

/** Where the target listens, as PrepareIncoming answered. */
export interface TargetEndpoints {
  /** Its gRPC address (MigrationService.Incoming). */
  readonly address: string;
  /** Its data channel (`unix:/path` or `host:port`), or null when it has none. */
  readonly dataChannel: string | null;
  /** The switchover slot it prepared for this VM, or null. */
  readonly switchoverSlot: string | null;
}

/** How an outgoing migration reaches its target. */
export type Transport =
  /**
   * The vCPU threads switch over through the prepared slot alone; no stream. Only with the
   * target's data channel to probe: with no stream to break, that tells when the target died.
   */
  | { readonly kind: 'switchover-slot'; readonly slot: string; readonly probe: string }
  /** A stream: on the data channel when the target has one (gRPC when it cannot be reached). */
  | { readonly kind: 'stream'; readonly dataChannel: string | null };

/**
 * The transport of a migration to `target`: the prepared slot alone when every block travels
 * by reference (`byReference`) and the target offers both a slot and a data channel, else a
 * stream.
 */
export function chooseTransport(target: TargetEndpoints, byReference: boolean): Transport {
  if (byReference && target.switchoverSlot !== null && target.dataChannel !== null) {
    return { kind: 'switchover-slot', slot: target.switchoverSlot, probe: target.dataChannel };
  }
  return { kind: 'stream', dataChannel: target.dataChannel };
}

type Reply = NonNullable<vmmStream.IncomingResponse['reply']>;

/** The source's end of one migration stream. */
export class StreamToTarget {
  private readonly replies: vmmStream.IncomingResponse[] = [];
  private error: Error | null = null;
  private wake: (() => void) | undefined;
  private channel: OutgoingChannel | null = null;

  /**
   * @param target - the target's gRPC address, for messages
   * @param checkCancelled - throws when the migration was cancelled (asked before every wait)
   */
  private constructor(
    private readonly target: string,
    private readonly checkCancelled: () => void,
  ) {}

  /**
   * Opens the stream with its first request: on the data channel when there is one and it can
   * be reached, else on gRPC (`grpcClient()`, created on demand).
   */
  static async open(opts: {
    target: string;
    dataChannel: string | null;
    grpcClient: () => vmmStream.MigrationServiceClient;
    /** This vmm's TLS material for a TCP data channel (null: plaintext). */
    dataTls?: TlsMaterial | null;
    first: vmmStream.IncomingRequest;
    checkCancelled: () => void;
    logger: Logger;
  }): Promise<StreamToTarget> {
    const s = new StreamToTarget(opts.target, opts.checkCancelled);
    const events: OutgoingEvents = {
      reply: (r) => {
        s.replies.push(r);
        s.wake?.();
      },
      broken: (e) => {
        s.error ??= e;
        s.wake?.();
      },
    };
    if (opts.dataChannel !== null) {
      try {
        s.channel = await connectDataChannel(
          opts.dataChannel,
          events,
          opts.first,
          opts.dataTls ?? null,
        );
        return s;
      } catch (err) {
        opts.logger.warn(
          { error: (err as Error).message },
          'migration: the data channel is unreachable; using the gRPC stream',
        );
      }
    }
    opts.checkCancelled();
    s.channel = grpcOutgoing(opts.grpcClient(), events);
    await s.send(opts.first);
    return s;
  }

  /** What carries it. */
  get kind(): 'data-channel' | 'grpc' {
    return this.channel!.kind;
  }

  /**
   * Sends a request, waiting while the transport's buffer is full.
   *
   * @throws MigrationError `MIGRATION_TARGET_FAILED` when the stream broke or the target sent
   *   an error; `MIGRATION_CANCELLED`
   */
  async send(req: vmmStream.IncomingRequest): Promise<void> {
    const channel = this.channel!;
    this.failIfBroken();
    if (!channel.write(req)) {
      await channel.drained();
      this.failIfBroken();
    }
    // A StreamError may arrive at any time: stop sending at once.
    const first = this.replies[0];
    if (first?.reply?.$case === 'error') StreamToTarget.unexpected(first.reply, 'no error');
  }

  /**
   * The target's next reply within `timeoutMs`; `what` names it in the error.
   *
   * @throws MigrationError `MIGRATION_TARGET_FAILED` (broken, refused, or no answer in time)
   */
  async reply(timeoutMs: number, what: string): Promise<Reply> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const r = this.replies.shift();
      if (r?.reply !== undefined) return r.reply;
      this.failIfBroken();
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new MigrationError(
          'MIGRATION_TARGET_FAILED',
          `the target at ${this.target} did not answer ${what} within ${timeoutMs} ms`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** Wakes a {@link StreamToTarget.reply} wait (after a cancel). */
  interrupt(): void {
    this.wake?.();
  }

  /** Abandons the stream (the target sees it cancelled). Idempotent. */
  close(): void {
    this.channel?.close();
  }

  /**
   * Throws for a reply other than the one `wanted`: the target's refusal, or a protocol error.
   *
   * @throws MigrationError `MIGRATION_TARGET_FAILED`, `MIGRATION_FAILED`
   */
  static unexpected(reply: Reply, wanted: string): never {
    if (reply.$case === 'error') {
      throw new MigrationError(
        'MIGRATION_TARGET_FAILED',
        `the target refused the migration: ${reply.value.code}: ${reply.value.message}`,
      );
    }
    throw new MigrationError(
      'MIGRATION_FAILED',
      `the target sent ${reply.$case} where ${wanted} was due`,
    );
  }

  private failIfBroken(): void {
    this.checkCancelled();
    const first = this.replies[0];
    if (first?.reply?.$case === 'error') StreamToTarget.unexpected(first.reply, 'no error');
    if (this.error !== null) {
      throw new MigrationError(
        'MIGRATION_TARGET_FAILED',
        `the stream to ${this.target} broke: ${this.error.message}`,
      );
    }
  }
}
