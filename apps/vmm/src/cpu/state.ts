/** Version of {@link HartState}; bump on incompatible change. */
export const HART_STATE_VERSION = 1;

/**
 * The hart's architectural state: a model of the CPU, not of the interpreter. All numbers are
 * unsigned 32-bit values except the 64-bit counters, which are plain numbers (< 2^53).
 */
export interface HartState {
  readonly version: number;
  /** Next instruction to execute. */
  readonly pc: number;
  /** x0..x31 (x0 is always 0). */
  readonly x: readonly number[];
  readonly priv: 'M' | 'U';
  /** Stopped in WFI, waiting for an interrupt. */
  readonly waiting: boolean;
  readonly csr: {
    readonly mstatus: number;
    readonly mie: number;
    readonly mtvec: number;
    readonly mepc: number;
    readonly mcause: number;
    readonly mtval: number;
    readonly mscratch: number;
    readonly mcounteren: number;
    /** pmpcfg0..3 and pmpaddr0..15 (stored, not enforced). */
    readonly pmpcfg: readonly number[];
    readonly pmpaddr: readonly number[];
  };
  /** Instructions retired since boot (drives the deterministic clock). */
  readonly retired: number;
  /** 64-bit minstret and mcycle as the guest sees them. */
  readonly minstret: number;
  readonly mcycle: number;
  /** Address reserved by LR, or null. */
  readonly reservation: number | null;
}
