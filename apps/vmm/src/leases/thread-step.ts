/**
 * The lease step of a switchover, run by the target's vCPU thread (switchover/README.md), in one
 * of two ways; protocol.ts prepares either on the main thread:
 *
 * - **armed** ({@link ArmsPlan}): memstore armed each transfer ahead of time (ArmTransfer) in a
 *   slot of its arms file; the thread flips every slot's word with one compare-and-set, and
 *   the lease is here from that instant. memstore settles it later (ResolveTransfer, or before
 *   any other call on the region). No message, no memstore wake-up inside the downtime.
 * - **channel** ({@link ChannelPlan}, when memstore cannot arm, e.g. a persistent region):
 *   TransferLease over memstore's lease channel with blocking socket calls, sent the moment the
 *   source stopped and answered while the state is restored.
 *
 * The channel's requests are encoded by the main thread (protocol.ts `channelTransfers`); this side
 * reads only the fields it must check from the answers — the request id, and the lease's holder
 * and epoch or memstore's error — with the protobuf wire reader, because the generated module
 * of memstore's messages also loads the gRPC library (≈0.1 s per thread).
 *
 * Wire: the lease channel's framing (4-byte big-endian length, then a LeaseChannelRequest /
 * LeaseChannelResponse; proto/handoff/memstore/v1/lease_channel.proto). The connection's first
 * request is a hello the main thread encoded (a one-time session token of this vmm).
 */
import { closeSync } from 'node:fs';
import { BinaryReader } from '@bufbuild/protobuf/wire';
import {
  connectUnixBlocking,
  mapFile,
  readExactSync,
  writeAllSync,
  type Mapping,
} from '@handoff/shm';

/** Largest answer accepted (memstore's frame limit). */
const MAX_ANSWER_BYTES = 1024 * 1024;

/** One TransferLease of the switchover, as the main thread prepared it. */
export interface LeaseTransfer {
  /** The LeaseChannelRequest (a transferLease call), encoded. */
  readonly request: Uint8Array;
  /** Its request id. */
  readonly id: bigint;
  /** The holder the lease must name afterwards (this VM on this vmm). */
  readonly toHolder: string;
  /** The epoch the source held; the answer must carry this + 1. */
  readonly fromEpoch: bigint;
}

/** TransferLease over memstore's lease channel. */
export interface ChannelPlan {
  readonly kind: 'channel';
  /** memstore's lease channel socket. */
  readonly socketPath: string;
  /**
   * The connection's first request, an encoded LeaseChannelRequest hello with a one-time
   * session token (memstore serves lease calls only after it); sent and answered at connect.
   */
  readonly hello: Uint8Array;
  readonly transfers: readonly LeaseTransfer[];
  /** Bound on the connect and on each blocking read or write; also how long the state may take. */
  readonly timeoutMs: number;
}

/** One armed transfer: the word to flip in memstore's arms file (ArmTransferResponse). */
export interface ArmedTransfer {
  readonly regionName: string;
  /** Byte offset of the slot's word; a multiple of 4 inside the file. */
  readonly offset: number;
  readonly armedWord: number;
  readonly flippedWord: number;
  /** The lease's epoch once flipped. */
  readonly epoch: number;
}

/** Transfers memstore armed; the flips move the leases. */
export interface ArmsPlan {
  readonly kind: 'armed';
  /** memstore's arms file. */
  readonly armsPath: string;
  readonly transfers: readonly ArmedTransfer[];
  /** How long the state may take after the stop. */
  readonly timeoutMs: number;
}

/** What the lease step needs in the vCPU thread. */
export type LeasePlan = ChannelPlan | ArmsPlan;

/**
 * The lease step in the vCPU thread: {@link LeaseStep.send} (at the source's stop when
 * {@link LeaseStep.early}, else once the state is restored), then {@link LeaseStep.receive}.
 */
export interface LeaseStep {
  /** Send at the stop (a round trip to overlap), or after the restore (an instant flip). */
  readonly early: boolean;
  /** Never throws; false when not everything went out. */
  send(): boolean;
  /** Never throws: failures come back in the result (a step never sent reports nothing moved). */
  receive(): LeaseResult;
  close(): void;
}

/**
 * Prepares the lease step (connects the socket or maps the arms file), off the downtime path.
 *
 * @throws Error when it cannot be prepared (nothing moved: the caller gives the slot up)
 */
export function openLeaseStep(plan: LeasePlan): LeaseStep {
  return plan.kind === 'armed' ? new ArmedLeases(plan) : new LeaseLink(plan);
}

/** Flips memstore's armed transfers (see the module comment). */
export class ArmedLeases implements LeaseStep {
  readonly early = false;
  private readonly mapping: Mapping<SharedArrayBuffer>;
  private result: LeaseResult | null = null;

