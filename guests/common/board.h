/*
 * The board: QEMU `virt`-compatible physical map shared by qemu-system-riscv32 -M virt
 * and the Handoff VMM (apps/vmm/src/machine/virt-map.ts). Every MMIO address a guest
 * uses is defined here or in handoff.h (the Handoff control device), nowhere else.
 */
#ifndef GUEST_BOARD_H
#define GUEST_BOARD_H

/* Main RAM: base fixed, size chosen by the VMM / QEMU -m (see rt_ram_* in rt.h). */
#define BOARD_RAM_BASE 0x80000000u

/* SiFive test finisher: write FINISHER_PASS to power off, FINISHER_FAIL | code << 16 to fail. */
#define BOARD_FINISHER 0x00100000u
#define FINISHER_PASS 0x5555u
#define FINISHER_FAIL 0x3333u

/* CLINT: 64-bit mtime at 10 MHz, hart 0's mtimecmp and msip. */
#define BOARD_CLINT 0x02000000u
#define CLINT_MSIP (BOARD_CLINT + 0x0000u)
#define CLINT_MTIMECMP (BOARD_CLINT + 0x4000u)
#define CLINT_MTIME (BOARD_CLINT + 0xbff8u)
#define CLINT_HZ 10000000u

/* NS16550A UART 0 (byte registers). */
#define BOARD_UART0 0x10000000u
#define UART_RBR 0u /* receive buffer (read) */
#define UART_THR 0u /* transmit holding (write) */
#define UART_IER 1u /* interrupt enable */
#define UART_IER_RDI 0x01u /* interrupt when received data is available */
#define UART_LSR 5u /* line status */
#define UART_LSR_DR 0x01u /* a received byte is waiting */
#define UART_LSR_THRE 0x20u /* the transmitter can take a byte */

/* PLIC (SiFive / QEMU virt): 32-bit registers only; 3-bit priorities, a source interrupts a
 * context when enabled there with a priority above the context's threshold. */
#define BOARD_PLIC 0x0c000000u
#define PLIC_SOURCES 96u
#define PLIC_PRIORITY(src) (BOARD_PLIC + 4u * (src))
#define PLIC_PENDING(word) (BOARD_PLIC + 0x1000u + 4u * (word))
#define PLIC_ENABLE(ctx, word) (BOARD_PLIC + 0x2000u + 0x80u * (ctx) + 4u * (word))
#define PLIC_THRESHOLD(ctx) (BOARD_PLIC + 0x200000u + 0x1000u * (ctx))
#define PLIC_CLAIM(ctx) (BOARD_PLIC + 0x200004u + 0x1000u * (ctx)) /* read: claim, write: complete */
#define PLIC_CTX_M 0u /* hart 0, M-mode (context 1 is its S-mode) */
#define PLIC_IRQ_UART0 10u

/* Trap causes the runtime cares about. */
#define CAUSE_LOAD_ACCESS 5u
#define CAUSE_STORE_ACCESS 7u

#define PAGE_SIZE 4096u

#endif
