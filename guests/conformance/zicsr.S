/* Zicsr: every CSR instruction form, read-only and missing CSRs, machine CSRs, counters. */
#include "harness.h"

  .text
  .globl test_main
test_main:
  addi sp, sp, -16
  sw ra, 12(sp)
  SAY "# zicsr"

  li s1, 0x12345678
  csrw mscratch, s1
  csrr s3, mscratch
  CHECK_EQ "csrw/csrr mscratch", s3, 0x12345678
  li s1, 0xff
  csrrw s3, mscratch, s1
  CHECK_EQ "csrrw returns old", s3, 0x12345678
  csrr s3, mscratch
  CHECK_EQ "csrrw writes new", s3, 0xff
  li s1, 0xf00
  csrrs s3, mscratch, s1
  CHECK_EQ "csrrs returns old", s3, 0xff
  csrr s3, mscratch
  CHECK_EQ "csrrs sets bits", s3, 0xfff
  li s1, 0x0f0
  csrrc s3, mscratch, s1
  CHECK_EQ "csrrc returns old", s3, 0xfff
  csrr s3, mscratch
  CHECK_EQ "csrrc clears bits", s3, 0xf0f
  csrrwi s3, mscratch, 0x15
  CHECK_EQ "csrrwi returns old", s3, 0xf0f
  csrr s3, mscratch
  CHECK_EQ "csrrwi writes imm", s3, 0x15
  csrrsi s3, mscratch, 0x0a
  csrr s3, mscratch
  CHECK_EQ "csrrsi sets bits", s3, 0x1f
  csrrci s3, mscratch, 0x03
  CHECK_EQ "csrrci returns old", s3, 0x1f
  csrr s3, mscratch
  CHECK_EQ "csrrci clears bits", s3, 0x1c
  csrrw s3, mscratch, zero
  csrr s3, mscratch
  CHECK_EQ "csrrw x0 clears", s3, 0

  /* read-only CSRs: reading is fine, csrrs/csrrc with x0 do not write, any write traps */
  csrr s3, mhartid
  CHECK_EQ "mhartid is 0", s3, 0
  csrrs s3, mvendorid, zero
  CHECK_EQ "csrrs x0 on read-only is legal", s3, 0
  ARM_TRAP
1: csrw mvendorid, s1
  CHECK_TRAP "write to read-only csr", 2, 1b, 0xf1149073
  ARM_TRAP
1: csrrsi s3, mimpid, 1
  CHECK_TRAP "csrrsi to read-only csr", 2, 1b, 0xf130e9f3
  ARM_TRAP
1: csrrw zero, cycle, zero
  CHECK_TRAP "csrrw to cycle", 2, 1b, 0xc0001073
  /* a CSR that does not exist (custom M-mode space) */
  ARM_TRAP
1: csrr s3, 0x7c0
  CHECK_TRAP "missing csr", 2, 1b, 0x7c0029f3

  /* misa: RV32 with I, M, A and U */
  csrr s3, misa
  srli s4, s3, 30
  CHECK_EQ "misa mxl is 32-bit", s4, 1
  li s5, (1 << 0) | (1 << 8) | (1 << 12) | (1 << 20)
  and s4, s3, s5
  CHECK_EQ "misa has A I M U", s4, (1 << 0) | (1 << 8) | (1 << 12) | (1 << 20)
  li s5, (1 << 2) | (1 << 3) | (1 << 5)
  and s4, s3, s5
  CHECK_EQ "misa has no C D F", s4, 0

  /* mtvec, mepc, mcause, mtval, mie read back */
  csrr s6, mtvec
  la s1, 0x80001000
  csrw mtvec, s1
  csrr s3, mtvec
  CHECK_EQ "mtvec direct", s3, 0x80001000
  li s1, 0x80001001
  csrw mtvec, s1
  csrr s3, mtvec
  CHECK_EQ "mtvec vectored", s3, 0x80001001
  csrw mtvec, s6
  li s1, 0x80000104
  csrw mepc, s1
  csrr s3, mepc
  CHECK_EQ "mepc", s3, 0x80000104
  li s1, 0x8000000b
  csrw mcause, s1
  csrr s3, mcause
  CHECK_EQ "mcause", s3, 0x8000000b
  li s1, 0xcafe
  csrw mtval, s1
  csrr s3, mtval
  CHECK_EQ "mtval", s3, 0xcafe
  li s1, 0x888
  csrw mie, s1
  csrr s3, mie
  and s3, s3, s1
  CHECK_EQ "mie MSIE MTIE MEIE", s3, 0x888
  csrw mie, zero
  csrr s3, mie
  CHECK_EQ "mie cleared", s3, 0

  /* mstatus: MIE via csrsi/csrci, MPP and MPIE read back */
  csrsi mstatus, 8
  csrr s3, mstatus
  andi s3, s3, 8
  CHECK_EQ "mstatus.MIE set", s3, 8
  csrci mstatus, 8
  csrr s3, mstatus
  andi s3, s3, 8
  CHECK_EQ "mstatus.MIE cleared", s3, 0
  li s1, 0x1880
  csrs mstatus, s1
  csrr s3, mstatus
  li s5, 0x1880
  and s3, s3, s5
  CHECK_EQ "mstatus MPP=M MPIE", s3, 0x1880
  csrc mstatus, s1
  csrr s3, mstatus
  and s3, s3, s5
  CHECK_EQ "mstatus MPP=U", s3, 0

  /* counters move forward */
  rdcycle s1
  rdinstret s2
  rdtime s7
  li s3, 2000
1: addi s3, s3, -1
  bnez s3, 1b
  rdcycle s3
  rdinstret s4
  sltu s3, s1, s3
  CHECK_EQ "cycle increases", s3, 1
  sub s4, s4, s2
  li s5, 4000
  sltu s4, s4, s5
  CHECK_EQ "instret counts at least the loop", s4, 0
  li s3, 20000
1: addi s3, s3, -1
  bnez s3, 1b
  rdtime s8
  sltu s3, s7, s8
  CHECK_EQ "time increases", s3, 1
  csrr s3, mcycle
  csrr s4, minstret
  csrr s5, mcycleh
  csrr s6, minstreth
  CHECK_EQ "minstret readable", zero, 0
  /* minstret is writable: it continues from the written value */
  csrw minstreth, zero
  li s1, 0x10000000
  csrw minstret, s1
  csrr s4, minstret
  sub s4, s4, s1
  li s5, 0x1000000
  sltu s4, s4, s5
  CHECK_EQ "minstret continues from a written value", s4, 1
  csrr s4, minstreth
  CHECK_EQ "minstreth written", s4, 0
  csrr s3, mcounteren
  CHECK_EQ "mcounteren resets to 0", s3, 0

  lw ra, 12(sp)
  addi sp, sp, 16
  ret
