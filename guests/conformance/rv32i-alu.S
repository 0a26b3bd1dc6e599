/* RV32I register-register and register-immediate arithmetic, logic, shifts, compares, lui/auipc. */
#include "harness.h"

  .text
  .globl test_main
test_main:
  addi sp, sp, -16
  sw ra, 12(sp)
  SAY "# rv32i-alu"

  TEST_RR "add", add, 3, 1, 2
  TEST_RR "add wraps", add, 0x80000000, 0x7fffffff, 1
  TEST_RR "add negative", add, 0xfffffffe, -1, -1
  TEST_RR "sub", sub, 0xffffffff, 1, 2
  TEST_RR "sub wraps", sub, 0x7fffffff, 0x80000000, 1
  TEST_RR "and", and, 0x0f000f00, 0xff00ff00, 0x0f0f0f0f
  TEST_RR "or", or, 0xff0fff0f, 0xff00ff00, 0x0f0f0f0f
  TEST_RR "xor", xor, 0xf00ff00f, 0xff00ff00, 0x0f0f0f0f
  TEST_RR "sll", sll, 0x80000000, 1, 31
  TEST_RR "sll uses low 5 bits", sll, 2, 1, 33
  TEST_RR "srl", srl, 0x00000001, 0x80000000, 31
  TEST_RR "srl uses low 5 bits", srl, 0x40000000, 0x80000000, 0xffffffe1
  TEST_RR "sra", sra, 0xffffffff, 0x80000000, 31
  TEST_RR "sra positive", sra, 0x00ffffff, 0x7fffffff, 7
  TEST_RR "slt less", slt, 1, -1, 0
  TEST_RR "slt greater", slt, 0, 0, -1
  TEST_RR "slt equal", slt, 0, 5, 5
  TEST_RR "sltu less", sltu, 1, 0, -1
  TEST_RR "sltu greater", sltu, 0, -1, 0
  TEST_RR "sltu equal", sltu, 0, 7, 7

  TEST_RI "addi", addi, 0x1235, 0x1234, 1
  TEST_RI "addi negative imm", addi, 0xfffff801, 1, -2048
  TEST_RI "addi max imm", addi, 0x800, 1, 2047
  TEST_RI "slti", slti, 1, -2, -1
  TEST_RI "slti false", slti, 0, 0, -1
  TEST_RI "sltiu sign-extended imm", sltiu, 1, 5, -1
  TEST_RI "sltiu false", sltiu, 0, -1, 5
  TEST_RI "andi sign-extends", andi, 0x12345678, 0x12345678, -1
  TEST_RI "andi", andi, 0x00000078, 0x12345678, 0x0ff
  TEST_RI "ori", ori, 0xfffff8ff, 0x000000ff, -2048
  TEST_RI "xori not", xori, 0xedcba987, 0x12345678, -1
  TEST_RI "slli", slli, 0x56780000, 0x12345678, 16
  TEST_RI "srli", srli, 0x00000fff, 0xfff00000, 20
  TEST_RI "srai", srai, 0xffffff00, 0xfff00000, 12
  TEST_RI "srai 0", srai, 0x80000000, 0x80000000, 0

  /* x0 ignores writes and reads as zero */
  li s1, 5
  add zero, s1, s1
  CHECK_EQ "x0 stays zero", zero, 0
  add s3, zero, s1
  CHECK_EQ "x0 reads zero", s3, 5

  lui s3, 0xfffff
  CHECK_EQ "lui", s3, 0xfffff000
  lui s3, 0x80000
  CHECK_EQ "lui sign bit", s3, 0x80000000
1: auipc s3, 0
  la s4, 1b
  CHECK_EQR "auipc 0", s3, s4
2: auipc s3, 0x1
  la s4, 2b
  li s5, 0x1000
  add s4, s4, s5
  CHECK_EQR "auipc 0x1000", s3, s4

  lw ra, 12(sp)
  addi sp, sp, 16
  ret
