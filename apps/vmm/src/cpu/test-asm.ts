/**
 * A tiny RV32 encoder for unit tests and tools: builds instruction words by format, so tests
 * can state programs as readable code without a cross toolchain. Not a full assembler.
 */

/** Register numbers by ABI name. */
export const R = {
  zero: 0,
  ra: 1,
  sp: 2,
  gp: 3,
  tp: 4,
  t0: 5,
  t1: 6,
  t2: 7,
  s0: 8,
  s1: 9,
  a0: 10,
  a1: 11,
  a2: 12,
  a3: 13,
  a4: 14,
  a5: 15,
  a6: 16,
  a7: 17,
  s2: 18,
  s3: 19,
  s4: 20,
  s5: 21,
  s6: 22,
  s7: 23,
  s8: 24,
  s9: 25,
  s10: 26,
  s11: 27,
  t3: 28,
  t4: 29,
  t5: 30,
  t6: 31,
} as const;

const r = (op: number, f3: number, f7: number, rd: number, rs1: number, rs2: number): number =>
  ((f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op) >>> 0;
const i = (op: number, f3: number, rd: number, rs1: number, imm: number): number =>
  (((imm & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op) >>> 0;
const s = (op: number, f3: number, rs1: number, rs2: number, imm: number): number =>
  ((((imm >> 5) & 0x7f) << 25) |
    (rs2 << 20) |
    (rs1 << 15) |
    (f3 << 12) |
    ((imm & 31) << 7) |
    op) >>>
  0;
const b = (f3: number, rs1: number, rs2: number, imm: number): number =>
  ((((imm >> 12) & 1) << 31) |
    (((imm >> 5) & 0x3f) << 25) |
    (rs2 << 20) |
    (rs1 << 15) |
    (f3 << 12) |
    (((imm >> 1) & 15) << 8) |
    (((imm >> 11) & 1) << 7) |
    0x63) >>>
  0;

/** Instruction encoders (operands in assembly order). */
export const asm = {
  lui: (rd: number, imm20: number) => (((imm20 & 0xfffff) << 12) | (rd << 7) | 0x37) >>> 0,
  auipc: (rd: number, imm20: number) => (((imm20 & 0xfffff) << 12) | (rd << 7) | 0x17) >>> 0,
  jal: (rd: number, off: number) =>
    ((((off >> 20) & 1) << 31) |
      (((off >> 1) & 0x3ff) << 21) |
      (((off >> 11) & 1) << 20) |
      (((off >> 12) & 0xff) << 12) |
      (rd << 7) |
      0x6f) >>>
    0,
  jalr: (rd: number, rs1: number, imm: number) => i(0x67, 0, rd, rs1, imm),
  beq: (rs1: number, rs2: number, off: number) => b(0, rs1, rs2, off),
  bne: (rs1: number, rs2: number, off: number) => b(1, rs1, rs2, off),
  blt: (rs1: number, rs2: number, off: number) => b(4, rs1, rs2, off),
  lw: (rd: number, rs1: number, imm: number) => i(0x03, 2, rd, rs1, imm),
  lb: (rd: number, rs1: number, imm: number) => i(0x03, 0, rd, rs1, imm),
  lbu: (rd: number, rs1: number, imm: number) => i(0x03, 4, rd, rs1, imm),
  sw: (rs2: number, rs1: number, imm: number) => s(0x23, 2, rs1, rs2, imm),
  sb: (rs2: number, rs1: number, imm: number) => s(0x23, 0, rs1, rs2, imm),
  addi: (rd: number, rs1: number, imm: number) => i(0x13, 0, rd, rs1, imm),
  andi: (rd: number, rs1: number, imm: number) => i(0x13, 7, rd, rs1, imm),
  add: (rd: number, rs1: number, rs2: number) => r(0x33, 0, 0, rd, rs1, rs2),
  sub: (rd: number, rs1: number, rs2: number) => r(0x33, 0, 0x20, rd, rs1, rs2),
  sltu: (rd: number, rs1: number, rs2: number) => r(0x33, 3, 0, rd, rs1, rs2),
  mul: (rd: number, rs1: number, rs2: number) => r(0x33, 0, 1, rd, rs1, rs2),
  amoadd: (rd: number, rs2: number, rs1: number) => r(0x2f, 2, 0, rd, rs1, rs2),
  lr: (rd: number, rs1: number) => r(0x2f, 2, 0x02 << 2, rd, rs1, 0),
  sc: (rd: number, rs2: number, rs1: number) => r(0x2f, 2, 0x03 << 2, rd, rs1, rs2),
  csrrw: (rd: number, csr: number, rs1: number) => i(0x73, 1, rd, rs1, csr),
  csrrs: (rd: number, csr: number, rs1: number) => i(0x73, 2, rd, rs1, csr),
  csrrsi: (rd: number, csr: number, uimm: number) => i(0x73, 6, rd, uimm, csr),
  ecall: () => 0x00000073,
  ebreak: () => 0x00100073,
  mret: () => 0x30200073,
  wfi: () => 0x10500073,
  fence_i: () => 0x0000100f,
  nop: () => 0x00000013,
};

/** `li rd, value` as lui + addi (always two words). */
export function li(rd: number, value: number): number[] {
  const v = value | 0;
  const lo = (v << 20) >> 20;
  const hi = ((v - lo) >>> 12) & 0xfffff;
  return [asm.lui(rd, hi), asm.addi(rd, rd, lo)];
}

/** Packs instruction words into little-endian bytes. */
export function bytesOf(words: readonly number[]): Uint8Array {
  const out = new Uint8Array(words.length * 4);
  const dv = new DataView(out.buffer);
  words.forEach((w, k) => dv.setUint32(k * 4, w >>> 0, true));
  return out;
}

/** Where `virt` main RAM starts, and where {@link elfOf} loads its code. */
export const TEST_RAM_BASE = 0x8000_0000;

/**
 * Wraps code into an ELF32 RISC-V executable with one R+X segment at {@link TEST_RAM_BASE} (file
 * offset 0x1000), entry at its first instruction: a guest for tests and benches with no
 * toolchain.
 */
export function elfOf(words: readonly number[]): Uint8Array {
  const code = bytesOf(words);
  const at = 0x1000;
  const file = new Uint8Array(at + code.length);
  const dv = new DataView(file.buffer);
  file.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1], 0);
  dv.setUint16(16, 2, true);
  dv.setUint16(18, 243, true);
  dv.setUint32(20, 1, true);
  dv.setUint32(24, TEST_RAM_BASE, true);
  dv.setUint32(28, 52, true);
  dv.setUint16(40, 52, true);
  dv.setUint16(42, 32, true);
  dv.setUint16(44, 1, true);
  [1, at, TEST_RAM_BASE, TEST_RAM_BASE, code.length, code.length, 5, 0x1000].forEach((v, k) =>
    dv.setUint32(52 + 4 * k, v, true),
  );
  file.set(code, at);
  return file;
}
