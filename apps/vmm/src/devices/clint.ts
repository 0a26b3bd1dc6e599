import { MIP_MSIP } from '../cpu/arch.js';
import type { Hart, TimerPort } from '../cpu/hart.js';
import type { AccessWidth, MmioDevice } from '../memory/mmio.js';
import type { Clock } from './clock.js';
import { readField, writeField } from './registers.js';

/** Register offsets of the SiFive CLINT (one hart). */
export const ClintReg = {
  MSIP: 0x0000,
  MTIMECMP_LO: 0x4000,
  MTIMECMP_HI: 0x4004,
  MTIME_LO: 0xbff8,
  MTIME_HI: 0xbffc,
} as const;

/** Version of {@link ClintState}. */
export const CLINT_STATE_VERSION = 1;

/** CLINT state: the software-interrupt bit and the 64-bit timer compare (as hi/lo words). mtime lives in the clock. */
export interface ClintState {
  readonly version: number;
  readonly msip: number;
  readonly mtimecmpLo: number;
  readonly mtimecmpHi: number;
}

/**
 * Core-local interruptor at 0x02000000 (QEMU virt): msip drives mip.MSIP, mtimecmp against
 * the clock's mtime drives mip.MTIP. mtimecmp resets to 0, so MTIP is pending at boot, as on QEMU.
 */
export class Clint implements MmioDevice, TimerPort {
  readonly name = 'clint';
  readonly size = 0x10000;
  private msip = 0;
  private cmpLo = 0;
  private cmpHi = 0;

  constructor(
    readonly base: number,
    private readonly clock: Clock,
    private readonly hart: Hart,
  ) {}

  /** mtimecmp as a number (values ≥ 2^53 are effectively "never"). */
  get mtimecmp(): number {
    return this.cmpHi * 4294967296 + this.cmpLo;
  }

  now(): number {
    return this.clock.now();
  }

  pending(): boolean {
    return this.clock.now() >= this.mtimecmp;
  }

  deadline(): number {
    const cmp = this.mtimecmp;
    return this.clock.now() >= cmp ? Infinity : this.clock.instretWhen(cmp);
  }

  read(offset: number, width: AccessWidth): number {
    const reg = offset & ~3;
    switch (reg) {
      case ClintReg.MSIP:
        return readField(this.msip, offset, width);
      case ClintReg.MTIMECMP_LO:
        return readField(this.cmpLo, offset, width);
      case ClintReg.MTIMECMP_HI:
        return readField(this.cmpHi, offset, width);
      case ClintReg.MTIME_LO:
        return readField(this.clock.now() % 4294967296, offset, width);
      case ClintReg.MTIME_HI:
        return readField(Math.floor(this.clock.now() / 4294967296), offset, width);
      default:
        return 0;
    }
  }

  write(offset: number, width: AccessWidth, value: number): void {
    const reg = offset & ~3;
    switch (reg) {
      case ClintReg.MSIP:
        this.msip = writeField(this.msip, offset, width, value) & 1;
        this.hart.setIrqLine(MIP_MSIP, this.msip !== 0);
        return;
      case ClintReg.MTIMECMP_LO:
        this.cmpLo = writeField(this.cmpLo, offset, width, value) >>> 0;
        return;
      case ClintReg.MTIMECMP_HI:
        this.cmpHi = writeField(this.cmpHi, offset, width, value) >>> 0;
        return;
      case ClintReg.MTIME_LO: {
        const now = this.clock.now();
        const lo = writeField(now % 4294967296, offset, width, value) >>> 0;
        this.clock.set(Math.floor(now / 4294967296) * 4294967296 + lo);
        return;
      }
      case ClintReg.MTIME_HI: {
        const now = this.clock.now();
        const hi = writeField(Math.floor(now / 4294967296), offset, width, value) >>> 0;
        this.clock.set(hi * 4294967296 + (now % 4294967296));
        return;
      }
    }
  }

  save(): ClintState {
    return {
      version: CLINT_STATE_VERSION,
      msip: this.msip,
      mtimecmpLo: this.cmpLo,
      mtimecmpHi: this.cmpHi,
    };
  }

  restore(state: ClintState): void {
    if (state.version !== CLINT_STATE_VERSION) {
      throw new Error(
        `CLINT state version ${state.version} is not supported (want ${CLINT_STATE_VERSION})`,
      );
    }
    this.msip = state.msip & 1;
    this.cmpLo = state.mtimecmpLo >>> 0;
    this.cmpHi = state.mtimecmpHi >>> 0;
    this.hart.setIrqLine(MIP_MSIP, this.msip !== 0);
  }
}
