/* U-mode: mret into U, ecall back, privileged instructions and CSRs trapping, counter enables. */
#include "harness.h"

  .text
  .globl test_main
test_main:
  addi sp, sp, -16
  sw ra, 12(sp)
  SAY "# umode"

  /* mret to U and ecall back */
  li s1, 0
  ENTER_U u_ecall, 1f
1: CHECK_TRAP "ecall from U", 8, u_ecall_at, 0
  CHECK_EQ "U code ran", s1, 0x55
  csrr s3, mstatus
  li s4, 0x1800
  and s3, s3, s4
  CHECK_EQ "mret leaves MPP=U", s3, 0

  /* mret restores MIE from MPIE and sets MPIE */
  li t0, 0x80
  csrs mstatus, t0
  ENTER_U u_ecall, 1f
1: call disarm_trap
  csrr s3, mstatus
  andi s3, s3, 0x88
  CHECK_EQ "MIE=MPIE through mret, trap and mret", s3, 0x88
  csrci mstatus, 8

  /* M-mode CSR from U is illegal */
  ENTER_U u_csr, 1f
1: CHECK_TRAP "mstatus from U", 2, u_csr, 0x30002973

  /* mret from U is illegal */
  ENTER_U u_mret, 1f
1: CHECK_TRAP "mret from U", 2, u_mret, 0x30200073

  /* counters from U need mcounteren */
  csrw mcounteren, zero
  ENTER_U u_cycle, 1f
1: CHECK_TRAP "cycle from U without mcounteren", 2, u_cycle, 0xc0002973
  ENTER_U u_instret, 1f
1: CHECK_TRAP "instret from U without mcounteren", 2, u_instret, 0xc0202973
  li t0, 7
  csrw mcounteren, t0
  li s1, 0
  ENTER_U u_counters, 1f
1: CHECK_TRAP "counters from U with mcounteren", 8, u_counters_ecall, 0
  CHECK_EQ "U read cycle time instret", s1, 3

  /* wfi from U with mstatus.TW traps */
  li t0, 1 << 21
  csrs mstatus, t0
  ENTER_U u_wfi, 1f
1: CHECK_TRAP "wfi from U with TW", 2, u_wfi, 0x10500073
  li t0, 1 << 21
  csrc mstatus, t0

  /* a load fault from U reports U's pc */
  ENTER_U u_fault, 1f
1: CHECK_TRAP "load fault from U", 5, u_fault_at, UNMAPPED_ADDR

  lw ra, 12(sp)
  addi sp, sp, 16
  ret

  .balign 16
u_ecall:
  li s1, 0x55
u_ecall_at:
  ecall
u_csr:
  csrr s2, mstatus
  j .
u_mret:
  mret
  j .
u_cycle:
  csrr s2, cycle
  j .
u_instret:
  csrr s2, instret
  j .
u_counters:
  rdcycle s2
  addi s1, s1, 1
  rdtime s2
  addi s1, s1, 1
  rdinstret s2
  addi s1, s1, 1
u_counters_ecall:
  ecall
u_wfi:
  wfi
  j .
u_fault:
  li s2, UNMAPPED_ADDR
u_fault_at:
  lw s2, 0(s2)
  j .
