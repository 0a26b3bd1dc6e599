/**
 * The switchover slot: one small shared file through which the source's vCPU thread hands a
 * migrating VM's device state straight to the target's vCPU thread, without waking either main
 * thread (README.md beside this file). Used when every RAM block travels by reference, so the
 * device state is all that is left to move at the stop.
 *
 * Layout (little-endian; the target creates and owns the file, the source only writes the
 * state and flips the state word):
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 4 | magic `HOFS` |
 * | 4 | 4 | layout version (2) |
 * | 8 | 4 | state word (futex): {@link SlotState} |
 * | 12 | 4 | length of the device state in bytes |
 * | 16 | 8 | float64: the source vCPU's stop, epoch ms |
 * | 24 | 8 | float64: the target vCPU's start, epoch ms |
 * | 32 | 4 | capacity of the data area in bytes |
 * | 40 | 8 | float64: when the source published the state, epoch ms |
 * | 48 | 4 | length of the expectation in bytes |
 * | 52 | 4 | compact state layouts the target reads: bit n = layout n (0: the snapshot container only) |
 * | 64 | ≤ 4032 | the expectation: JSON {@link SlotExpectation}, written by the target |
 * | 4096 | capacity | the device state: a compact state or a snapshot container |
 *
 * The expectation says which VM the target prepared for: the lease holder it armed the
 * transfers from, how its vCPU thread will move the leases, and every block's region, identity
 * and epoch. A source that got the slot from
 * PrepareIncoming (no stream at all) checks it against its own VM before it stops.
 *
 * The state goes in the compact state layout (snapshot/FORMAT.md) when the target lists this
 * build's layout version in its header word, else as a snapshot container (a target of another
 * build); the target tells them apart by their magic.
 *
 * State word transitions — each a compare-and-set, so exactly one side wins every race:
 * `ARMED → STOPPED` (source: its vCPU stopped; the target's thread sends TransferLease at once,
 * overlapping the save) or `ARMED → ABORTED` (either side gives up before that: the state
 * travels on the stream and no lease moves through the slot); `STOPPED → READY` (source: the
 * state is written) or `STOPPED → ABORTED` (source: it could not publish; the target's thread
 * gives back any lease it took, like a target that fails after the final marker);
 * `READY → TAKEN` (target thread read it); `TAKEN → RUNNING | HELD | FAILED` (target thread: the
 * lease moved and the guest runs, or stays paused as it was on the source, or nothing moved). From STOPPED on, only the target thread's outcome decides
 * where the VM runs.
 *
 * The file is hostile input for both sides: the source checks the path's form, that it is a
 * regular file of exactly {@link SLOT_BYTES} with this header, and never reads what it did not
 * write; the target checks the length against the capacity and decodes the state with the
 * validating snapshot codec before anything reaches a device.
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, isAbsolute, join } from 'node:path';
import { futexWait, futexWake, mapFd, mapFile, type Mapping } from '@handoff/shm';
import { COMPACT_STATE_VERSION, compactStateCurrent } from '../snapshot/compact-state.js';
import { MigrationError } from '../model/migration-error.js';

/** Values of the state word. */
export const SlotState = {
  /** Created by the target; its vCPU thread waits for the source's stop. */
  ARMED: 1,
  /** The source's vCPU stopped; its state follows. The target's thread asks for the lease now. */
  STOPPED: 2,
  /** The source's vCPU thread wrote the state. */
  READY: 3,
  /** Not used (before STOPPED) or given up (after it): the device state travels on the stream. */
  ABORTED: 4,
  /** The target's vCPU thread read the state. */
  TAKEN: 5,
  /** The lease moved to the target and its vCPU runs the guest. */
  RUNNING: 6,
  /** The target's vCPU thread could not take over (bad state, lease refused). */
  FAILED: 7,
  /** The lease moved to the target, which holds the VM paused (it was paused on the source). */
  HELD: 8,
} as const;
export type SlotStateValue = (typeof SlotState)[keyof typeof SlotState];

