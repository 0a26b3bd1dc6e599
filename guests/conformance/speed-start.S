/* Start-up for the C speed probe: stack, then main(); main's return value goes to the finisher. */
  .section .text.start, "ax"
  .globl _start
_start:
  la sp, _stack_top
  la t0, __bss_start
  la t1, __bss_end
1: bgeu t0, t1, 2f
  sw zero, 0(t0)
  addi t0, t0, 4
  j 1b
2: call main
  li t0, 0x100000
  li t1, 0x5555
  beqz a0, 3f
  slli a0, a0, 16
  li t1, 0x3333
  or t1, t1, a0
3: sw t1, 0(t0)
  j .
