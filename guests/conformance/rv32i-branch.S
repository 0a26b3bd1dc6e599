/* RV32I control transfer: every branch taken and not taken (signed/unsigned edges), jal, jalr. */
#include "harness.h"

/* Checks that `inst v1, v2` is taken (want = 1) or not (want = 0). */
.macro TEST_BR name, inst, want, v1, v2
  li s1, \v1
  li s2, \v2
  li s3, 0
  \inst s1, s2, 1f
  j 2f
1: li s3, 1
2: CHECK_EQ "\name", s3, \want
.endm

  .text
  .globl test_main
test_main:
  addi sp, sp, -16
  sw ra, 12(sp)
  SAY "# rv32i-branch"

  TEST_BR "beq taken", beq, 1, 7, 7
  TEST_BR "beq not taken", beq, 0, 7, 8
  TEST_BR "bne taken", bne, 1, 7, 8
  TEST_BR "bne not taken", bne, 0, -1, -1
  TEST_BR "blt taken", blt, 1, -1, 0
  TEST_BR "blt not taken", blt, 0, 0, -1
  TEST_BR "blt equal", blt, 0, 3, 3
  TEST_BR "bge taken", bge, 1, 0, -1
  TEST_BR "bge equal", bge, 1, -5, -5
  TEST_BR "bge not taken", bge, 0, 0x80000000, 0x7fffffff
  TEST_BR "bltu taken", bltu, 1, 0, -1
  TEST_BR "bltu not taken", bltu, 0, 0x80000000, 0x7fffffff
  TEST_BR "bgeu taken", bgeu, 1, 0x80000000, 0x7fffffff
  TEST_BR "bgeu equal", bgeu, 1, 0, 0
  TEST_BR "bgeu not taken", bgeu, 0, 1, 0xffffffff

  /* backward branch: a counted loop */
  li s1, 0
  li s2, 10
1: addi s1, s1, 1
  blt s1, s2, 1b
  CHECK_EQ "backward loop", s1, 10

  /* jal links pc+4 */
  jal s3, 1f
2: j 3f
1: la s4, 2b
  CHECK_EQR "jal link", s3, s4
3:
  /* jal x0 does not link */
  li s3, 0
  j 1f
  li s3, 1
1: CHECK_EQ "j skips", s3, 0

  /* jalr with offset, clears bit 0 of the target */
  la s1, 1f
  addi s1, s1, -7
  jalr s3, 8(s1)   /* (1f - 7 + 8) & ~1 = 1f */
2: j 3f
1: la s4, 2b
  CHECK_EQR "jalr link and bit 0 cleared", s3, s4
3:
  /* jalr with rd == rs1: target computed from the old value */
  la s1, 1f
  jalr s1, 0(s1)
2: j 3f
1: la s4, 2b
  CHECK_EQR "jalr rd==rs1", s1, s4
3:
  /* a far jump across pages */
  jal s3, far_target
  CHECK_EQ "far jal returned", s5, 0x5a

  lw ra, 12(sp)
  addi sp, sp, 16
  ret

  .balign 4096
far_target:
  li s5, 0x5a
  jr s3