const MAGIC = 0x53464f48; // "HOFS" read as a little-endian u32
const LAYOUT_VERSION = 2;
/** Byte offsets of the header fields. */
const OFF = {
  magic: 0,
  version: 4,
  state: 8,
  length: 12,
  stopAt: 16,
  runAt: 24,
  capacity: 32,
  publishedAt: 40,
  expectLength: 48,
  compactLayouts: 52,
};
/** The compact state layouts this build reads and writes, as the header's bit mask. */
const COMPACT_LAYOUTS_HERE = compactStateCurrent() ? 2 ** COMPACT_STATE_VERSION : 0;
/** Where the expectation starts, and its largest size. */
const EXPECT_AT = 64;
const EXPECT_MAX = 4096 - EXPECT_AT;
/** Int32 index of the state word. */
const STATE = OFF.state >>> 2;
/**
 * Byte offset of the state word: the futex both sides wake at every transition. A vCPU thread
 * that runs other VMs sleeps on it together with its own wake word (`futexWaitAny`).
 */
export const SLOT_STATE_OFFSET = OFF.state;
/** Where the device state starts. */
export const SLOT_HEADER_BYTES = 4096;
/** Size of every slot file: 1 MiB (tmpfs allocates only the pages written). */
export const SLOT_BYTES = 1024 * 1024;
const CAPACITY = SLOT_BYTES - SLOT_HEADER_BYTES;
/**
 * State bytes whose pages each side maps in before the migration (a machine's state is ≈1 KiB):
 * the first touch of a page of the file is a page fault, kept out of the downtime.
 */
const STATE_PREFAULT_BYTES = 8192;
const NAME = /^switchover-slot-[a-z0-9-]{1,64}\.bin$/;
/** The name form of slot files of builds before the switchover was named so (swept at start). */
const OLD_NAME = /^handoff-slot-[a-z0-9-]{1,64}\.bin$/;

/** A name as a slot file's tag: lower-case words joined by single `-`, at most 24 characters. */
function nameTag(name: string): string {
  const tag = name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .slice(0, 24)
    .replace(/^-+|-+$/g, '');
  return tag === '' ? 'x' : tag;
}

/**
 * How the names of the slot files a vmm instance creates begin: `switchover-slot-<vmm tag>--`
 * (`handoff-slot-<vmm tag>--` with `legacy`, as builds before the rename named them). Tags
 * never hold `--`, so no other instance's names begin the same way unless both ids give one tag
 * (ids that differ only in case or punctuation).
 */
export function slotPrefixOf(vmmId: string, legacy = false): string {
  return `${legacy ? 'handoff' : 'switchover'}-slot-${nameTag(vmmId)}--`;
}

/** Whether `name` has the form of a slot file's name (of this build or an earlier one). */
export function isSlotName(name: string): boolean {
  return NAME.test(name) || OLD_NAME.test(name);
}

/**
 * Which VM a slot was prepared for (target → source). Everything that ties a switchover to one
 * lease tenure of one VM: the holder and, per block, the region and its epoch.
 */
export interface SlotExpectation {
  /** The lease holder the transfers were armed from: the source VM (`vmm-id/vm-name`). */
  readonly from: string;
  /**
   * How the target's vCPU thread moves the leases: memstore armed them (`armed`) or it sends
   * TransferLease over the lease channel (`channel`). Absent in slots of earlier builds.
   */
  readonly lease?: 'armed' | 'channel';
  readonly blocks: readonly {
    /** The block's id in the VM spec. */
    readonly id: string;
    readonly regionId: string;
    readonly identity: string;
    /** The lease epoch the source holds it at. */
    readonly epoch: number;
    readonly size: number;
    readonly guestBase: number;
  }[];
}

/** The main thread's handle of a slot file (either side). */
export class SwitchoverSlot {
  private closed = false;

  private constructor(
    /** Absolute path of the file. */
    readonly path: string,
    private readonly mapping: Mapping<SharedArrayBuffer>,
    private readonly owner: boolean,
  ) {}

  /** The mapped file: what the vCPU thread gets. */
  get buffer(): SharedArrayBuffer {
    return this.mapping.buffer;
  }

