/* A extension: lr/sc success and failure, every AMO with its returned old value and result. */
#include "harness.h"

/* Runs `inst s3, s2, (s0)` on a word holding v1 with operand v2; checks old value and memory. */
.macro TEST_AMO name, inst, v1, v2, want_mem
  la s0, cell
  li s1, \v1
  sw s1, 0(s0)
  li s2, \v2
  \inst s3, s2, (s0)
  CHECK_EQ "\name returns old", s3, \v1
  lw s4, 0(s0)
  CHECK_EQ "\name result", s4, \want_mem
.endm

  .text
  .globl test_main
test_main:
  addi sp, sp, -16
  sw ra, 12(sp)
  SAY "# rv32a"

  TEST_AMO "amoswap.w", amoswap.w, 0x11111111, 0x22222222, 0x22222222
  TEST_AMO "amoadd.w", amoadd.w, 0x7fffffff, 1, 0x80000000
  TEST_AMO "amoxor.w", amoxor.w, 0xff00ff00, 0x0ff00ff0, 0xf0f0f0f0
  TEST_AMO "amoand.w", amoand.w, 0xff00ff00, 0x0ff00ff0, 0x0f000f00
  TEST_AMO "amoor.w", amoor.w, 0xff00ff00, 0x0ff00ff0, 0xfff0fff0
  TEST_AMO "amomin.w", amomin.w, 1, -1, 0xffffffff
  TEST_AMO "amomin.w keeps", amomin.w, -5, 3, 0xfffffffb
  TEST_AMO "amomax.w", amomax.w, -1, 1, 1
  TEST_AMO "amomax.w keeps", amomax.w, 7, -3, 7
  TEST_AMO "amominu.w", amominu.w, 1, -1, 1
  TEST_AMO "amominu.w takes", amominu.w, -1, 2, 2
  TEST_AMO "amomaxu.w", amomaxu.w, 1, -1, 0xffffffff
  TEST_AMO "amomaxu.w keeps", amomaxu.w, 0x80000000, 0x7fffffff, 0x80000000
  TEST_AMO "amoadd.w.aqrl", amoadd.w.aqrl, 5, 6, 11

  /* amo with rd = x0 still writes memory */
  la s0, cell
  sw zero, 0(s0)
  li s2, 9
  amoadd.w zero, s2, (s0)
  lw s4, 0(s0)
  CHECK_EQ "amo rd=x0 writes", s4, 9

  /* lr/sc pair succeeds */
  la s0, cell
  li s1, 100
  sw s1, 0(s0)
  lr.w s3, (s0)
  CHECK_EQ "lr.w loads", s3, 100
  addi s3, s3, 1
  sc.w s4, s3, (s0)
  CHECK_EQ "sc.w succeeds", s4, 0
  lw s5, 0(s0)
  CHECK_EQ "sc.w stored", s5, 101

  /* a second sc without lr fails and stores nothing */
  li s3, 555
  sc.w s4, s3, (s0)
  CHECK_EQ "sc.w without reservation fails", s4, 1
  lw s5, 0(s0)
  CHECK_EQ "failed sc.w stores nothing", s5, 101

  /* sc to another address than the reservation fails */
  la s1, cell2
  lr.w s3, (s0)
  sc.w s4, s3, (s1)
  CHECK_EQ "sc.w to other address fails", s4, 1

  /* an atomic increment loop (the usual lr/sc retry) */
  la s0, cell
  sw zero, 0(s0)
  li s6, 0
1: lr.w.aq s3, (s0)
  addi s3, s3, 1
  sc.w.rl s4, s3, (s0)
  bnez s4, 1b
  addi s6, s6, 1
  li s7, 50
  blt s6, s7, 1b
  lw s5, 0(s0)
  CHECK_EQ "lr/sc counter", s5, 50

  /* misaligned lr traps with load-address-misaligned */
  la s0, cell
  addi s0, s0, 2
  ARM_TRAP
2: lr.w s3, (s0)
  CHECK_TRAP "misaligned lr.w", 4, 2b, cell + 2

  /* misaligned amo traps (spec: store/AMO misaligned, 6; QEMU 7.2 reports 4) */
  ARM_TRAP
3: amoadd.w s3, s2, (s0)
  lw s4, trap_count
  CHECK_EQ "misaligned amoadd.w traps", s4, 1
  lw s4, trap_cause
  li s5, 4
  beq s4, s5, 4f
  li s5, 6
4: CHECK_EQR "misaligned amoadd.w cause is 6 (or 4 on QEMU 7.2)", s4, s5
  lw s4, trap_tval
  CHECK_EQ_ADDR "misaligned amoadd.w mtval", s4, cell + 2
  call disarm_trap

  lw ra, 12(sp)
  addi sp, sp, 16
  ret

  .data
  .balign 4
cell: .word 0
cell2: .word 0
