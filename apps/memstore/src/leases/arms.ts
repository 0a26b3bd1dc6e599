import type { Logger } from '@handoff/service';
import { mapFile, type Mapping } from '@handoff/shm';
import { randomInt } from 'node:crypto';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { MemstoreError } from '../errors.js';

/**
 * The lease arms file: slots in a shared tmpfs file through which a migration target moves a
 * lease with one compare-and-set, without a call to memstore on the hand-off path (see
 * LeaseManager.arm and the README's "Lease arms").
 *
 * Layout (version 1, little-endian, 64 KiB):
 *
 * | offset            | size | field                                                        |
 * | ----------------- | ---- | ------------------------------------------------------------ |
 * | 0                 | 4    | magic u32 = ARMS_MAGIC (`HLAR`)                              |
 * | 4                 | 4    | layout version u32 = 1                                       |
 * | 8                 | 4    | slot count u32 = 255                                         |
 * | 12                | 4    | slot bytes u32 = 256                                         |
 * | 16 … 255          |      | reserved (zero)                                              |
 * | 256 + 256·i       | 4    | slot i: int32 word = (generation << 8) \| state              |
 * | 256 + 256·i + 4   | 4    | slot i: u32 record length (bytes)                            |
 * | 256 + 256·i + 8   | 248  | slot i: UTF-8 JSON {regionId, fromHolder, toHolder, epoch}   |
 *
 * State (low 8 bits): FREE 0, ARMED 1, FLIPPED 2, CANCELLED 3. Generation (bits 8–30, 23 bits,
 * so a word is never negative) is bumped every time the slot is armed, so a compare-and-set
 * presenting an older arm's word fails (no ABA). Only two transitions happen outside memstore's
 * control and both are single CASes of the whole word: the target's ARMED → FLIPPED, memstore's
 * ARMED → CANCELLED; whoever is first wins. The record is written before the word becomes ARMED
 * (Atomics.store after the plain writes), and is only for recovery at start-up: `epoch` is the
 * expected epoch (a decimal string), the flip moves the lease to (toHolder, epoch + 1).
 *
 * Lifecycle: memstore settles every arm and removes the file when it stops cleanly; a file left
 * by a killed memstore is reconciled by the next start on the same catalog, and removed by any
 * memstore's start once no process maps it and it holds no flip still to commit
 * (arms-sweep.ts). A new file starts every slot at a random generation, so a target still
 * holding an arm of a removed file (same path, same offset) cannot match a word of the new one.
 */

/** "HLAR" read as a little-endian u32. */
export const ARMS_MAGIC = 0x52414c48;
export const ARMS_LAYOUT_VERSION = 1;
/** Bytes of the header area (fields in the first 64, the rest reserved). */
export const ARMS_HEADER_BYTES = 256;
export const ARMS_SLOT_BYTES = 256;
export const ARMS_SLOT_COUNT = 255;
export const ARMS_FILE_BYTES = ARMS_HEADER_BYTES + ARMS_SLOT_COUNT * ARMS_SLOT_BYTES; // 64 KiB
/** Offset of the record inside a slot, and its largest size. */
const RECORD_OFFSET = 8;
export const ARMS_RECORD_MAX_BYTES = ARMS_SLOT_BYTES - RECORD_OFFSET;

export const ARM_FREE = 0;
export const ARM_ARMED = 1;
export const ARM_FLIPPED = 2;
export const ARM_CANCELLED = 3;
const GENERATION_MASK = 0x7fffff;

/** The word of a slot in `state` at `generation`. */
export function armWord(generation: number, state: number): number {
  return ((generation & GENERATION_MASK) << 8) | (state & 0xff);
}
export const armState = (word: number): number => word & 0xff;
export const armGeneration = (word: number): number => (word >>> 8) & GENERATION_MASK;

/** What a slot records (for recovery at start-up). */
export interface ArmRecord {
  readonly regionId: string;
  readonly fromHolder: string;
  readonly toHolder: string;
  /** The expected epoch; a flip makes the lease (toHolder, epoch + 1). */
  readonly epoch: number;
}

/** An armed slot, as memstore keeps it in memory. */
export interface ArmedSlot {
  readonly slot: number;
  /** Byte offset of the slot's word in the file. */
  readonly offset: number;
  readonly armedWord: number;
  readonly flippedWord: number;
  readonly record: ArmRecord;
  /** When it was armed (ms, the manager's clock). */
  readonly armedAt: number;
}

/** A slot found in use at start-up, after its fate was decided by CAS. */
export interface LeftoverArm {
  readonly slot: number;
  /** 'flipped': the target won, commit the record; 'cancelled': void (nothing moved). */
  readonly outcome: 'flipped' | 'cancelled';
  /** The record, or undefined when it is garbled (then it is dropped). */
  readonly record: ArmRecord | undefined;
}

/** Byte offset of slot `i`'s word. */
export const slotOffset = (i: number): number => ARMS_HEADER_BYTES + i * ARMS_SLOT_BYTES;