  /**
   * Target: creates an armed slot in `dir` (a folder both vmms of the migration see, tmpfs
   * preferably), owner-only permissions, named after the vmm instance and the VM (see
   * {@link slotPrefixOf}).
   *
   * @throws ShmError when the file cannot be created or mapped
   */
  static create(dir: string, vmmId: string, vmName: string): SwitchoverSlot {
    const name = `${slotPrefixOf(vmmId)}${nameTag(vmName)}-${randomBytes(6).toString('hex')}.bin`;
    const path = join(dir, name);
    const mapping = mapFile(path, { create: true, exclusive: true, size: SLOT_BYTES, mode: 0o600 });
    const view = new DataView(mapping.buffer);
    view.setUint32(OFF.magic, MAGIC, true);
    view.setUint32(OFF.version, LAYOUT_VERSION, true);
    view.setUint32(OFF.capacity, CAPACITY, true);
    view.setUint32(OFF.compactLayouts, COMPACT_LAYOUTS_HERE, true);
    Atomics.store(new Int32Array(mapping.buffer, 0, 16), STATE, SlotState.ARMED);
    touchStatePages(mapping.buffer);
    return new SwitchoverSlot(path, mapping, true);
  }

  /**
   * Source: maps the slot a target offered, after checking that it is one.
   *
   * @throws MigrationError `MIGRATION_BAD_STREAM` when the path or the file is not an armed
   *   slot of this layout
   */
  static open(path: string): SwitchoverSlot {
    const bad = (why: string): never => {
      throw new MigrationError(
        'MIGRATION_BAD_STREAM',
        `the target's switchover slot ${JSON.stringify(path).slice(0, 200)} ${why}`,
      );
    };
    if (!isAbsolute(path) || !NAME.test(basename(path)) || path.includes('\0')) {
      bad('is not a slot path (absolute, named switchover-slot-*.bin)');
    }
    let fd: number;
    try {
      fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW);
    } catch (err) {
      return bad(`cannot be opened: ${(err as Error).message}`);
    }
    let mapping: Mapping<SharedArrayBuffer>;
    try {
      const st = fstatSync(fd);
      if (!st.isFile() || st.size !== SLOT_BYTES)
        bad(`is not a regular file of ${SLOT_BYTES} bytes`);
      mapping = mapFd(fd, { length: SLOT_BYTES });
    } finally {
      closeSync(fd);
    }
    const view = new DataView(mapping.buffer);
    if (
      view.getUint32(OFF.magic, true) !== MAGIC ||
      view.getUint32(OFF.version, true) !== LAYOUT_VERSION ||
      view.getUint32(OFF.capacity, true) !== CAPACITY
    ) {
      mapping.close();
      bad(`has an unknown header (layout version ${view.getUint32(OFF.version, true)})`);
    }
    touchStatePages(mapping.buffer);
    return new SwitchoverSlot(path, mapping, false);
  }

  /**
   * Source: what its vCPU thread needs to publish the state: the mapped file, and whether the
   * target reads this build's compact state layout (else the state goes as a container).
   */
  get publishing(): { readonly slot: SharedArrayBuffer; readonly compact: boolean } {
    const reads = new DataView(this.buffer).getUint32(OFF.compactLayouts, true);
    return { slot: this.buffer, compact: (reads & COMPACT_LAYOUTS_HERE) !== 0 };
  }

  /** The state word now. */
  state(): number {
    return slotState(this.buffer);
  }

  /** Bytes of device state the source published (0 before). */
  get stateLength(): number {
    return new DataView(this.buffer).getUint32(OFF.length, true);
  }

  /** Target, before the path is given out: records which VM the slot is prepared for. */
  expect(e: SlotExpectation): void {
    const bytes = new TextEncoder().encode(JSON.stringify(e));
    if (bytes.length > EXPECT_MAX) {
      throw new MigrationError(
        'MIGRATION_FAILED',
        `the switchover slot's expectation needs ${bytes.length} bytes; it holds ${EXPECT_MAX}`,
      );
    }
    new Uint8Array(this.buffer, EXPECT_AT, bytes.length).set(bytes);
    new DataView(this.buffer).setUint32(OFF.expectLength, bytes.length, true);
  }

  /**
   * Source: which VM the target prepared the slot for; null when it recorded none. The bytes are
   * the target's: checked for form, bounds and types.
   *
   * @throws MigrationError `MIGRATION_BAD_STREAM` when the expectation is malformed
   */
  expectation(): SlotExpectation | null {
    const length = new DataView(this.buffer).getUint32(OFF.expectLength, true);
    if (length === 0) return null;
    const bad = (why: string): never => {
      throw new MigrationError(
        'MIGRATION_BAD_STREAM',
        `the switchover slot ${basename(this.path)} has a malformed expectation: ${why}`,
      );
    };
    if (length > EXPECT_MAX) bad(`${length} bytes, at most ${EXPECT_MAX}`);
    let v: unknown;
    try {
      v = JSON.parse(
        new TextDecoder('utf-8', { fatal: true }).decode(
          new Uint8Array(this.buffer, EXPECT_AT, length).slice(),
        ),
      );
    } catch (err) {
      return bad((err as Error).message);
    }
    const o = v as Partial<Record<keyof SlotExpectation, unknown>>;
    if (typeof v !== 'object' || v === null || typeof o.from !== 'string') bad('no holder');
    if (!Array.isArray(o.blocks)) bad('no block list');
    if (o.lease !== undefined && o.lease !== 'armed' && o.lease !== 'channel') {
      bad('a lease step that is neither armed nor channel');
    }
    const blocks = (o.blocks as unknown[]).map((b, k) => {
      const x = b as Record<string, unknown>;
      const ok =
        typeof b === 'object' &&
        b !== null &&
        typeof x.id === 'string' &&
        typeof x.regionId === 'string' &&
        typeof x.identity === 'string' &&
        [x.epoch, x.size, x.guestBase].every((n) => Number.isSafeInteger(n) && (n as number) >= 0);
      if (!ok) bad(`block ${k} is not {id, regionId, identity, epoch, size, guestBase}`);
      return {
        id: x.id as string,
        regionId: x.regionId as string,
        identity: x.identity as string,
        epoch: x.epoch as number,
        size: x.size as number,
        guestBase: x.guestBase as number,
      };
    });
    const lease = o.lease as SlotExpectation['lease'];
    return { from: o.from as string, ...(lease !== undefined ? { lease } : {}), blocks };
  }

  /** Whether the source's thread announced its stop (the target may take the lease from then on). */
  get announced(): boolean {
    return announcedStop(this.buffer);
  }

  /** When the source's thread published the state (epoch ms), else 0. */
  get publishedAtMs(): number {
    return new DataView(this.buffer).getFloat64(OFF.publishedAt, true);
  }

  /** The target vCPU's start stamp (epoch ms) once RUNNING (HELD: when it took the VM), else 0. */
  get runAtMs(): number {
    return new DataView(this.buffer).getFloat64(OFF.runAt, true);
  }

  /**
   * Gives up the switchover (`ARMED → ABORTED`) and wakes the waiting thread. True when the
   * slot is aborted before the source's stop (now or before); false when the source's thread
   * announced its stop: the target's thread decides.
   */
  abort(): boolean {
    return abortSlot(this.buffer);
  }

  /**
   * Target's main thread, after its vCPU thread ended the switchover without the VM: makes sure the
   * slot says FAILED (a thread that died wrote nothing), waking the source's thread.
   */
  fail(): void {
    failSlot(this.buffer);
  }

  /** Unmaps the slot; the target (its owner) also deletes the file. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.mapping.close(); // the vCPU thread's reference keeps its view valid until collected
    if (this.owner) {
      try {
        unlinkSync(this.path);
      } catch {
        // already gone
      }
    }
  }
}

/**
 * Maps the first state pages into this process, writable, without changing a byte (an atomic
 * add of 0, safe beside the other side's writes).
 */
