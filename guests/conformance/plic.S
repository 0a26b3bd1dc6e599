/*
 * PLIC and UART interrupts: register layout and WARL rules, the UART (source 10) raising,
 * claim/complete, threshold and priority masking, re-pending while claimed, the interrupt taken
 * (mcause, mepc, priority over MSI and MTI), WFI ending on it, and hart 0's S-mode context.
 *
 * The UART's bytes come from its loopback mode (MCR bit 4: THR to RX), switched on only while
 * sending: in loopback the harness's output would go to RX too. Checks print through the UART,
 * and every UART event re-announces its interrupt level to the PLIC, so each block records its
 * results in s-registers first and checks them after the UART's interrupt is quiet again.
 *
 * Runs on QEMU with S-mode (the PLIC has context 1 only then): see conformance.test.ts.
 */
#include "harness.h"

#define PLIC            0x0c000000
#define PRIO(n)         (PLIC + 4 * (n))
#define PENDING         (PLIC + 0x1000)
#define ENABLE(c, w)    (PLIC + 0x2000 + 0x80 * (c) + 4 * (w))
#define THRESHOLD(c)    (PLIC + 0x200000 + 0x1000 * (c))
#define CLAIM(c)        (PLIC + 0x200004 + 0x1000 * (c))
#define UART_IRQ        10
#define MEIP            0x800

/* 32-bit PLIC register access. */
.macro PWR addr, value
  li t0, \addr
  li t1, \value
  sw t1, 0(t0)
.endm
.macro PRD reg, addr
  li t0, \addr
  lw \reg, 0(t0)
.endm
/* UART register access. */
.macro UWR off, value
  li t0, UART_BASE
  li t1, \value
  sb t1, \off(t0)
.endm
.macro URD reg, off
  li t0, UART_BASE
  lbu \reg, \off(t0)
.endm
/* Receives `value` through loopback (MCR = OUT2 | LOOP while sending, then OUT2). */
.macro SEND value
  li t0, UART_BASE
  li t1, 0x18
  sb t1, 4(t0)
  li t1, \value
  sb t1, 0(t0)
  li t1, 0x08
  sb t1, 4(t0)
.endm
/* reg = mip.MEIP */
.macro RD_MEIP reg
  csrr \reg, mip
  li t0, MEIP
  and \reg, \reg, t0
.endm

  .text
  .globl test_main
test_main:
  addi sp, sp, -16
  sw ra, 12(sp)
  SAY "# plic"

  /* ---- registers ---- */
  PWR PRIO(UART_IRQ), 9
  PRD s1, PRIO(UART_IRQ)
  PWR PRIO(UART_IRQ), 0xffffffff
  PRD s2, PRIO(UART_IRQ)
  PWR PRIO(0), 5
  PRD s3, PRIO(0)
  PWR PRIO(95), 6
  PRD s4, PRIO(95)
  PWR ENABLE(0, 0), 0xffffffff
  PWR ENABLE(0, 2), 0xffffffff
  PWR ENABLE(0, 3), 0xffffffff
  PRD s5, ENABLE(0, 2)
  PRD s6, ENABLE(0, 3)
  PWR THRESHOLD(0), 9
  PRD s7, THRESHOLD(0)
  PWR PENDING, 0xffffffff
  PRD s8, PENDING
  PRD s9, THRESHOLD(0) + 8
  PWR ENABLE(0, 0), 0
  PWR ENABLE(0, 2), 0
  PWR THRESHOLD(0), 0
  PWR PRIO(95), 0
  CHECK_EQ "priority keeps 3 bits (9 -> 1)", s1, 1
  CHECK_EQ "priority keeps 3 bits (~0 -> 7)", s2, 7
  CHECK_EQ "source 0 has no priority", s3, 0
  CHECK_EQ "source 95 has a priority", s4, 6
  CHECK_EQ "enable word 2 is written whole", s5, 0xffffffff
  CHECK_EQ "no enable word 3 (96 sources)", s6, 0
  CHECK_EQ "threshold keeps 3 bits", s7, 1
  CHECK_EQ "pending is read-only", s8, 0
  CHECK_EQ "other context offsets read 0", s9, 0

  ARM_TRAP
  li t0, PRIO(UART_IRQ)
