import type { DirtyMarker } from './dirty-log.js';
import { BitmapError, describe, throwIndex, throwRange } from './errors.js';
import { PageBitmap, isSharedArrayBuffer } from './page-bitmap.js';
import { MAX_BITS, checkBitCount, setRangeWords, wordCount32 } from './words.js';

// ---- shared layout (int32 control words, then per-writer double buffers) ----------------------
//
//   ctrl[0]  magic 'HDLE'          ctrl[4]  SEQ: current epoch (0 .. SEQ_MASK); active buffer = SEQ & 1
//   ctrl[1]  layout version        ctrl[5]  COLLECTED: last epoch whose old buffers were collected
//   ctrl[2]  page count (uint32)   ctrl[6]  ACKS: bumped (and notified) on every ack / park
//   ctrl[3]  writer slots          ctrl[7]  reserved
//   ctrl[8 + 2k]      slot k: last acknowledged epoch, or PARKED
//   ctrl[8 + 2k + 1]  slot k: 1 while a writer object owns the slot, else 0
//   then, 64-byte aligned: buffer (k, p) for slot k and parity p, each bufferBytes long.

const C_MAGIC = 0;
const C_VERSION = 1;
const C_SIZE = 2;
const C_WRITERS = 3;
const C_SEQ = 4;
const C_COLLECTED = 5;
const C_ACKS = 6;
const C_SLOTS = 8;
/** ASCII `HDLE` read as a little-endian int32. */
const MAGIC = 0x454c4448;
const LAYOUT_VERSION = 1;
/** Epochs wrap at 2^30 (even), so parity keeps alternating across the wrap. */
const SEQ_MASK = 0x3fffffff;
/** Slot state of a writer that is not marking (never a valid epoch). */
const PARKED = -1;
/** `Atomics.waitAsync` (ES2024; present in Node 16+, absent from this project's `lib`). */
type WaitAsync = (
  cells: Int32Array,
  index: number,
  value: number,
  timeoutMs?: number,
) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync?: WaitAsync }).waitAsync;

/** Upper bound on writer slots. */
export const MAX_EPOCH_WRITERS = 256;

function align64(n: number): number {
  return Math.ceil(n / 64) * 64;
}

interface Geometry {
  readonly ctrlBytes: number;
  readonly bufferBytes: number;
  readonly base: number;
  readonly total: number;
}

function geometry(pages: number, writers: number): Geometry {
  const ctrlBytes = (C_SLOTS + 2 * writers) * 4;
  const bufferBytes = align64(wordCount32(pages) * 4);
  const base = align64(ctrlBytes);
  return { ctrlBytes, bufferBytes, base, total: base + 2 * writers * bufferBytes };
}

function checkWriters(op: string, writers: unknown): number {
  if (
    typeof writers !== 'number' ||
    !Number.isInteger(writers) ||
    writers < 1 ||
    writers > MAX_EPOCH_WRITERS
  ) {
    throw new BitmapError(
      'BITMAP_INVALID_ARGUMENT',
      `${op}: writers ${describe(writers)} must be an integer in [1, ${MAX_EPOCH_WRITERS}] ` +
        `(one slot per thread that marks pages).`,
    );
  }
  return writers;
}

/** Reads and validates the layout of an existing buffer. */
function openLayout(
  op: string,
  buffer: unknown,
): { buffer: SharedArrayBuffer; size: number; writers: number; geo: Geometry } {
  const bad = (): never => {
    throw new BitmapError(
      'BITMAP_INVALID_ARGUMENT',
      `${op}: the buffer does not hold an EpochDirtyLog (layout ${LAYOUT_VERSION}); ` +
        `pass log.buffer from EpochDirtyLog.create() of the same package version.`,
    );
  };
  if (!isSharedArrayBuffer(buffer) || buffer.byteLength < C_SLOTS * 4) return bad();
  const head = new Uint32Array(buffer, 0, C_SLOTS);
  const size = head[C_SIZE]!;
  const writers = head[C_WRITERS]!;
  if (
    head[C_MAGIC] !== MAGIC ||
    head[C_VERSION] !== LAYOUT_VERSION ||
    size > MAX_BITS ||
    writers < 1 ||
    writers > MAX_EPOCH_WRITERS
  ) {
    return bad();
  }
  const geo = geometry(size, writers);
  if (buffer.byteLength < geo.total) return bad();
  return { buffer, size, writers, geo };
}

