/** Architectural constants of the privileged spec that the hart implements (M and U modes). */

/** Privilege levels. */
export const PRIV_U = 0;
export const PRIV_M = 3;

/** Synchronous exception causes (mcause with the interrupt bit clear). */
export const Cause = {
  INSTRUCTION_MISALIGNED: 0,
  INSTRUCTION_ACCESS_FAULT: 1,
  ILLEGAL_INSTRUCTION: 2,
  BREAKPOINT: 3,
  LOAD_MISALIGNED: 4,
  LOAD_ACCESS_FAULT: 5,
  STORE_MISALIGNED: 6,
  STORE_ACCESS_FAULT: 7,
  ECALL_FROM_U: 8,
  ECALL_FROM_M: 11,
} as const;

/** Interrupt causes (mcause = 0x80000000 | cause). */
export const Interrupt = {
  MACHINE_SOFTWARE: 3,
  MACHINE_TIMER: 7,
  MACHINE_EXTERNAL: 11,
} as const;

/** mip / mie bits. */
export const MIP_MSIP = 1 << 3;
export const MIP_MTIP = 1 << 7;
export const MIP_MEIP = 1 << 11;
/** Bits of mie that exist. */
export const MIE_MASK = MIP_MSIP | MIP_MTIP | MIP_MEIP;

/** mstatus fields. */
export const MSTATUS_MIE = 1 << 3;
export const MSTATUS_MPIE = 1 << 7;
export const MSTATUS_MPP_SHIFT = 11;
export const MSTATUS_MPP = 3 << MSTATUS_MPP_SHIFT;
export const MSTATUS_MPRV = 1 << 17;
export const MSTATUS_TW = 1 << 21;
/** Bits of mstatus that exist (everything else reads zero). */
export const MSTATUS_MASK = MSTATUS_MIE | MSTATUS_MPIE | MSTATUS_MPP | MSTATUS_MPRV | MSTATUS_TW;

/** misa: MXL=1 (RV32), extensions A, I, M, U. */
export const MISA = (1 << 30) | (1 << 0) | (1 << 8) | (1 << 12) | (1 << 20);

/** CSR numbers. */
export const Csr = {
  MSTATUS: 0x300,
  MISA: 0x301,
  MIE: 0x304,
  MTVEC: 0x305,
  MCOUNTEREN: 0x306,
  MSTATUSH: 0x310,
  MCOUNTINHIBIT: 0x320,
  MSCRATCH: 0x340,
  MEPC: 0x341,
  MCAUSE: 0x342,
  MTVAL: 0x343,
  MIP: 0x344,
  PMPCFG0: 0x3a0,
  PMPADDR0: 0x3b0,
  MCYCLE: 0xb00,
  MINSTRET: 0xb02,
  MCYCLEH: 0xb80,
  MINSTRETH: 0xb82,
  CYCLE: 0xc00,
  TIME: 0xc01,
  INSTRET: 0xc02,
  CYCLEH: 0xc80,
  TIMEH: 0xc81,
  INSTRETH: 0xc82,
  MVENDORID: 0xf11,
  MARCHID: 0xf12,
  MIMPID: 0xf13,
  MHARTID: 0xf14,
  MCONFIGPTR: 0xf15,
} as const;