  /** Maps the arms file and checks every word's place. @throws Error */
  constructor(private readonly plan: ArmsPlan) {
    this.mapping = mapFile(plan.armsPath);
    for (const t of plan.transfers) {
      if (t.offset % 4 !== 0 || t.offset < 0 || t.offset + 4 > this.mapping.length) {
        this.mapping.close();
        throw new Error(`the armed word at ${t.offset} is not inside ${plan.armsPath}`);
      }
    }
    // Maps each word's page in now (an atomic add of 0 changes nothing): a first touch is a
    // page fault, which would otherwise fall in the downtime at the flip.
    const words = new Int32Array(this.mapping.buffer);
    for (const t of plan.transfers) Atomics.add(words, t.offset >>> 2, 0);
  }

  send(): boolean {
    const words = new Int32Array(this.mapping.buffer);
    const epochs: (number | null)[] = this.plan.transfers.map(() => null);
    for (const [k, t] of this.plan.transfers.entries()) {
      const was = Atomics.compareExchange(words, t.offset >>> 2, t.armedWord, t.flippedWord);
      if (was !== t.armedWord) {
        this.result = {
          ok: false,
          epochs,
          code: 'VMM_LEASE_LOST',
          message:
            `memstore settled the armed lease transfer of region ${t.regionName} before the ` +
            'switchover (the source kept or re-took the lease)',
        };
        return false;
      }
      epochs[k] = t.epoch;
    }
    this.result = { ok: true, epochs };
    return true;
  }

  receive(): LeaseResult {
    return this.result ?? { ok: false, epochs: this.plan.transfers.map(() => null) };
  }

  close(): void {
    this.mapping.close();
  }
}

/** The outcome: the epochs now held (in `transfers` order; null where the lease did not move). */
export interface LeaseResult {
  readonly ok: boolean;
  readonly epochs: readonly (number | null)[];
  /** Why not (a stable code: memstore's, or `VMM_MEMSTORE_UNAVAILABLE`). */
  readonly code?: string;
  readonly message?: string;
  /** True when a request may have been applied without its answer arriving (connection lost). */
  readonly uncertain?: boolean;
}

/**
 * A connected lease channel socket that runs the plan's transfers once: {@link LeaseLink.send},
 * other work, then {@link LeaseLink.receive}.
 */
export class LeaseLink implements LeaseStep {
  readonly early = true;
  private fd: number;
  private sent = false;
  private sendError: Error | null = null;