/** Options for {@link EpochDirtyLog.create}. */
export interface EpochDirtyLogOptions {
  /** Number of writer slots (threads that mark), 1..{@link MAX_EPOCH_WRITERS}; default 1. */
  readonly writers?: number;
}

/**
 * Dirty log for writers in other threads with **plain (non-atomic) marks**: each writer slot owns
 * two bitmaps in the shared buffer; a harvest flips the shared epoch (which of the two is
 * active) and then waits for a grace period — until every writer has acknowledged the new epoch
 * or is parked — before reading and clearing the old buffers. It is TinyEMU's double buffering
 * made safe across threads, RCU style.
 *
 * Harvester side (one thread): {@link EpochDirtyLog.requestHarvest} then
 * {@link EpochDirtyLog.tryCollect}, or {@link EpochDirtyLog.harvestAsync} /
 * {@link EpochDirtyLog.harvestSync} which wait for the acknowledgements.
 * Writer side: {@link EpochDirtyWriter}: `mark()` freely, call `sync()` at every time-slice
 * boundary, `park()` before blocking or stopping.
 *
 * **Memory-ordering contract** (ECMAScript memory model; the control words use only
 * sequentially consistent `Atomics` operations, the bitmaps only plain accesses):
 *
 * 1. A writer marks only into the buffer of the epoch it last acknowledged. `sync()` reads the
 *    epoch (`Atomics.load`), publishes its acknowledgement (`Atomics.store`) and re-reads the
 *    epoch until the two agree, so a writer never starts marking a buffer that the harvester has
 *    already decided to collect (this closes the race with a writer leaving the parked state).
 * 2. The harvester reads an old buffer only after observing (`Atomics.load`) that every slot
 *    acknowledged the new epoch or is parked. That store/load pair is a synchronizes-with edge:
 *    every plain store the writer made before `sync()`/`park()` — its marks **and the guest page
 *    data it wrote** — happens-before the harvester's reads after collecting. Within one slice the
 *    order of "store data" and "mark" does not matter.
 * 3. The harvester clears the old buffers with plain stores before it publishes the next epoch
 *    (`Atomics.store`); a writer sees that epoch with `Atomics.load`, so it never sees stale bits.
 * 4. Consequences: no mark is lost; each mark is returned by exactly one harvest; a store made
 *    after the harvester read a page is marked in a later epoch. A harvest completes within one
 *    writer time slice (or immediately if writers are parked).
 * 5. Liveness is the writer's duty: a writer that neither syncs nor parks stalls harvests
 *    (`BITMAP_TIMEOUT` from the waiting calls; the harvest stays pending and can be retried).
 *
 * Only one thread may act as the harvester at a time. Epochs wrap at 2^30.
 */
export class EpochDirtyLog {
  /** The shared memory; post it to workers and {@link EpochDirtyWriter.attach} there. */
  readonly buffer: SharedArrayBuffer;
  /** Number of pages tracked. */
  readonly size: number;
  /** Number of writer slots. */
  readonly writers: number;
  private readonly ctrl: Int32Array;
  /** Old/new buffers: index `2k + p` is slot k, parity p. */
  private readonly bufs: Int32Array[];
  /** Slot 0's two buffers as bitmaps: a collect merges into and returns one of them. */
  private readonly views: readonly [PageBitmap, PageBitmap];
  /** The bitmap returned by the last collect. */
  private last: PageBitmap;
  /** Writers on this thread, synced automatically when a harvest is requested. */
  private readonly local: EpochDirtyWriter[] = [];

