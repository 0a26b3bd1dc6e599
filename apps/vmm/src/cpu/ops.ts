/**
 * Operation ids of pre-decoded instructions. The interpreter (`hart.ts`) switches on these
 * numbers as literals so V8 builds a jump table; `ops.test.ts` checks the two agree.
 * 0 is reserved for "not decoded yet" (see `memory/code-pages.ts`).
 */
export const Op = {
  DECODE: 0,
  PAGE_END: 1,
  LUI: 2,
  AUIPC: 3,
  JAL: 4,
  JALR: 5,
  BEQ: 6,
  BNE: 7,
  BLT: 8,
  BGE: 9,
  BLTU: 10,
  BGEU: 11,
  LB: 12,
  LH: 13,
  LW: 14,
  LBU: 15,
  LHU: 16,
  SB: 17,
  SH: 18,
  SW: 19,
  ADDI: 20,
  SLTI: 21,
  SLTIU: 22,
  XORI: 23,
  ORI: 24,
  ANDI: 25,
  SLLI: 26,
  SRLI: 27,
  SRAI: 28,
  ADD: 29,
  SUB: 30,
  SLL: 31,
  SLT: 32,
  SLTU: 33,
  XOR: 34,
  SRL: 35,
  SRA: 36,
  OR: 37,
  AND: 38,
  FENCE: 39,
  FENCE_I: 40,
  ECALL: 41,
  EBREAK: 42,
  MRET: 43,
  WFI: 44,
  CSRRW: 45,
  CSRRS: 46,
  CSRRC: 47,
  CSRRWI: 48,
  CSRRSI: 49,
  CSRRCI: 50,
  MUL: 51,
  MULH: 52,
  MULHSU: 53,
  MULHU: 54,
  DIV: 55,
  DIVU: 56,
  REM: 57,
  REMU: 58,
  LR_W: 59,
  SC_W: 60,
  AMOSWAP_W: 61,
  AMOADD_W: 62,
  AMOXOR_W: 63,
  AMOAND_W: 64,
  AMOOR_W: 65,
  AMOMIN_W: 66,
  AMOMAX_W: 67,
  AMOMINU_W: 68,
  AMOMAXU_W: 69,
  ILLEGAL: 70,
} as const;

/** An operation id. */
export type OpId = (typeof Op)[keyof typeof Op];

/** Operation name by id, for diagnostics and tests. */
export const OP_NAMES: readonly string[] = Object.entries(Op)
  .sort((a, b) => a[1] - b[1])
  .map(([name]) => name);

/**
 * Packing of a decoded slot's first int: `op | rd << 7 | rs1 << 13 | rs2 << 18`.
 * `rd` is 6 bits: writes to x0 are redirected to the scratch register 32 so the
 * interpreter never tests for x0.
 */
export const RD_SHIFT = 7;
export const RS1_SHIFT = 13;
export const RS2_SHIFT = 18;
/** Register index that absorbs writes to x0. */
export const X0_SINK = 32;