1: lbu s3, 0(t0)
  CHECK_TRAP "byte load from the PLIC faults", 5, 1b, PRIO(UART_IRQ)
  ARM_TRAP
  li t0, PRIO(UART_IRQ)
  li t1, 3
1: sb t1, 0(t0)
  CHECK_TRAP_NO_TVAL "byte store to the PLIC faults", 7, 1b
  PRD s1, PRIO(UART_IRQ)
  CHECK_EQ "and writes nothing", s1, 7

  /* ---- the UART raises source 10; claim and complete ---- */
  PWR PRIO(UART_IRQ), 1
  PWR ENABLE(0, 0), 1 << UART_IRQ
  PWR THRESHOLD(0), 0
  UWR 1, 0x01                 /* IER: received data */
  PRD s1, PENDING
  URD s2, 2
  SEND 0x41
  URD s3, 2
  URD s4, 5
  PRD s5, PENDING
  RD_MEIP s6
  PRD s7, CLAIM(0)
  PRD s8, PENDING
  PRD s9, CLAIM(0)
  RD_MEIP s10
  URD s11, 0
  PWR CLAIM(0), UART_IRQ
  CHECK_EQ "nothing pending before", s1, 0
  CHECK_EQ "IIR: no interrupt", s2, 0x01
  CHECK_EQ "IIR: received data", s3, 0x04
  CHECK_EQ "LSR: data ready", s4, 0x61
  CHECK_EQ "source 10 pending", s5, 1 << UART_IRQ
  CHECK_EQ "MEIP raised", s6, MEIP
  CHECK_EQ "claim returns 10", s7, UART_IRQ
  CHECK_EQ "claim clears pending", s8, 0
  CHECK_EQ "a claimed source is not claimed again", s9, 0
  CHECK_EQ "MEIP drops at the claim", s10, 0
  CHECK_EQ "RBR", s11, 0x41

  /* ---- threshold and priority masking; no re-evaluation after an enable write ---- */
  SEND 0x42
  RD_MEIP s1
  PWR THRESHOLD(0), 1
  RD_MEIP s2
  PRD s3, CLAIM(0)
  PWR THRESHOLD(0), 0
  RD_MEIP s4
  PWR PRIO(UART_IRQ), 0
  RD_MEIP s5
  PWR PRIO(UART_IRQ), 1
  RD_MEIP s6
  PWR ENABLE(0, 0), 0
  RD_MEIP s7
  PRD s8, CLAIM(0)
  RD_MEIP s9
  PWR ENABLE(0, 0), 1 << UART_IRQ
  RD_MEIP s10
  PWR THRESHOLD(0), 0
  RD_MEIP s11
  CHECK_EQ "pending and enabled: MEIP", s1, MEIP
  CHECK_EQ "priority 1 at threshold 1: masked", s2, 0
  CHECK_EQ "masked: claim returns 0", s3, 0
  CHECK_EQ "threshold 0: MEIP again", s4, MEIP
  CHECK_EQ "priority 0: never", s5, 0
  CHECK_EQ "priority 1: MEIP again", s6, MEIP
  CHECK_EQ "disabling does not re-evaluate MEIP", s7, MEIP
  CHECK_EQ "disabled: claim returns 0", s8, 0
  CHECK_EQ "the claim re-evaluated MEIP", s9, 0
  CHECK_EQ "enabling does not re-evaluate MEIP", s10, 0
  CHECK_EQ "a threshold write does", s11, MEIP
  PRD s1, CLAIM(0)
  URD s2, 0
  PWR CLAIM(0), UART_IRQ
  CHECK_EQ "claim 10", s1, UART_IRQ
  CHECK_EQ "RBR", s2, 0x42

  /* ---- FIFOs: re-pending while claimed; pending survives the line dropping ---- */
  UWR 2, 0x01                 /* FCR: FIFOs on, trigger 1 */
  URD s1, 2
  SEND 0x43
  SEND 0x44
  URD s2, 2
  PRD s3, CLAIM(0)
  PRD s4, PENDING
  URD s5, 0
  PRD s6, PENDING
  PRD s7, CLAIM(0)
  PWR CLAIM(0), UART_IRQ
  RD_MEIP s8
  PRD s9, CLAIM(0)
  URD s10, 0
  PWR CLAIM(0), UART_IRQ
  RD_MEIP s11
  CHECK_EQ "IIR with FIFOs: no interrupt", s1, 0xc1
  CHECK_EQ "IIR with FIFOs: received data", s2, 0xc4
  CHECK_EQ "claim 10", s3, UART_IRQ
  CHECK_EQ "pending cleared", s4, 0
  CHECK_EQ "RBR (first)", s5, 0x43
  CHECK_EQ "a read that leaves data pends again", s6, 1 << UART_IRQ
  CHECK_EQ "but it is still claimed", s7, 0
  CHECK_EQ "complete: MEIP again", s8, MEIP
  CHECK_EQ "claim 10 again", s9, UART_IRQ
  CHECK_EQ "RBR (second)", s10, 0x44
  CHECK_EQ "drained: MEIP stays low", s11, 0
  SEND 0x45
  UWR 1, 0x00                 /* IER off: the line drops */
  PRD s1, PENDING
  RD_MEIP s2
  UWR 1, 0x01
  PRD s3, CLAIM(0)
  URD s4, 0
  PWR CLAIM(0), UART_IRQ
  CHECK_EQ "pending survives the line dropping", s1, 1 << UART_IRQ
  CHECK_EQ "and MEIP with it", s2, MEIP
  CHECK_EQ "claim 10", s3, UART_IRQ
  CHECK_EQ "RBR", s4, 0x45

  /* ---- IIR: THR empty, priorities; FIFO trigger level; FIFOs off clear RX ---- */
  UWR 1, 0x03                 /* THRI turned on: THR empty is pending */
  URD s1, 2
  URD s2, 2
  UWR 1, 0x03                 /* unchanged: not re-armed */
  URD s3, 2
  SEND 0x46
  URD s4, 2
  URD s5, 0
  URD s6, 2
  URD s7, 2
  UWR 1, 0x01
  PRD s8, CLAIM(0)
  PWR CLAIM(0), UART_IRQ
  PRD s9, PENDING
  CHECK_EQ "IIR: THR empty when THRI turns on", s1, 0xc2
  CHECK_EQ "IIR: reading it cleared it", s2, 0xc1
  CHECK_EQ "IIR: an unchanged IER does not re-arm it", s3, 0xc1
  CHECK_EQ "IIR: received data before THR empty", s4, 0xc4
  CHECK_EQ "RBR", s5, 0x46
  CHECK_EQ "IIR: then THR empty (the byte was sent)", s6, 0xc2
  CHECK_EQ "IIR: then nothing", s7, 0xc1
  CHECK_EQ "the UART had raised source 10", s8, UART_IRQ
  CHECK_EQ "nothing pending after", s9, 0
  UWR 2, 0x41                 /* trigger level 4 (the FIFOs stay on) */
  SEND 0x31
  SEND 0x32
  SEND 0x33
  SEND 0x34
  URD s1, 2
  URD s2, 0
  URD s3, 0
  UWR 2, 0x00                 /* FIFOs off: both cleared */
  URD s4, 5
  URD s5, 2
  PRD s6, CLAIM(0)
  PWR CLAIM(0), UART_IRQ
  CHECK_EQ "IIR: trigger level reached", s1, 0xc4
  CHECK_EQ "RBR 1 of 4", s2, 0x31
  CHECK_EQ "RBR 2 of 4", s3, 0x32
  CHECK_EQ "turning the FIFOs off emptied RX", s4, 0x60
  CHECK_EQ "IIR without FIFOs: nothing", s5, 0x01
  CHECK_EQ "source 10 stayed pending though the UART is quiet", s6, UART_IRQ

  /* ---- the interrupt taken: mcause, mepc, priority, WFI ---- */
  la t0, trap_count
  sw zero, 0(t0)
  SEND 0x50
  li t0, MEIP
  csrw mie, t0
  csrsi mstatus, 8
