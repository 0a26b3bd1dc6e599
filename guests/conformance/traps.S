/* Synchronous exceptions in M-mode: ecall, ebreak, illegal, misaligned jumps, access faults. */
#include "harness.h"

  .text
  .globl test_main
test_main:
  addi sp, sp, -16
  sw ra, 12(sp)
  SAY "# traps"

  ARM_TRAP
1: ecall
  CHECK_TRAP "ecall from M", 11, 1b, 0
  ARM_TRAP
1: ebreak
  CHECK_TRAP "ebreak", 3, 1b, 0

  ARM_TRAP
1: .word 0x00000000
  CHECK_TRAP "all-zero word is illegal", 2, 1b, 0
  ARM_TRAP
1: .word 0xffffffff
  CHECK_TRAP "all-ones word is illegal", 2, 1b, 0xffffffff
  ARM_TRAP
1: .word 0x02009013      /* slli x0, x1, 32: shamt[5] set is reserved on RV32 */
  CHECK_TRAP "slli shamt 32 is illegal", 2, 1b, 0x02009013
  ARM_TRAP
1: .word 0x0000b003      /* ld: not in RV32 */
  CHECK_TRAP "ld is illegal", 2, 1b, 0x0000b003
  ARM_TRAP
1: .word 0x00002007      /* flw: no F extension */
  CHECK_TRAP "flw is illegal", 2, 1b, 0x00002007
  ARM_TRAP
1: .word 0x40001033      /* funct7 0x20 with funct3 1 (sll): reserved */
  CHECK_TRAP "reserved funct7 is illegal", 2, 1b, 0x40001033

  /* registers survive a trap (the handler preserves them) */
  li s1, 0x1234
  ARM_TRAP
1: ebreak
  call disarm_trap
  CHECK_EQ "registers survive a trap", s1, 0x1234

  /* misaligned jump target: mepc = the jump, mtval = the target, rd not written */
  la s1, 2f
  addi s1, s1, 2
  li s3, 77
  ARM_TRAP_RESUME 2f
1: jalr s3, 0(s1)
  .word 0
2: CHECK_TRAP "misaligned jalr", 0, 1b, 2b + 2
  CHECK_EQ "misaligned jalr leaves rd", s3, 77

  /* access faults on unmapped physical addresses */
  li s1, UNMAPPED_ADDR
  ARM_TRAP
1: lw s3, 0(s1)
  CHECK_TRAP "load access fault", 5, 1b, UNMAPPED_ADDR
  ARM_TRAP
1: lbu s3, 3(s1)
  CHECK_TRAP "byte load access fault", 5, 1b, UNMAPPED_ADDR + 3
  ARM_TRAP
1: sw s3, 8(s1)
  CHECK_TRAP_NO_TVAL "store access fault", 7, 1b
  ARM_TRAP
1: amoswap.w s3, s3, (s1)
  lw s4, trap_count
  CHECK_EQ "amo access fault traps", s4, 1
  call disarm_trap
  ARM_TRAP_RESUME 2f
1: jalr s1
2: CHECK_TRAP "instruction access fault", 1, UNMAPPED_ADDR, UNMAPPED_ADDR

  lw ra, 12(sp)
  addi sp, sp, 16
  ret
