import type { AccessWidth, MmioDevice } from '../memory/mmio.js';
import { readField } from './registers.js';

/** Register offsets of the Handoff control device (see devices/README.md). */
export const ControlReg = {
  MAGIC: 0x000,
  VERSION: 0x004,
  FEATURES: 0x008,
  READY_COUNT: 0x00c,
  READY: 0x010,
  GENERATION_LO: 0x018,
  GENERATION_HI: 0x01c,
  ENTROPY: 0x040,
  HOST_ARGS_LEN: 0x080,
  HOST_ARGS: 0x100,
} as const;

/** "HNDF" read as bytes; a little-endian word. */
export const CONTROL_MAGIC = 0x46444e48;
/** Device interface version: major << 16 | minor. */
export const CONTROL_VERSION = 0x0001_0000;
/** FEATURES bits. */
export const ControlFeature = { READY: 1, GENERATION: 2, ENTROPY: 4, HOST_ARGS: 8 } as const;
/** Number of 32-bit entropy words. */
export const ENTROPY_WORDS = 8;
/** Capacity of the host-args area in bytes. */
export const HOST_ARGS_SIZE = 256;

/** Version of {@link ControlState}. */
export const CONTROL_STATE_VERSION = 1;

/** The control device's state: identity handed to the guest and how often it rang READY. */
export interface ControlState {
  readonly version: number;
  /** 64-bit VM generation id as 16 hex digits. */
  readonly generationId: string;
  readonly entropy: readonly number[];
  readonly readyCount: number;
  /** Host arguments as bytes. */
  readonly hostArgs: readonly number[];
}

/** Identity the host gives a VM: new for every clone. */
export interface ControlIdentity {
  readonly generationId: bigint;
  readonly entropy: Uint32Array | readonly number[];
}

/**
 * The Handoff control device at 0x10200000 (a hole in QEMU virt's map): the guest rings READY
 * at its template point; the host hands it a generation id and entropy (new after a clone, so
 * no two clones share RNG state) and a small read-only argument block.
 */
export class ControlDevice implements MmioDevice {
  readonly name = 'handoff-control';
  readonly size = 0x1000;
  private generation = 0n;
  private readonly entropy = new Uint32Array(ENTROPY_WORDS);
  private readyCount = 0;
  private hostArgs = new Uint8Array(0);

  constructor(
    readonly base: number,
    private readonly onReady: (tag: number) => void,
  ) {}

  /** Sets the generation id and entropy (at creation and after a clone). */
  setIdentity(identity: ControlIdentity): void {
    if (identity.generationId < 0n || identity.generationId >= 1n << 64n) {
      throw new Error('generation id must fit in 64 bits');
    }
    if (identity.entropy.length !== ENTROPY_WORDS) {
      throw new Error(`entropy needs ${ENTROPY_WORDS} words, got ${identity.entropy.length}`);
    }
    this.generation = identity.generationId;
    for (let k = 0; k < ENTROPY_WORDS; k++) this.entropy[k] = identity.entropy[k]!;
  }

  /** A fresh random identity (crypto-quality). */
  static randomIdentity(): ControlIdentity {
    const words = crypto.getRandomValues(new Uint32Array(ENTROPY_WORDS + 2));
    return {
      generationId: (BigInt(words[ENTROPY_WORDS]!) << 32n) | BigInt(words[ENTROPY_WORDS + 1]!),
      entropy: words.slice(0, ENTROPY_WORDS),
    };
  }

  /** The generation id the guest sees. */
  get generationId(): bigint {
    return this.generation;
  }

  /** Sets the host-args bytes (at most {@link HOST_ARGS_SIZE}). */
  setHostArgs(bytes: Uint8Array): void {
    if (bytes.length > HOST_ARGS_SIZE) {
      throw new Error(`host args hold at most ${HOST_ARGS_SIZE} bytes, got ${bytes.length}`);
    }
    this.hostArgs = bytes.slice();
  }

  read(offset: number, width: AccessWidth): number {
    if (offset >= ControlReg.HOST_ARGS && offset < ControlReg.HOST_ARGS + HOST_ARGS_SIZE) {
      let v = 0;
      for (let k = 0; k < width; k++)
        v |= (this.hostArgs[offset - ControlReg.HOST_ARGS + k] ?? 0) << (8 * k);
      return v;
    }
    return readField(this.register(offset & ~3), offset, width);
  }

  write(offset: number, width: AccessWidth, value: number): void {
    if (offset === ControlReg.READY && width === 4) {
      this.readyCount++;
      this.onReady(value >>> 0);
    }
  }

  private register(reg: number): number {
    switch (reg) {
      case ControlReg.MAGIC:
        return CONTROL_MAGIC;
      case ControlReg.VERSION:
        return CONTROL_VERSION;
      case ControlReg.FEATURES:
        return (
          ControlFeature.READY |
          ControlFeature.GENERATION |
          ControlFeature.ENTROPY |
          ControlFeature.HOST_ARGS
        );
      case ControlReg.READY_COUNT:
        return this.readyCount;
      case ControlReg.GENERATION_LO:
        return Number(this.generation & 0xffffffffn);
      case ControlReg.GENERATION_HI:
        return Number(this.generation >> 32n);
      case ControlReg.HOST_ARGS_LEN:
        return this.hostArgs.length;
    }
    if (reg >= ControlReg.ENTROPY && reg < ControlReg.ENTROPY + 4 * ENTROPY_WORDS) {
      return this.entropy[(reg - ControlReg.ENTROPY) >>> 2]!;
    }
    return 0;
  }

  save(): ControlState {
    return {
      version: CONTROL_STATE_VERSION,
      generationId: this.generation.toString(16).padStart(16, '0'),
      entropy: Array.from(this.entropy),
      readyCount: this.readyCount,
      hostArgs: Array.from(this.hostArgs),
    };
  }

  restore(state: ControlState): void {
    if (state.version !== CONTROL_STATE_VERSION) {
      throw new Error(
        `control state version ${state.version} is not supported (want ${CONTROL_STATE_VERSION})`,
      );
    }
    if (!/^[0-9a-f]{1,16}$/.test(state.generationId))
      throw new Error('control state has a bad generation id');
    this.setIdentity({ generationId: BigInt(`0x${state.generationId}`), entropy: state.entropy });
    this.readyCount = state.readyCount >>> 0;
    this.setHostArgs(Uint8Array.from(state.hostArgs));
  }
}