  private constructor(buffer: SharedArrayBuffer, size: number, writers: number, geo: Geometry) {
    this.buffer = buffer;
    this.size = size;
    this.writers = writers;
    this.ctrl = new Int32Array(buffer, 0, C_SLOTS + 2 * writers);
    const count = wordCount32(size);
    this.bufs = [];
    for (let i = 0; i < 2 * writers; i++) {
      this.bufs.push(new Int32Array(buffer, geo.base + i * geo.bufferBytes, count));
    }
    this.views = [
      new PageBitmap(size, { buffer, byteOffset: geo.base }),
      new PageBitmap(size, { buffer, byteOffset: geo.base + geo.bufferBytes }),
    ];
    this.last = this.views[0];
  }

  /** Bytes of shared memory for `pages` pages and `writers` slots. */
  static byteLengthFor(pages: number, writers = 1): number {
    checkBitCount('EpochDirtyLog.byteLengthFor', pages);
    checkWriters('EpochDirtyLog.byteLengthFor', writers);
    return geometry(pages, writers).total;
  }

  /**
   * Allocate a new shared log (epoch 0, every slot parked and free, no page dirty).
   *
   * @throws BitmapError `BITMAP_INVALID_ARGUMENT` for a bad page count or writer count
   */
  static create(pages: number, options: EpochDirtyLogOptions = {}): EpochDirtyLog {
    checkBitCount('EpochDirtyLog.create', pages);
    const writers = checkWriters('EpochDirtyLog.create', options.writers ?? 1);
    const geo = geometry(pages, writers);
    const buffer = new SharedArrayBuffer(geo.total);
    const head = new Uint32Array(buffer, 0, C_SLOTS);
    head[C_MAGIC] = MAGIC;
    head[C_VERSION] = LAYOUT_VERSION;
    head[C_SIZE] = pages;
    head[C_WRITERS] = writers;
    const ctrl = new Int32Array(buffer, 0, C_SLOTS + 2 * writers);
    for (let k = 0; k < writers; k++) ctrl[C_SLOTS + 2 * k] = PARKED;
    return new EpochDirtyLog(buffer, pages, writers, geo);
  }

  /**
   * Become the harvester of a log created elsewhere. Only one harvester may be active.
   *
   * @throws BitmapError `BITMAP_INVALID_ARGUMENT` if the buffer is not an EpochDirtyLog
   */
  static attach(buffer: SharedArrayBuffer): EpochDirtyLog {
    const { size, writers, geo } = openLayout('EpochDirtyLog.attach', buffer);
    return new EpochDirtyLog(buffer, size, writers, geo);
  }

  /**
   * A writer for `slot` on **this** thread (device models, loaders). It is synced automatically
   * by {@link EpochDirtyLog.requestHarvest}, so it never delays a harvest.
   *
   * @throws BitmapError `BITMAP_INVALID_ARGUMENT` for a bad slot, `BITMAP_INVALID_STATE` if the
   *   slot already has a writer
   */
  writer(slot: number): EpochDirtyWriter {
    const w = EpochDirtyWriter.attach(this.buffer, slot);
    for (let i = this.local.length - 1; i >= 0; i--) {
      if (this.local[i]!.isClosed) this.local.splice(i, 1);
    }
    this.local.push(w);
    return w;
  }

  /** Whether a harvest was requested and not yet collected. */
  get harvestPending(): boolean {
    return Atomics.load(this.ctrl, C_COLLECTED) !== Atomics.load(this.ctrl, C_SEQ);
  }

  /** The current epoch (diagnostics). */
  get epoch(): number {
    return Atomics.load(this.ctrl, C_SEQ);
  }

  /**
   * Start a harvest: clear the bitmap returned by the previous collect (it becomes a writer
   * buffer again) and publish the next epoch, so writers switch buffers at their next `sync()`.
   * Local writers are synced at once. No-op if a harvest is already pending.
   *
   * @returns true if a new epoch was published
   */
  requestHarvest(): boolean {
    const ctrl = this.ctrl;
    const seq = Atomics.load(ctrl, C_SEQ);
    if (Atomics.load(ctrl, C_COLLECTED) !== seq) return false;
    const next = (seq + 1) & SEQ_MASK;
    // Slot 0's buffer for the next epoch holds the previous result; slots >= 1 were cleared
    // while merging. No writer uses it now: all acknowledged `seq` or are parked.
    this.bufs[next & 1]!.fill(0);
    Atomics.store(ctrl, C_SEQ, next);
    const local = this.local;
    for (let i = 0; i < local.length; i++) local[i]!.refresh();
    return true;
  }