/**
 * The arms file of one memstore, mapped shared. All methods run on memstore's one thread; the
 * only concurrent writers are targets CASing ARMED → FLIPPED.
 */
export class LeaseArmsFile {
  private readonly words: Int32Array;
  private readonly view: DataView;
  private readonly free: number[] = [];
  private isClosed = false;

  private constructor(
    readonly path: string,
    private readonly mapping: Mapping<SharedArrayBuffer>,
  ) {
    this.words = new Int32Array(mapping.buffer);
    this.view = new DataView(mapping.buffer);
  }

  /**
   * Opens the file at `path`, or creates it (mode 0600, 64 KiB). An existing file with a valid
   * header is reconciled: every slot in use is decided by CAS (ARMED → CANCELLED; FLIPPED stays
   * flipped) and reported in `leftovers` (the caller commits the flipped ones, then calls
   * {@link freeLeftovers}). A file that is not ours (not a regular file, wrong size, magic,
   * version or geometry) is warned about and recreated empty.
   */
  static open(path: string, logger: Logger): { file: LeaseArmsFile; leftovers: LeftoverArm[] } {
    let existing = false;
    try {
      const st = lstatSync(path);
      if (!st.isFile() || st.size !== ARMS_FILE_BYTES) {
        logger.warn(
          { path, size: st.size, regular: st.isFile() },
          'lease arms file: not a file of the expected size; recreating it empty',
        );
        unlinkSync(path);
      } else {
        existing = true;
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (existing) {
      chmodSync(path, 0o600);
      const mapping = mapFile(path);
      const file = new LeaseArmsFile(path, mapping);
      const header = file.readHeader();
      if (header === undefined) {
        return { file, leftovers: file.reconcile(logger) };
      }
      logger.warn({ path, ...header }, 'lease arms file: unknown header; recreating it empty');
      mapping.close();
      unlinkSync(path);
    }
    const mapping = mapFile(path, {
      create: true,
      exclusive: true,
      size: ARMS_FILE_BYTES,
      mode: 0o600,
    });
    const file = new LeaseArmsFile(path, mapping);
    file.view.setUint32(0, ARMS_MAGIC, true);
    file.view.setUint32(4, ARMS_LAYOUT_VERSION, true);
    file.view.setUint32(8, ARMS_SLOT_COUNT, true);
    file.view.setUint32(12, ARMS_SLOT_BYTES, true);
    for (let i = ARMS_SLOT_COUNT - 1; i >= 0; i--) {
      Atomics.store(
        file.words,
        slotOffset(i) / 4,
        armWord(randomInt(GENERATION_MASK + 1), ARM_FREE),
      );
      file.free.push(i);
    }
    return { file, leftovers: [] };
  }

  /** Undefined when the header is ours; otherwise what it says (for the warning). */
  private readHeader(): Record<string, number> | undefined {
    const magic = this.view.getUint32(0, true);
    const version = this.view.getUint32(4, true);
    const slots = this.view.getUint32(8, true);
    const slotBytes = this.view.getUint32(12, true);
    if (
      magic === ARMS_MAGIC &&
      version === ARMS_LAYOUT_VERSION &&
      slots === ARMS_SLOT_COUNT &&
      slotBytes === ARMS_SLOT_BYTES
    ) {
      return undefined;
    }
    return { magic, version, slots, slotBytes };
  }

  /** Decides every slot in use (see {@link open}); the slots stay in use until freed. */
  private reconcile(logger: Logger): LeftoverArm[] {
    const leftovers: LeftoverArm[] = [];
    for (let i = 0; i < ARMS_SLOT_COUNT; i++) {
      const index = slotOffset(i) / 4;
      let word = Atomics.load(this.words, index);
      if (armState(word) === ARM_ARMED) {
        // Nobody can have been told this arm won: a target that flips from now on loses.
        const old = Atomics.compareExchange(
          this.words,
          index,
          word,
          armWord(armGeneration(word), ARM_CANCELLED),
        );
        word = old === word ? armWord(armGeneration(word), ARM_CANCELLED) : old;
      }
      const state = armState(word);
      if (state === ARM_FREE) {
        this.free.push(i);
        continue;
      }
      if (state !== ARM_FLIPPED && state !== ARM_CANCELLED) {
        logger.warn(
          { path: this.path, slot: i, word },
          'lease arms file: slot in an unknown state; dropped',
        );
        this.release(i);
        continue;
      }
      const record = this.readRecord(i);
      if (record === undefined && state === ARM_FLIPPED) {
        logger.warn(
          { path: this.path, slot: i },
          'lease arms file: flipped slot with a garbled record; dropped',
        );
      }
      leftovers.push({ slot: i, outcome: state === ARM_FLIPPED ? 'flipped' : 'cancelled', record });
    }
    this.free.reverse(); // lowest slot first
    return leftovers;
  }

  /** Frees the slots reported by {@link open} once the caller dealt with them. */
  freeLeftovers(leftovers: readonly LeftoverArm[]): void {
    for (const l of leftovers) this.release(l.slot);
  }

  /** The record of slot `i`, or undefined when it does not parse as one. */
  private readRecord(i: number): ArmRecord | undefined {
    const base = slotOffset(i);
    const length = this.view.getUint32(base + 4, true);
    if (length === 0 || length > ARMS_RECORD_MAX_BYTES) return undefined;
    try {
      const bytes = new Uint8Array(this.mapping.buffer, base + RECORD_OFFSET, length).slice();
      const json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as unknown;
      if (typeof json !== 'object' || json === null) return undefined;
      const r = json as Record<string, unknown>;
      const epoch =
        typeof r.epoch === 'string' && /^\d{1,15}$/.test(r.epoch) ? Number(r.epoch) : NaN;
      if (
        typeof r.regionId !== 'string' ||
        typeof r.fromHolder !== 'string' ||
        typeof r.toHolder !== 'string' ||
        !Number.isSafeInteger(epoch)
      ) {
        return undefined;
      }
      return { regionId: r.regionId, fromHolder: r.fromHolder, toHolder: r.toHolder, epoch };
    } catch {
      return undefined;
    }
  }

  /** Encoded record, or undefined when it does not fit in a slot. */
  static encode(record: Omit<ArmRecord, 'epoch'> & { epoch: number }): Uint8Array | undefined {
    const bytes = new TextEncoder().encode(
      JSON.stringify({
        regionId: record.regionId,
        fromHolder: record.fromHolder,
        toHolder: record.toHolder,
        epoch: String(record.epoch),
      }),
    );
    return bytes.length <= ARMS_RECORD_MAX_BYTES ? bytes : undefined;
  }

  /** Free slots left. */
  get freeSlots(): number {
    return this.free.length;
  }

  /** Slots armed, or decided and not yet freed. */
  get slotsInUse(): number {
    return ARMS_SLOT_COUNT - this.free.length;
  }

  /** True once {@link close} or {@link remove} ran. */
  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Takes a free slot, writes the record, then publishes the word ARMED at the next generation.
   * Throws LEASE_ARMS_FULL when no slot is free; the caller checked that the record fits.
   */
  arm(record: ArmRecord, encoded: Uint8Array, now: number): ArmedSlot {
    const slot = this.free.pop();
    if (slot === undefined) {
      throw new MemstoreError(
        'LEASE_ARMS_FULL',
        `all ${ARMS_SLOT_COUNT} lease arm slots are in use (one per region being migrated); ` +
          'finish or resolve other migrations (ResolveTransfer), or use TransferLease',
      );
    }
    const base = slotOffset(slot);
    const index = base / 4;
    const generation = (armGeneration(Atomics.load(this.words, index)) + 1) & GENERATION_MASK;
    new Uint8Array(this.mapping.buffer, base + RECORD_OFFSET, ARMS_RECORD_MAX_BYTES).fill(0);
    new Uint8Array(this.mapping.buffer, base + RECORD_OFFSET, encoded.length).set(encoded);
    this.view.setUint32(base + 4, encoded.length, true);
    const armedWord = armWord(generation, ARM_ARMED);
    Atomics.store(this.words, index, armedWord); // after the record: a reader of ARMED sees it
    return {
      slot,
      offset: base,
      armedWord,
      flippedWord: armWord(generation, ARM_FLIPPED),
      record,
      armedAt: now,
    };
  }

  /**
   * Decides an armed slot: CAS ARMED → CANCELLED. 'cancelled' when memstore won (nothing moved),
   * 'flipped' when the target flipped it first. The slot stays in use: call {@link release}
   * once the outcome is committed.
   */
  decide(armed: ArmedSlot): 'flipped' | 'cancelled' | 'garbled' {
    const index = armed.offset / 4;
    const cancelled = armWord(armGeneration(armed.armedWord), ARM_CANCELLED);
    const old = Atomics.compareExchange(this.words, index, armed.armedWord, cancelled);
    if (old === armed.armedWord) return 'cancelled';
    if (old === armed.flippedWord) return 'flipped';
    // Someone wrote something else into the word: treat the arm as void.
    Atomics.store(this.words, index, cancelled);
    return 'garbled';
  }

  /** The slot's state now, without changing it (FLIPPED or still ARMED?). */
  peek(armed: ArmedSlot): number {
    return Atomics.load(this.words, armed.offset / 4);
  }

  /** Frees slot `i` (keeping its generation) and returns it to the free list. */
  release(i: number): void {
    const index = slotOffset(i) / 4;
    const generation = armGeneration(Atomics.load(this.words, index));
    this.view.setUint32(slotOffset(i) + 4, 0, true);
    Atomics.store(this.words, index, armWord(generation, ARM_FREE));
    this.free.push(i);
  }

  /** Unmaps the file (it stays, for the next start). Idempotent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.mapping.close();
  }

  /** Unmaps and deletes the file (a clean stop with every arm settled). Idempotent. */
  remove(logger: Logger): void {
    if (this.isClosed) return;
    this.close();
    try {
      unlinkSync(this.path);
      logger.info({ path: this.path }, 'lease arms file removed');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        logger.warn({ path: this.path, err }, 'lease arms file could not be removed');
      }
    }
  }
}
