/* RV32I loads and stores: widths, sign/zero extension, offsets, misaligned accesses. */
#include "harness.h"

  .text
  .globl test_main
test_main:
  addi sp, sp, -16
  sw ra, 12(sp)
  SAY "# rv32i-mem"

  la s0, words
  lw s3, 0(s0)
  CHECK_EQ "lw", s3, 0x80ff7f01
  lb s3, 0(s0)
  CHECK_EQ "lb positive", s3, 0x01
  lb s3, 2(s0)
  CHECK_EQ "lb sign-extends", s3, 0xffffffff
  lb s3, 3(s0)
  CHECK_EQ "lb 0x80", s3, 0xffffff80
  lbu s3, 3(s0)
  CHECK_EQ "lbu zero-extends", s3, 0x80
  lh s3, 0(s0)
  CHECK_EQ "lh positive", s3, 0x7f01
  lh s3, 2(s0)
  CHECK_EQ "lh sign-extends", s3, 0xffff80ff
  lhu s3, 2(s0)
  CHECK_EQ "lhu zero-extends", s3, 0x80ff
  lw s3, 4(s0)
  CHECK_EQ "lw offset", s3, 0x12345678
  addi s1, s0, 8
  lw s3, -4(s1)
  CHECK_EQ "lw negative offset", s3, 0x12345678

  la s0, scratch
  li s1, 0xdeadbeef
  sw s1, 0(s0)
  lw s3, 0(s0)
  CHECK_EQ "sw", s3, 0xdeadbeef
  li s1, 0x1234
  sh s1, 2(s0)
  lw s3, 0(s0)
  CHECK_EQ "sh upper half", s3, 0x1234beef
  li s1, 0xabcd5678
  sh s1, 0(s0)
  lw s3, 0(s0)
  CHECK_EQ "sh stores low 16 bits", s3, 0x12345678
  li s1, 0x9a
  sb s1, 1(s0)
  lw s3, 0(s0)
  CHECK_EQ "sb", s3, 0x12349a78
  li s1, 0xffffff00
  sb s1, 3(s0)
  lw s3, 0(s0)
  CHECK_EQ "sb stores low 8 bits", s3, 0x00349a78

  /* Misaligned loads and stores complete (no trap), as on QEMU. */
  la s0, words
  ARM_TRAP
  lw s3, 1(s0)
  CHECK_EQ "misaligned lw", s3, 0x7880ff7f
  lh s3, 3(s0)
  CHECK_EQ "misaligned lh", s3, 0x00007880
  lhu s3, 1(s0)
  CHECK_EQ "misaligned lhu", s3, 0xff7f
  la s0, scratch
  sw zero, 0(s0)
  sw zero, 4(s0)
  li s1, 0x11223344
  sw s1, 3(s0)
  lw s3, 0(s0)
  CHECK_EQ "misaligned sw low word", s3, 0x44000000
  lw s3, 4(s0)
  CHECK_EQ "misaligned sw high word", s3, 0x00112233
  li s1, 0xbbaa
  sh s1, 5(s0)
  lw s3, 4(s0)
  CHECK_EQ "misaligned sh", s3, 0x00bbaa33
  lw s4, trap_count
  CHECK_EQ "misaligned accesses do not trap", s4, 0
  call disarm_trap

  /* a load into x0 still happens but the result is dropped */
  la s0, words
  lw zero, 0(s0)
  CHECK_EQ "load to x0", zero, 0

  /* self-modifying code: overwrite an instruction, fence.i, run it */
  la s0, patch_site
  li s1, 0x02a00993      /* addi s3, zero, 42 */
  sw s1, 0(s0)
  fence.i
  call patch_site
  CHECK_EQ "fence.i sees new code", s3, 42
  li s1, 0x00700993      /* addi s3, zero, 7 */
  sw s1, 0(s0)
  fence.i
  call patch_site
  CHECK_EQ "fence.i sees code rewritten again", s3, 7

  lw ra, 12(sp)
  addi sp, sp, 16
  ret

  .balign 4096
patch_site:
  addi s3, zero, 1
  ret

  .data
  .balign 4
words: .word 0x80ff7f01, 0x12345678
scratch: .space 16