function touchStatePages(buf: SharedArrayBuffer): void {
  const w = new Int32Array(buf, SLOT_HEADER_BYTES, STATE_PREFAULT_BYTES >>> 2);
  for (let i = 0; i < w.length; i += 1024) Atomics.add(w, i, 0);
}

// ---- used by the vCPU threads (and the main thread's abort) ----------------------------------

function words(buf: SharedArrayBuffer): Int32Array {
  return new Int32Array(buf, 0, EXPECT_AT >>> 2);
}

/** The state word of a mapped slot. */
export function slotState(buf: SharedArrayBuffer): number {
  return Atomics.load(words(buf), STATE);
}

/**
 * `ARMED → ABORTED`, waking the waiter. True when the slot is aborted before the source's stop
 * (now or before); false once the source's thread announced its stop (the target's thread
 * decides from then on).
 */
export function abortSlot(buf: SharedArrayBuffer): boolean {
  const was = Atomics.compareExchange(words(buf), STATE, SlotState.ARMED, SlotState.ABORTED);
  if (was === SlotState.ARMED) futexWake(buf, OFF.state, 1);
  return !announcedStop(buf);
}

/** Whether the source's thread flipped the slot out of ARMED (its stop stamp is set). */
export function announcedStop(buf: SharedArrayBuffer): boolean {
  const s = Atomics.load(words(buf), STATE);
  if (s === SlotState.ARMED) return false;
  return s !== SlotState.ABORTED || new DataView(buf).getFloat64(OFF.stopAt, true) !== 0;
}