  /**
   * Finish a pending harvest if every writer has acknowledged it (or is parked): OR the old
   * buffers of slots 1.. into slot 0's old buffer (clearing them) and return that buffer as a
   * bitmap — no copy for a single writer. Returns `null` if no harvest is pending or a writer has
   * not acknowledged yet. Allocates nothing.
   *
   * The returned bitmap lives in the shared buffer and belongs to the log: read (or modify) it
   * until the next {@link EpochDirtyLog.requestHarvest}, which clears it for reuse.
   */
  tryCollect(): PageBitmap | null {
    const ctrl = this.ctrl;
    const seq = Atomics.load(ctrl, C_SEQ);
    if (Atomics.load(ctrl, C_COLLECTED) === seq) return null;
    const writers = this.writers;
    for (let k = 0; k < writers; k++) {
      const ack = Atomics.load(ctrl, C_SLOTS + 2 * k);
      if (ack !== seq && ack !== PARKED) return null;
    }
    const old = (seq & 1) ^ 1;
    const dst = this.bufs[old]!;
    const n = dst.length;
    for (let k = 1; k < writers; k++) {
      const src = this.bufs[2 * k + old]!;
      for (let w = 0; w < n; w++) {
        const v = src[w]!;
        if (v !== 0) {
          dst[w] = dst[w]! | v;
          src[w] = 0;
        }
      }
    }
    this.last = this.views[old]!;
    Atomics.store(ctrl, C_COLLECTED, seq);
    return this.last;
  }

  /**
   * Request a harvest and block this thread (`Atomics.wait`) until it can be collected.
   * Meant for worker threads; on the main thread it blocks the event loop.
   *
   * @param timeoutMs - give up after this long (default: wait forever)
   * @throws BitmapError `BITMAP_TIMEOUT` if writers did not acknowledge in time (the harvest
   *   stays pending; call again or use `tryCollect()` later)
   */
  harvestSync(timeoutMs = Infinity): PageBitmap {
    const target = this.begin();
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const acks = Atomics.load(this.ctrl, C_ACKS);
      const r = this.poll(target);
      if (r !== null) return r;
      const remaining = deadline - performance.now();
      if (remaining <= 0) this.timeout(timeoutMs);
      Atomics.wait(this.ctrl, C_ACKS, acks, remaining);
    }
  }

  /**
   * Request a harvest and wait without blocking (`Atomics.waitAsync`) until it can be collected.
   *
   * @param timeoutMs - give up after this long (default: wait forever)
   * @throws BitmapError `BITMAP_TIMEOUT` (the harvest stays pending)
   */
  async harvestAsync(timeoutMs = Infinity): Promise<PageBitmap> {
    const target = this.begin();
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const acks = Atomics.load(this.ctrl, C_ACKS);
      const r = this.poll(target);
      if (r !== null) return r;
      const remaining = deadline - performance.now();
      if (remaining <= 0) this.timeout(timeoutMs);
      if (waitAsync === undefined) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(remaining, 1)));
        continue;
      }
      const waiter = waitAsync(this.ctrl, C_ACKS, acks, remaining);
      if (waiter.async) await waiter.value;
    }
  }

  /** Slots that have not acknowledged the current epoch and are not parked (allocates). */
  laggingWriters(): number[] {
    const seq = Atomics.load(this.ctrl, C_SEQ);
    const out: number[] = [];
    for (let k = 0; k < this.writers; k++) {
      const ack = Atomics.load(this.ctrl, C_SLOTS + 2 * k);
      if (ack !== seq && ack !== PARKED) out.push(k);
    }
    return out;
  }

  private begin(): number {
    this.requestHarvest();
    return Atomics.load(this.ctrl, C_SEQ);
  }

  private poll(target: number): PageBitmap | null {
    const r = this.tryCollect();
    if (r !== null) return r;
    // Another caller on this object collected the epoch we asked for: its result is ours too.
    return Atomics.load(this.ctrl, C_COLLECTED) === target ? this.last : null;
  }

  private timeout(timeoutMs: number): never {
    throw new BitmapError(
      'BITMAP_TIMEOUT',
      `EpochDirtyLog: harvest of epoch ${this.epoch} not acknowledged within ${timeoutMs} ms by ` +
        `writer slot(s) ${this.laggingWriters().join(', ')}. Each writer must call sync() at ` +
        `least once per time slice and park() before blocking; the harvest stays pending — ` +
        `retry, or stop the writer thread.`,
    );
  }
}