1: nop
  csrci mstatus, 8
  lw s1, trap_count
  lw s2, trap_cause
  lw s3, trap_epc
  PRD s4, CLAIM(0)
  URD s5, 0
  PWR CLAIM(0), UART_IRQ
  CHECK_EQ "external interrupt taken", s1, 1
  CHECK_EQ "external mcause", s2, 0x8000000b
  CHECK_EQ_ADDR "external mepc is the next instruction", s3, 1b
  CHECK_EQ "claim in the handler's place", s4, UART_IRQ
  CHECK_EQ "RBR", s5, 0x50

  la t0, trap_count
  sw zero, 0(t0)
  li t0, CLINT_MSIP
  li t1, 1
  sw t1, 0(t0)
  li t0, CLINT_MTIMECMP
  sw zero, 4(t0)
  sw zero, 0(t0)
  SEND 0x51
  li t0, 0x888
  csrw mie, t0
  csrsi mstatus, 8
  nop
  csrci mstatus, 8
  lw s1, trap_cause
  lw s2, trap_count
  li t0, CLINT_MSIP
  sw zero, 0(t0)
  li t0, CLINT_MTIMECMP
  li t1, -1
  sw t1, 4(t0)
  sw t1, 0(t0)
  PRD s3, CLAIM(0)
  URD s4, 0
  PWR CLAIM(0), UART_IRQ
  /* The spec (and Handoff) take MEI first; QEMU 7.2 takes the lowest-numbered, MSI. */
  li s5, 0x80000003
  beq s1, s5, 2f
  li s5, 0x8000000b
