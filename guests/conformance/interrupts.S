/* Interrupts: CLINT timer and software interrupts, priority, precise mepc, WFI wake, vectored mtvec. */
#include "harness.h"

  .text
  .globl test_main
test_main:
  addi sp, sp, -16
  sw ra, 12(sp)
  SAY "# interrupts"

  /* mtimecmp resets to 0: the timer is pending at boot */
  csrr s3, mip
  andi s3, s3, 0x80
  CHECK_EQ "MTIP pending at boot", s3, 0x80
  call timer_off
  csrr s3, mip
  andi s3, s3, 0x80
  CHECK_EQ "MTIP clears when mtimecmp is far", s3, 0

  /* timer interrupt while spinning */
  la t0, trap_count
  sw zero, 0(t0)
  li a0, 1000
  call timer_in
  li t0, 0x80
  csrw mie, t0
  csrsi mstatus, 8
  li s1, 0
  li s2, 10000000
1: lw t1, trap_count
  bnez t1, 2f
  addi s1, s1, 1
  blt s1, s2, 1b
2: csrci mstatus, 8
  lw s3, trap_count
  CHECK_EQ "timer interrupt taken", s3, 1
  lw s3, trap_cause
  CHECK_EQ "timer mcause", s3, 0x80000007
  csrr s3, mstatus
  andi s3, s3, 0x80
  CHECK_EQ "handler returned with MPIE set", s3, 0x80
  call timer_off

  /* software interrupt: taken right after the instruction that enables it */
  la t0, trap_count
  sw zero, 0(t0)
  li t0, CLINT_MSIP
  li t1, 1
  sw t1, 0(t0)
  csrr s3, mip
  andi s3, s3, 8
  CHECK_EQ "msip raises mip.MSIP", s3, 8
  li t0, 8
  csrw mie, t0
  csrsi mstatus, 8
1: nop
  csrci mstatus, 8
  lw s3, trap_count
  CHECK_EQ "software interrupt taken", s3, 1
  lw s3, trap_cause
  CHECK_EQ "software mcause", s3, 0x80000003
  lw s3, trap_epc
  CHECK_EQ_ADDR "interrupt mepc is the next instruction", s3, 1b
  li t0, CLINT_MSIP
  sw zero, 0(t0)
  csrr s3, mip
  andi s3, s3, 8
  CHECK_EQ "msip cleared", s3, 0

  /* priority: software before timer when both are pending */
  la t0, trap_count
  sw zero, 0(t0)
  li t0, CLINT_MTIMECMP
  sw zero, 4(t0)
  sw zero, 0(t0)
  li t0, CLINT_MSIP
  li t1, 1
  sw t1, 0(t0)
  li t0, 0x88
  csrw mie, t0
  csrsi mstatus, 8
  nop
  csrci mstatus, 8
  lw s3, trap_cause
  CHECK_EQ "MSI has priority over MTI", s3, 0x80000003
  lw s3, trap_count
  CHECK_EQ "one interrupt (handler masks the rest)", s3, 1
  li t0, CLINT_MSIP
  sw zero, 0(t0)
  call timer_off

  /* interrupts are always enabled in U-mode, whatever mstatus.MIE */
  ARM_TRAP_RESUME 1f
  li t0, CLINT_MSIP
  li t1, 1
  sw t1, 0(t0)
  li t0, 8
  csrw mie, t0
  la t0, u_wait
  csrw mepc, t0
  li t0, 0x1888
  csrc mstatus, t0
  li s3, 0
  mret
1: CHECK_EQ "U-mode takes M interrupts with MIE=0", s3, 0x80000003
  lw s4, trap_count
  CHECK_EQ "then U ecalls back: two traps", s4, 2
  lw s4, trap_cause
  CHECK_EQ "then U ecalls back: mcause", s4, 8
  lw s4, trap_epc
  CHECK_EQ_ADDR "then U ecalls back: mepc", s4, u_wait_ecall
  call disarm_trap
  li t0, CLINT_MSIP
  sw zero, 0(t0)

  /* WFI wakes on a pending enabled interrupt even with MIE=0 (no trap taken) */
  la t0, trap_count
  sw zero, 0(t0)
  li a0, 2000
  call timer_in
  li t0, 0x80
  csrw mie, t0
  wfi
  csrr s3, mip
  andi s3, s3, 0x80
  CHECK_EQ "wfi woke with MTIP pending", s3, 0x80
  lw s3, trap_count
  CHECK_EQ "no trap with MIE=0", s3, 0
  call timer_off

  /* WFI with MIE=1: the interrupt is taken and mepc is the instruction after wfi */
  la t0, trap_count
  sw zero, 0(t0)
  li a0, 2000
  call timer_in
  li t0, 0x80
  csrw mie, t0
  csrsi mstatus, 8
  wfi
1: csrci mstatus, 8
  lw s3, trap_cause
  CHECK_EQ "wfi then timer interrupt", s3, 0x80000007
  lw s3, trap_epc
  CHECK_EQ_ADDR "wfi interrupt mepc", s3, 1b
  call timer_off

  /* vectored mtvec: interrupts go to base + 4 * cause, exceptions to base */
  csrr s6, mtvec
  la t0, vectors
  ori t0, t0, 1
  csrw mtvec, t0
  la t0, trap_count
  sw zero, 0(t0)
  li t0, CLINT_MTIMECMP
  sw zero, 4(t0)
  sw zero, 0(t0)
  li t0, 0x80
  csrw mie, t0
  csrsi mstatus, 8
  nop
  csrci mstatus, 8
  lw s3, vector_hit
  CHECK_EQ "vectored timer interrupt uses entry 7", s3, 7
  ARM_TRAP
1: ecall
  CHECK_TRAP "vectored mode: exceptions use the base", 11, 1b, 0
  lw s3, vector_hit
  CHECK_EQ "exception did not use entry 7", s3, 7
  csrw mtvec, s6
  call timer_off

  lw ra, 12(sp)
  addi sp, sp, 16
  ret

/* timer_in(a0 = ticks): mtimecmp = mtime + a0 (64-bit, written without a spurious match). */
timer_in:
  li t0, CLINT_MTIME
1: lw t2, 4(t0)
  lw t1, 0(t0)
  lw t3, 4(t0)
  bne t2, t3, 1b
  add t1, t1, a0
  sltu t3, t1, a0
  add t2, t2, t3
  li t0, CLINT_MTIMECMP
  li t3, -1
  sw t3, 4(t0)
  sw t1, 0(t0)
  sw t2, 4(t0)
  ret

/* timer_off: mtimecmp = all ones (never), mie = 0. */
timer_off:
  csrw mie, zero
  li t0, CLINT_MTIMECMP
  li t1, -1
  sw t1, 4(t0)
  sw t1, 0(t0)
  ret

  .balign 16
u_wait:
  lw t0, trap_count
  beqz t0, u_wait
  lw s3, trap_cause
u_wait_ecall:
  ecall

  .balign 256
vectors:
  j trap_entry      /* 0: exceptions */
  j trap_entry
  j trap_entry
  j trap_entry      /* 3: MSI */
  j trap_entry
  j trap_entry
  j trap_entry
  j vector7         /* 7: MTI */
  j trap_entry
  j trap_entry
  j trap_entry
  j trap_entry      /* 11: MEI */

vector7:
  addi sp, sp, -16
  sw t0, 0(sp)
  sw t1, 4(sp)
  la t0, vector_hit
  li t1, 7
  sw t1, 0(t0)
  lw t1, 4(sp)
  lw t0, 0(sp)
  addi sp, sp, 16
  j trap_entry

  .data
  .balign 4
vector_hit: .word 0