/**
 * The marking side of an {@link EpochDirtyLog} for one writer slot, used by exactly one thread.
 *
 * ```ts
 * const dirty = EpochDirtyWriter.attach(buffer, slot); // acknowledges the current epoch
 * for (;;) {
 *   runSlice(dirty);      // dirty.mark(page) after guest stores: plain stores, ~1 ns
 *   dirty.sync();         // every slice boundary: pick up a harvest, acknowledge it
 *   if (idle) { dirty.park(); Atomics.wait(...); dirty.sync(); }
 * }
 * dirty.close();
 * ```
 *
 * `mark`/`markRange` are checked: `BITMAP_OUT_OF_RANGE` for a bad page, `BITMAP_INVALID_STATE`
 * while parked or closed (one comparison: a parked writer's limit is 0).
 */
export class EpochDirtyWriter implements DirtyMarker {
  /** Number of pages tracked. */
  readonly size: number;
  /** This writer's slot. */
  readonly slot: number;
  private readonly ctrl: Int32Array;
  private readonly ackIndex: number;
  private readonly buf0: Int32Array;
  private readonly buf1: Int32Array;
  /** The buffer of the acknowledged epoch. */
  private words: Int32Array;
  /** `size` while active, 0 while parked or closed (folds the state check into the bounds check). */
  private limit = 0;
  private seq = -1;
  private parkedFlag = true;
  private closed = false;

  private constructor(buffer: SharedArrayBuffer, size: number, slot: number, geo: Geometry) {
    this.size = size;
    this.slot = slot;
    const writers = new Uint32Array(buffer, 0, C_SLOTS)[C_WRITERS]!;
    this.ctrl = new Int32Array(buffer, 0, C_SLOTS + 2 * writers);
    this.ackIndex = C_SLOTS + 2 * slot;
    const count = wordCount32(size);
    this.buf0 = new Int32Array(buffer, geo.base + 2 * slot * geo.bufferBytes, count);
    this.buf1 = new Int32Array(buffer, geo.base + (2 * slot + 1) * geo.bufferBytes, count);
    this.words = this.buf0;
  }

  /**
   * Claim `slot` of the log in `buffer` and acknowledge the current epoch (the writer starts
   * active; call {@link EpochDirtyWriter.park} if it will not mark for a while).
   *
   * @throws BitmapError `BITMAP_INVALID_ARGUMENT` for a foreign buffer or bad slot;
   *   `BITMAP_INVALID_STATE` if another writer owns the slot
   */
  static attach(buffer: SharedArrayBuffer, slot: number): EpochDirtyWriter {
    const { size, writers, geo } = openLayout('EpochDirtyWriter.attach', buffer);
    if (typeof slot !== 'number' || !Number.isInteger(slot) || slot < 0 || slot >= writers) {
      throw new BitmapError(
        'BITMAP_INVALID_ARGUMENT',
        `EpochDirtyWriter.attach: slot ${describe(slot)} does not exist; this log has slots 0..${writers - 1}.`,
      );
    }
    const w = new EpochDirtyWriter(buffer, size, slot, geo);
    if (Atomics.compareExchange(w.ctrl, w.ackIndex + 1, 0, 1) !== 0) {
      throw new BitmapError(
        'BITMAP_INVALID_STATE',
        `EpochDirtyWriter.attach: slot ${slot} already has a writer; close() it first or use ` +
          `another slot (one slot per marking thread).`,
      );
    }
    w.sync();
    return w;
  }