2: CHECK_EQR "MEI before MSI and MTI (QEMU 7.2: MSI first)", s1, s5
  CHECK_EQ "one interrupt (the handler masks the rest)", s2, 1
  CHECK_EQ "claim 10", s3, UART_IRQ
  CHECK_EQ "RBR", s4, 0x51

  la t0, trap_count
  sw zero, 0(t0)
  SEND 0x52
  li t0, MEIP
  csrw mie, t0
  wfi
  RD_MEIP s1
  lw s2, trap_count
  csrw mie, zero
  PRD s3, CLAIM(0)
  URD s4, 0
  PWR CLAIM(0), UART_IRQ
  CHECK_EQ "wfi ends with MEIP pending", s1, MEIP
  CHECK_EQ "no trap with MIE=0", s2, 0
  CHECK_EQ "claim 10", s3, UART_IRQ
  CHECK_EQ "RBR", s4, 0x52

  /* ---- context 1: hart 0's S-mode (its output, SEIP, is not looked at) ---- */
  PWR ENABLE(1, 0), 1 << UART_IRQ
  PWR THRESHOLD(1), 9
  PRD s1, ENABLE(1, 0)
  PRD s2, THRESHOLD(1)
  PWR THRESHOLD(1), 0
  SEND 0x53
  PRD s3, CLAIM(1)
  PRD s4, CLAIM(0)
  RD_MEIP s5
  URD s6, 0
  PWR CLAIM(0), UART_IRQ      /* completed through the other context */
  SEND 0x54
  PRD s7, CLAIM(0)
  URD s8, 0
  PWR CLAIM(1), UART_IRQ
  PWR ENABLE(1, 0), 0
  CHECK_EQ "context 1 enable", s1, 1 << UART_IRQ
  CHECK_EQ "context 1 threshold keeps 3 bits", s2, 1
  CHECK_EQ "context 1 claims 10", s3, UART_IRQ
  CHECK_EQ "then context 0 finds it claimed", s4, 0
  CHECK_EQ "and MEIP is low", s5, 0
  CHECK_EQ "RBR", s6, 0x53
  CHECK_EQ "completed by context 0: context 0 claims the next", s7, UART_IRQ
  CHECK_EQ "RBR", s8, 0x54

  /* ---- quiet again ---- */
  UWR 1, 0x00
  PWR ENABLE(0, 0), 0
  PWR PRIO(UART_IRQ), 0
  PRD s1, PENDING
  RD_MEIP s2
  CHECK_EQ "nothing pending at the end", s1, 0
  CHECK_EQ "MEIP low at the end", s2, 0

  lw ra, 12(sp)
  addi sp, sp, 16
  ret
