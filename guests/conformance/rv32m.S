/* M extension: multiply (all halves and signednesses) and divide/remainder incl. the edge cases. */
#include "harness.h"

  .text
  .globl test_main
test_main:
  addi sp, sp, -16
  sw ra, 12(sp)
  SAY "# rv32m"

  TEST_RR "mul", mul, 42, 6, 7
  TEST_RR "mul negative", mul, 0xffffffd6, -6, 7
  TEST_RR "mul wraps", mul, 0x00000001, 0xffffffff, 0xffffffff
  TEST_RR "mul big", mul, 0xd11e55e9, 0x12345679, 0x9abcdef1
  TEST_RR "mulh pos*pos", mulh, 0x0000003f, 0x7fffffff, 0x7f
  TEST_RR "mulh neg*pos", mulh, 0xffffffff, -1, 1
  TEST_RR "mulh neg*neg", mulh, 0x00000000, -1, -1
  TEST_RR "mulh min*min", mulh, 0x40000000, 0x80000000, 0x80000000
  TEST_RR "mulh min*-1", mulh, 0x00000000, 0x80000000, -1
  TEST_RR "mulh big", mulh, 0xf8cc93d5, 0x12345679, 0x9abcdef1
  TEST_RR "mulhu", mulhu, 0xfffffffe, 0xffffffff, 0xffffffff
  TEST_RR "mulhu big", mulhu, 0x0b00ea4e, 0x12345679, 0x9abcdef1
  TEST_RR "mulhu small", mulhu, 0, 3, 5
  TEST_RR "mulhsu neg*big", mulhsu, 0xffffffff, -1, 0xffffffff
  TEST_RR "mulhsu pos*big", mulhsu, 0x7ffffffe, 0x7fffffff, 0xffffffff
  TEST_RR "mulhsu min*max", mulhsu, 0x80000000, 0x80000000, 0xffffffff
  TEST_RR "mulhsu big", mulhsu, 0x0b00ea4e, 0x12345679, 0x9abcdef1

  TEST_RR "div", div, 3, 20, 6
  TEST_RR "div truncates toward zero", div, 0xfffffffd, -20, 6
  TEST_RR "div neg/neg", div, 3, -20, -6
  TEST_RR "div by zero", div, 0xffffffff, 20, 0
  TEST_RR "div overflow", div, 0x80000000, 0x80000000, -1
  TEST_RR "divu", divu, 0x7fffffff, 0xffffffff, 2
  TEST_RR "divu by zero", divu, 0xffffffff, 20, 0
  TEST_RR "divu big", divu, 1, 0x80000000, 0x7fffffff
  TEST_RR "rem", rem, 2, 20, 6
  TEST_RR "rem sign follows dividend", rem, 0xfffffffe, -20, 6
  TEST_RR "rem neg divisor", rem, 2, 20, -6
  TEST_RR "rem by zero", rem, 20, 20, 0
  TEST_RR "rem overflow", rem, 0, 0x80000000, -1
  TEST_RR "remu", remu, 1, 0xffffffff, 2
  TEST_RR "remu by zero", remu, 0xfffffff0, 0xfffffff0, 0
  TEST_RR "remu big", remu, 1, 0x80000000, 0x7fffffff

  /* rd == rs1 == rs2 */
  li s1, 9
  mul s1, s1, s1
  CHECK_EQ "mul rd=rs1=rs2", s1, 81

  lw ra, 12(sp)
  addi sp, sp, 16
  ret