  /** Whether the writer is parked (or closed). */
  get parked(): boolean {
    return this.parkedFlag;
  }

  /** Whether {@link EpochDirtyWriter.close} was called. */
  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Mark `page` dirty in the current epoch's buffer (a plain read-modify-write).
   *
   * @throws BitmapError `BITMAP_OUT_OF_RANGE`, or `BITMAP_INVALID_STATE` while parked/closed
   */
  mark(page: number): void {
    if (!(page >>> 0 === page && page < this.limit)) this.rejected('mark', page);
    const w = page >>> 5;
    this.words[w] = this.words[w]! | (1 << (page & 31));
  }

  /**
   * Mark pages `[start, end)` dirty.
   *
   * @throws BitmapError `BITMAP_OUT_OF_RANGE`, or `BITMAP_INVALID_STATE` while parked/closed
   */
  markRange(start: number, end: number): void {
    if (!(start >>> 0 === start && end >>> 0 === end && start <= end && end <= this.limit)) {
      if (this.parkedFlag) this.rejected('markRange', 0);
      throwRange('EpochDirtyWriter.markRange', start, end, this.size);
    }
    if (start < end) setRangeWords(this.words, start, end);
  }

  /**
   * Acknowledge the current epoch (leaving the parked state if parked). Call at every time-slice
   * boundary; a harvest waits for it. Cheap when nothing changed (one `Atomics.load`).
   *
   * @throws BitmapError `BITMAP_INVALID_STATE` after `close()`
   */
  sync(): void {
    const ctrl = this.ctrl;
    let seq = Atomics.load(ctrl, C_SEQ);
    if (seq === this.seq && !this.parkedFlag) return;
    if (this.closed) this.rejected('sync', 0);
    for (;;) {
      Atomics.store(ctrl, this.ackIndex, seq);
      const again = Atomics.load(ctrl, C_SEQ);
      if (again === seq) break;
      seq = again;
    }
    this.seq = seq;
    this.words = (seq & 1) === 0 ? this.buf0 : this.buf1;
    this.parkedFlag = false;
    this.limit = this.size;
    Atomics.add(ctrl, C_ACKS, 1);
    Atomics.notify(ctrl, C_ACKS);
  }

  /**
   * Stop marking: publish that this writer holds no buffer, so harvests need not wait for it.
   * Everything marked (and every page stored) before `park()` is collected by the next harvest.
   * `sync()` resumes.
   */
  park(): void {
    if (this.parkedFlag) return;
    this.parkedFlag = true;
    this.limit = 0;
    Atomics.store(this.ctrl, this.ackIndex, PARKED);
    Atomics.add(this.ctrl, C_ACKS, 1);
    Atomics.notify(this.ctrl, C_ACKS);
  }

  /** Park and release the slot for another writer. Further calls throw `BITMAP_INVALID_STATE`. */
  close(): void {
    if (this.closed) return;
    this.park();
    this.closed = true;
    Atomics.store(this.ctrl, this.ackIndex + 1, 0);
  }

  /** @internal Used by the harvester for writers on its own thread. */
  refresh(): void {
    if (!this.parkedFlag) this.sync();
  }

  private rejected(op: string, page: unknown): never {
    if (this.closed) {
      throw new BitmapError(
        'BITMAP_INVALID_STATE',
        `EpochDirtyWriter.${op}: writer for slot ${this.slot} is closed; attach a new writer.`,
      );
    }
    if (this.parkedFlag) {
      throw new BitmapError(
        'BITMAP_INVALID_STATE',
        `EpochDirtyWriter.${op}: writer for slot ${this.slot} is parked; call sync() before marking ` +
          `(marks made while parked could be harvested and lost).`,
      );
    }
    return throwIndex(`EpochDirtyWriter.${op}`, page, this.size);
  }
}