  /**
   * Connects and says hello now (off the downtime path).
   *
   * @throws Error from the connect, or when memstore refuses the hello
   */
  constructor(private readonly plan: ChannelPlan) {
    this.fd = connectUnixBlocking(plan.socketPath, plan.timeoutMs);
    try {
      writeAllSync(this.fd, frame(plan.hello));
      const header = new Uint8Array(4);
      readExactSync(this.fd, header, 4);
      const length = new DataView(header.buffer).getUint32(0, false);
      if (length === 0 || length > MAX_ANSWER_BYTES) {
        throw new Error(`memstore's answer to the hello claims ${length} bytes`);
      }
      const body = new Uint8Array(length);
      readExactSync(this.fd, body, length);
      const refused = readHelloAnswer(body);
      if (refused !== null) {
        throw new Error(`memstore refused the hello: ${refused.code}: ${refused.message}`);
      }
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /**
   * Sends every transfer request (memstore works on them while the caller goes on). Never
   * throws: false when they could not all be written (see {@link LeaseLink.receive}).
   */
  send(): boolean {
    try {
      for (const t of this.plan.transfers) {
        this.sent = true; // a partial write may still reach memstore
        writeAllSync(this.fd, frame(t.request));
      }
      return true;
    } catch (err) {
      this.sendError = err as Error;
      return false;
    }
  }

  /** Reads the answers to {@link LeaseLink.send}. Never throws: failures come back in the result. */
  receive(): LeaseResult {
    const { transfers } = this.plan;
    const epochs: (number | null)[] = transfers.map(() => null);
    const unavailable = (err: Error): LeaseResult => ({
      ok: false,
      epochs,
      code: 'VMM_MEMSTORE_UNAVAILABLE',
      message: `memstore's lease channel (${this.plan.socketPath}): ${err.message}`,
      uncertain: this.sent,
    });
    if (this.sendError !== null) return unavailable(this.sendError);
    try {
      const header = new Uint8Array(4);
      for (let k = 0; k < transfers.length; k++) {
        readExactSync(this.fd, header, 4);
        const length = new DataView(header.buffer).getUint32(0, false);
        if (length === 0 || length > MAX_ANSWER_BYTES) {
          throw new Error(`memstore's answer claims ${length} bytes`);
        }
        const body = new Uint8Array(length);
        readExactSync(this.fd, body, length);
        const answer = readAnswer(body);
        const at = transfers.findIndex((t) => t.id === answer.id);
        const t = transfers[at];
        if (t === undefined || epochs[at] !== null) {
          throw new Error(`an answer to request ${answer.id} that was not asked`);
        }
        if (answer.error !== undefined) {
          return { ok: false, epochs, code: answer.error.code, message: answer.error.message };
        }
        if (answer.holder !== t.toHolder || answer.epoch !== t.fromEpoch + 1n) {
          return {
            ok: false,
            epochs,
            code: 'VMM_LEASE_LOST',
            message:
              `memstore answered the lease transfer with holder ${answer.holder} at epoch ` +
              `${answer.epoch}; expected ${t.toHolder} at ${t.fromEpoch + 1n}`,
            uncertain: true,
          };
        }
        epochs[at] = Number(answer.epoch);
      }
      return { ok: true, epochs };
    } catch (err) {
      return unavailable(err as Error);
    }
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    if (this.fd < 0) return;
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    this.fd = -1;
  }
}

function frame(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + message.length);
  new DataView(out.buffer).setUint32(0, message.length, false);
  out.set(message, 4);
  return out;
}

interface Answer {
  id: bigint;
  holder?: string;
  epoch?: bigint;
  error?: { code: string; message: string };
}

/**
 * Reads a LeaseChannelResponse: `id` (1), `transfer_lease` (2) → `lease` (1) → `holder` (1),
 * `epoch` (2); `error` (5) → `code` (1), `message` (2). Other fields and results are skipped or
 * refused.
 *
 * @throws Error when the bytes are not such a message
 */
export function readAnswer(bytes: Uint8Array): Answer {
  const r = new BinaryReader(bytes);
  const a: Answer = { id: 0n };
  let result = false;
  while (r.pos < r.len) {
    const [field, type] = r.tag();
    if (field === 1 && type === 0) a.id = BigInt(r.uint64());
    else if (field === 2 && type === 2) {
      result = true;
      const lease = submessage(r.bytes(), 1);
      if (lease === null) throw new Error('a transfer answer without a lease');
      const l = new BinaryReader(lease);
      while (l.pos < l.len) {
        const [f, t] = l.tag();
        if (f === 1 && t === 2) a.holder = l.string();
        else if (f === 2 && t === 0) a.epoch = BigInt(l.uint64());
        else l.skip(t);
      }
    } else if (field === 5 && type === 2) {
      result = true;
      const e = new BinaryReader(r.bytes());
      const error = { code: '', message: '' };
      while (e.pos < e.len) {
        const [f, t] = e.tag();
        if (f === 1 && t === 2) error.code = e.string();
        else if (f === 2 && t === 2) error.message = e.string();
        else e.skip(t);
      }
      a.error = error;
    } else if (field === 3 || field === 4) {
      throw new Error(`an answer of another call (field ${field}) to a lease transfer`);
    } else r.skip(type);
  }
  if (!result) throw new Error('an answer with no result');
  return a;
}

/**
 * Reads the answer to a hello (a LeaseChannelResponse): null for a welcome (`hello`, field 8),
 * memstore's refusal for an `error` (field 5).
 *
 * @throws Error when the bytes are neither
 */
export function readHelloAnswer(bytes: Uint8Array): { code: string; message: string } | null {
  const r = new BinaryReader(bytes);
  let welcomed = false;
  let refusal: { code: string; message: string } | null = null;
  while (r.pos < r.len) {
    const [field, type] = r.tag();
    if (field === 8 && type === 2) {
      r.bytes();
      welcomed = true;
    } else if (field === 5 && type === 2) {
      const e = new BinaryReader(r.bytes());
      refusal = { code: '', message: '' };
      while (e.pos < e.len) {
        const [f, t] = e.tag();
        if (f === 1 && t === 2) refusal.code = e.string();
        else if (f === 2 && t === 2) refusal.message = e.string();
        else e.skip(t);
      }
    } else r.skip(type);
  }
  if (refusal !== null) return refusal;
  if (!welcomed) throw new Error('an answer to the hello that is neither a welcome nor an error');
  return null;
}

/** The bytes of length-delimited field `want` of a message, or null. */
function submessage(bytes: Uint8Array, want: number): Uint8Array | null {
  const r = new BinaryReader(bytes);
  let found: Uint8Array | null = null;
  while (r.pos < r.len) {
    const [f, t] = r.tag();
    if (f === want && t === 2) found = r.bytes();
    else r.skip(t);
  }
  return found;
}
