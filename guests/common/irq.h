/*
 * Interrupt runtime: machine external interrupts from the PLIC, dispatched to one handler per
 * source, and console input read by the UART's receive interrupt instead of by polling.
 *
 * irq_init() installs a vectored trap table (irq-vector.S): exceptions still go to the runtime's
 * rt_trap (rt.h); the machine external interrupt claims every pending source of PLIC context 0
 * in turn, calls its handler and completes it. A timer or software interrupt that fires while
 * interrupts are enabled (rt_wait_event() arms the timer to end a WFI) only disables itself in
 * mie: it ends the WFI without harming the caller.
 *
 * Handlers run with interrupts disabled, on the interrupted stack; they may use the console.
 */
#ifndef GUEST_IRQ_H
#define GUEST_IRQ_H

#include <stdint.h>

typedef void (*irq_handler)(uint32_t source);

/* Installs the vector table, enables machine external interrupts (mie.MEIE) and mstatus.MIE. */
void irq_init(void);
/* Routes PLIC `source` (1..PLIC_SOURCES-1) with `priority` (1..7) to `handler` on context 0. */
void irq_attach(uint32_t source, uint32_t priority, irq_handler handler);

static inline void irq_enable(void) { __asm__ volatile("csrsi mstatus, 8" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("csrci mstatus, 8" ::: "memory"); }

/* Interrupt-driven console input: the UART's receive interrupt (PLIC source 10) fills a ring.
 * Call after irq_init(). Bytes already waiting in the UART raise the interrupt at once. */
void con_rx_irq_start(void);
/* The next received byte; sleeps in WFI (no timer) until the receive interrupt brings one. */
int con_getc_irq(void);

#endif
