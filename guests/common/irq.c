/* Interrupt runtime (irq.h): PLIC dispatch and the interrupt-driven console receiver. */
#include "irq.h"

#include "rt.h"

#define MIE_MEIE (1u << 11)

extern char rt_irq_vectors[];
void irq_dispatch(void);

static irq_handler handlers[PLIC_SOURCES];

/* Called by the vector table for a machine external interrupt: serves every source context 0
 * can claim, so that one that pended again while in service is served in the same trap. */
void irq_dispatch(void) {
  for (;;) {
    uint32_t source = mmio_read32(PLIC_CLAIM(PLIC_CTX_M));
    if (source == 0) return;
    if (source < PLIC_SOURCES && handlers[source] != NULL) handlers[source](source);
    mmio_write32(PLIC_CLAIM(PLIC_CTX_M), source);
  }
}

void irq_init(void) {
  csr_write(mtvec, (uint32_t)(uintptr_t)rt_irq_vectors | 1u);
  mmio_write32(PLIC_THRESHOLD(PLIC_CTX_M), 0);
  csr_set(mie, MIE_MEIE);
  irq_enable();
}

void irq_attach(uint32_t source, uint32_t priority, irq_handler handler) {
  if (source == 0 || source >= PLIC_SOURCES) rt_panic("irq_attach: no PLIC source %u", (unsigned)source);
  handlers[source] = handler;
  mmio_write32(PLIC_PRIORITY(source), priority);
  uint32_t word = PLIC_ENABLE(PLIC_CTX_M, source / 32);
  mmio_write32(word, mmio_read32(word) | 1u << (source % 32));
  /* QEMU's PLIC does not re-evaluate its output after an enable write: a threshold write does,
   * so a source already pending interrupts now. */
  mmio_write32(PLIC_THRESHOLD(PLIC_CTX_M), mmio_read32(PLIC_THRESHOLD(PLIC_CTX_M)));
}

/* ---- interrupt-driven console input ---------------------------------------------------- */

#define RX_RING 1024u /* a power of two */

static volatile uint8_t rx_ring[RX_RING];
static volatile uint32_t rx_head; /* written by the handler */
static volatile uint32_t rx_tail; /* written by the reader */
static volatile int rx_paused; /* the ring was full: the receive interrupt is off */

#define UART_REG(r) (BOARD_UART0 + (r))

/* Moves every received byte into the ring. When the ring is full the receive interrupt is
 * turned off and the bytes wait in the UART (the host side is flow-controlled) until the
 * reader has made room. */
static void uart_rx(uint32_t source) {
  (void)source;
  while (mmio_read8(UART_REG(UART_LSR)) & UART_LSR_DR) {
    if (rx_head - rx_tail == RX_RING) {
      rx_paused = 1;
      mmio_write8(UART_REG(UART_IER), 0);
      return;
    }
    rx_ring[rx_head % RX_RING] = mmio_read8(UART_REG(UART_RBR));
    rx_head++;
  }
}

void con_rx_irq_start(void) {
  irq_attach(PLIC_IRQ_UART0, 1, uart_rx);
  mmio_write8(UART_REG(UART_IER), UART_IER_RDI);
}

int con_getc_irq(void) {
  for (;;) {
    irq_disable();
    if (rx_tail != rx_head) {
      int c = rx_ring[rx_tail % RX_RING];
      rx_tail++;
      if (rx_paused && rx_head - rx_tail <= RX_RING / 2) {
        rx_paused = 0;
        mmio_write8(UART_REG(UART_IER), UART_IER_RDI);
      }
      irq_enable();
      return c;
    }
    /* With mstatus.MIE = 0 a pending enabled interrupt ends WFI without being taken; it is
     * taken as soon as interrupts are enabled again, and the loop looks at the ring again. */
    __asm__ volatile("wfi");
    irq_enable();
  }
}