/**
 * Source vCPU thread, the instant it stopped: `ARMED → STOPPED`, waking the target's thread so
 * that it asks for the lease while this one saves and encodes the state. False when the slot was
 * aborted (the state goes on the stream; the target never moves the lease for this slot).
 */
export function announceStop(buf: SharedArrayBuffer, stopAtMs: number): boolean {
  const was = Atomics.compareExchange(words(buf), STATE, SlotState.ARMED, SlotState.STOPPED);
  if (was !== SlotState.ARMED) return false;
  // Written after the flip: a stop stamp marks a slot whose stop was announced (abortSlot).
  new DataView(buf).setFloat64(OFF.stopAt, stopAtMs, true);
  futexWake(buf, OFF.state, 1);
  return true;
}

/**
 * Source vCPU thread, after {@link announceStop}: writes the encoded device state and flips the
 * slot to READY, waking the target's thread; with `null` (the state could not be encoded) or a
 * state larger than the slot it flips to ABORTED instead and returns false: the target's thread
 * then reports the failure and gives back any lease it took; the state goes on the stream.
 */
export function publishState(buf: SharedArrayBuffer, state: Uint8Array | null): boolean {
  const w = words(buf);
  if (Atomics.load(w, STATE) !== SlotState.STOPPED) return false;
  let next: number = SlotState.ABORTED;
  if (state !== null && state.length <= CAPACITY) {
    new Uint8Array(buf, SLOT_HEADER_BYTES, state.length).set(state);
    const view = new DataView(buf);
    view.setUint32(OFF.length, state.length, true);
    view.setFloat64(OFF.publishedAt, performance.timeOrigin + performance.now(), true);
    next = SlotState.READY;
  }
  // The compare-and-set orders the writes above before the flip for the reader.
  const was = Atomics.compareExchange(w, STATE, SlotState.STOPPED, next);
  futexWake(buf, OFF.state, 1);
  return was === SlotState.STOPPED && next === SlotState.READY;
}

/**
 * A target waiter with nothing else to do, armed (the vCPU pool's threads run other VMs and
 * step the same protocol without blocking, thread.ts): sleeps until the source's thread stopped
 * (`'stopped'`), the slot was aborted before that (`'aborted'`), or `stop()` says to give up
 * (`'cancelled'`, the slot aborted by this call unless the source stopped meanwhile). `stop` is asked every `pollMs`.
 * With `untilPublished` it sleeps on through STOPPED, until the state is there (or given up):
 * for a thread that has nothing to do at the stop itself, one wake-up instead of two.
 */
export function awaitStop(
  buf: SharedArrayBuffer,
  pollMs: number,
  stop: () => boolean,
  untilPublished = false,
): 'stopped' | 'aborted' | 'cancelled' {
  const w = words(buf);
  for (;;) {
    const s = Atomics.load(w, STATE);
    if (s === SlotState.ARMED) {
      if (stop() && abortSlot(buf)) return 'cancelled';
    } else if (!(untilPublished && s === SlotState.STOPPED)) {
      return s === SlotState.ABORTED && !announcedStop(buf) ? 'aborted' : 'stopped';
    }
    futexWait(buf, OFF.state, s, pollMs);
  }
}

