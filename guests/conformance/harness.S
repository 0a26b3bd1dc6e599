/*
 * Conformance harness runtime: boot, UART output, checks, the trap recorder, power-off.
 * Runs unchanged on Handoff and on qemu-system-riscv32 -M virt -bios none.
 */
#include "harness.h"

  .section .text.start, "ax"
  .globl _start
_start:
  la sp, _stack_top
  la t0, trap_entry
  csrw mtvec, t0
  /* One PMP region over everything, RWX: QEMU denies U-mode without a matching entry. */
  li t0, -1
  csrw pmpaddr0, t0
  li t0, 0x1f
  csrw pmpcfg0, t0
  call test_main
  /* fall through */
  .globl finish
finish:
  lw s0, fail_count
  bnez s0, 1f
  LA_STR a0, "PASS\n"
  call puts
  li t0, FINISHER_BASE
  li t1, 0x5555
  sw t1, 0(t0)
  j .
1:
  LA_STR a0, "FAIL ("
  call puts
  mv a0, s0
  call put_dec
  LA_STR a0, " checks)\n"
  call puts
  slli t1, s0, 16
  li t2, 0x3333
  or t1, t1, t2
  li t0, FINISHER_BASE
  sw t1, 0(t0)
  j .

  .text
/* putc(a0): polls LSR.THRE, then writes THR. Clobbers t0, t1. */
  .globl putc
putc:
  li t0, UART_BASE
1: lbu t1, 5(t0)
  andi t1, t1, 0x20
  beqz t1, 1b
  sb a0, 0(t0)
  ret

/* puts(a0 = NUL-terminated string). Clobbers a0, t0-t2. */
  .globl puts
puts:
  mv t2, a0
1: lbu a0, 0(t2)
  beqz a0, 2f
  li t0, UART_BASE
3: lbu t1, 5(t0)
  andi t1, t1, 0x20
  beqz t1, 3b
  sb a0, 0(t0)
  addi t2, t2, 1
  j 1b
2: ret

/* put_hex(a0): "0x" and 8 hex digits. Clobbers a0-a3, t0-t3. */
  .globl put_hex
put_hex:
  mv a3, ra
  mv a2, a0
  li a0, '0'
  call putc
  li a0, 'x'
  call putc
  li t3, 28
1: srl a0, a2, t3
  andi a0, a0, 15
  li t2, 10
  blt a0, t2, 2f
  addi a0, a0, 'a' - 10 - '0'
2: addi a0, a0, '0'
  call putc
  addi t3, t3, -4
  bgez t3, 1b
  mv ra, a3
  ret

/* put_dec(a0): unsigned decimal. Clobbers a0-a4, t0-t3. */
  .globl put_dec
put_dec:
  mv a4, ra
  la a2, dec_buf + 11
  sb zero, 0(a2)
  li t3, 10
1: remu t2, a0, t3
  divu a0, a0, t3
  addi t2, t2, '0'
  addi a2, a2, -1
  sb t2, 0(a2)
  bnez a0, 1b
  mv a0, a2
  call puts
  mv ra, a4
  ret

/* check_eq(a0 = got, a1 = want, a2 = name): prints the result line, counts failures. */
  .globl check_eq
check_eq:
  addi sp, sp, -16
  sw ra, 12(sp)
  sw s0, 8(sp)
  sw s1, 4(sp)
  sw s2, 0(sp)
  mv s0, a0
  mv s1, a1
  mv s2, a2
  bne s0, s1, 1f
  LA_STR a0, "ok "
  call puts
  mv a0, s2
  call puts
  li a0, '\n'
  call putc
  j 2f
1: la t0, fail_count
  lw t1, 0(t0)
  addi t1, t1, 1
  sw t1, 0(t0)
  LA_STR a0, "FAIL "
  call puts
  mv a0, s2
  call puts
  LA_STR a0, ": got "
  call puts
  mv a0, s0
  call put_hex
  LA_STR a0, " want "
  call puts
  mv a0, s1
  call put_hex
  li a0, '\n'
  call putc
2: lw ra, 12(sp)
  lw s0, 8(sp)
  lw s1, 4(sp)
  lw s2, 0(sp)
  addi sp, sp, 16
  ret

/* disarm_trap: no trap is expected any more. */
  .globl disarm_trap
disarm_trap:
  la t0, trap_armed
  sw zero, 0(t0)
  la t0, trap_resume
  sw zero, 0(t0)
  ret

/*
 * trap_entry: records mcause/mepc/mtval and counts the trap. Interrupts: clears mie (so the
 * source cannot fire again) and returns to the interrupted instruction. Exceptions: must be
 * armed; resumes in M-mode at trap_resume if set, else skips the faulting instruction.
 * An unexpected exception prints its registers and fails the run.
 */
  .balign 4
  .globl trap_entry
trap_entry:
  csrw mscratch, t0
  la t0, trap_save
  sw t1, 4(t0)
  sw t2, 8(t0)
  sw ra, 12(t0)
  sw a0, 16(t0)
  sw a1, 20(t0)
  sw a2, 24(t0)
  sw a3, 28(t0)
  sw a4, 32(t0)
  sw t3, 36(t0)
  csrr t1, mscratch
  sw t1, 0(t0)
  csrr t1, mcause
  la t2, trap_cause
  sw t1, 0(t2)
  csrr t2, mepc
  la a0, trap_epc
  sw t2, 0(a0)
  csrr t2, mtval
  la a0, trap_tval
  sw t2, 0(a0)
  la a0, trap_count
  lw t2, 0(a0)
  addi t2, t2, 1
  sw t2, 0(a0)
  bgez t1, 1f
  /* interrupt */
  csrw mie, zero
  j 3f
1: lw t2, trap_armed
  beqz t2, unexpected_trap
  lw t2, trap_resume
  beqz t2, 2f
  csrw mepc, t2
  la a0, trap_resume
  sw zero, 0(a0)
  li t2, 0x1800
  csrs mstatus, t2
  j 3f
2: csrr t2, mepc
  addi t2, t2, 4
  csrw mepc, t2
3: la t0, trap_save
  lw t1, 4(t0)
  lw t2, 8(t0)
  lw ra, 12(t0)
  lw a0, 16(t0)
  lw a1, 20(t0)
  lw a2, 24(t0)
  lw a3, 28(t0)
  lw a4, 32(t0)
  lw t3, 36(t0)
  lw t0, 0(t0)
  mret

unexpected_trap:
  la sp, _stack_top
  LA_STR a0, "FAIL unexpected trap: mcause="
  call puts
  csrr a0, mcause
  call put_hex
  LA_STR a0, " mepc="
  call puts
  csrr a0, mepc
  call put_hex
  LA_STR a0, " mtval="
  call puts
  csrr a0, mtval
  call put_hex
  li a0, '\n'
  call putc
  la t0, fail_count
  lw t1, 0(t0)
  addi t1, t1, 1
  sw t1, 0(t0)
  j finish

  .data
  .balign 4
  .globl fail_count, trap_count, trap_cause, trap_epc, trap_tval, trap_armed, trap_resume
fail_count: .word 0
trap_count: .word 0
trap_cause: .word 0
trap_epc: .word 0
trap_tval: .word 0
trap_armed: .word 0
trap_resume: .word 0
trap_save: .space 64
dec_buf: .space 12