/** What the target's thread found in the slot after the stop. */
export type SlotTake =
  | {
      readonly kind: 'state';
      readonly bytes: Uint8Array;
      readonly stopAtMs: number;
      readonly publishedAtMs: number;
    }
  | { readonly kind: 'aborted' }
  | { readonly kind: 'timed-out' }
  | { readonly kind: 'invalid'; readonly reason: string };

/**
 * Target vCPU thread, after the stop, without waiting: the state once published
 * (`READY → TAKEN`, the bytes copied out), `aborted` when the source gave up, or null while it is
 * still STOPPED (the source's thread is writing it: sleep on {@link SLOT_STATE_OFFSET} and look
 * again).
 */
export function tryTakeState(buf: SharedArrayBuffer): SlotTake | null {
  const w = words(buf);
  for (;;) {
    const s = Atomics.load(w, STATE);
    if (s === SlotState.STOPPED) return null;
    if (s !== SlotState.READY) return { kind: 'aborted' };
    if (Atomics.compareExchange(w, STATE, SlotState.READY, SlotState.TAKEN) !== SlotState.READY) {
      continue;
    }
    const view = new DataView(buf);
    const length = view.getUint32(OFF.length, true);
    if (length === 0 || length > CAPACITY) {
      return { kind: 'invalid', reason: `the slot claims ${length} bytes of device state` };
    }
    return {
      kind: 'state',
      bytes: new Uint8Array(buf, SLOT_HEADER_BYTES, length).slice(),
      stopAtMs: view.getFloat64(OFF.stopAt, true),
      publishedAtMs: view.getFloat64(OFF.publishedAt, true),
    };
  }
}

/**
 * A waiter with nothing else to do, after {@link awaitStop}: sleeps until the state is published
 * (`READY → TAKEN`, the bytes copied out), the source gave up (ABORTED), or `timeoutMs` passed
 * (the source's thread is gone or stuck). {@link tryTakeState} without the sleep.
 */
export function takeState(buf: SharedArrayBuffer, timeoutMs: number): SlotTake {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const took = tryTakeState(buf);
    if (took !== null) return took;
    const left = deadline - performance.now();
    if (left <= 0) return { kind: 'timed-out' };
    futexWait(buf, OFF.state, SlotState.STOPPED, left);
  }
}

/**
 * Target vCPU thread: records the outcome (`TAKEN → RUNNING | HELD | FAILED`) with its stamp
 * (epoch ms; the guest's start, or when a paused VM was taken over), waking the source's.
 */
export function finishSlot(
  buf: SharedArrayBuffer,
  outcome: typeof SlotState.RUNNING | typeof SlotState.HELD | typeof SlotState.FAILED,
  atMs = 0,
): void {
  if (outcome === SlotState.FAILED) {
    failSlot(buf);
    return;
  }
  new DataView(buf).setFloat64(OFF.runAt, atMs, true);
  // From TAKEN only: a slot the target's main thread already failed stays failed.
  Atomics.compareExchange(words(buf), STATE, SlotState.TAKEN, outcome);
  futexWake(buf, OFF.state, 1);
}

/**
 * `STOPPED | READY | TAKEN → FAILED` (the target ends a switchover after the stop without the
 * VM), waking the source's thread; a slot with no stop, or already ended, stays as it is.
 */
function failSlot(buf: SharedArrayBuffer): void {
  const w = words(buf);
  for (;;) {
    const s = Atomics.load(w, STATE);
    if (s !== SlotState.STOPPED && s !== SlotState.READY && s !== SlotState.TAKEN) return;
    if (Atomics.compareExchange(w, STATE, s, SlotState.FAILED) === s) break;
  }
  futexWake(buf, OFF.state, 1);
}

/**
 * A source with nothing else to do, after publishing (the vCPU pool's threads use thread.ts
 * HandOver instead): sleeps while the target's thread has the state in hand
 * (READY or TAKEN), at most `timeoutMs`. Returns the state word it ended on.
 */
export function awaitTakeover(buf: SharedArrayBuffer, timeoutMs: number): number {
  const w = words(buf);
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const s = Atomics.load(w, STATE);
    const left = deadline - performance.now();
    if ((s !== SlotState.READY && s !== SlotState.TAKEN) || left <= 0) return s;
    futexWait(buf, OFF.state, s, left);
  }
}
