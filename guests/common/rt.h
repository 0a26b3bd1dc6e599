/*
 * The guests' common runtime: boot (crt0.S), traps, RAM discovery, console, timer, exit.
 * Control-device helpers live in handoff.h. Everything here runs in M-mode, single hart,
 * without interrupts (mstatus.MIE stays 0; the timer only wakes WFI) unless the guest starts
 * the interrupt runtime of irq.h.
 */
#ifndef GUEST_RT_H
#define GUEST_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "board.h"

#define NORETURN __attribute__((noreturn))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

/* ---- boot ---------------------------------------------------------------------------- */

/* a0 and a1 at entry: hart id and device-tree address (0 on the Handoff VMM by default). */
extern uint32_t rt_boot_hartid;
extern uint32_t rt_boot_dtb;

/* Linker-script symbols (link.ld). */
extern char __text_start[], __text_end[]; /* code + read-only data, padded to a page */
extern char __image_end[]; /* first page after the image (data, bss and stack) */

/* Powers off through the test finisher: code 0 passes, anything else fails with that code. */
NORETURN void rt_exit(int code);
/* Prints "panic: <message>" and fails with code 2. */
NORETURN void rt_panic(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* ---- RAM ----------------------------------------------------------------------------- */

/* Main RAM as found at boot (see README "RAM size"): [rt_ram_base(), rt_ram_end()). */
uint32_t rt_ram_base(void);
uint32_t rt_ram_end(void); /* exclusive; 0 means the top of the 4 GiB space */
/* How the size was found: "host-args", "dtb", "probe" or "default". */
const char *rt_ram_source(void);
/* Free RAM for the guest's own use: from the first page after the image to the end of RAM,
 * minus anything the boot loader left there (QEMU's device tree). Page-aligned. */
uint32_t rt_free_start(void);
uint32_t rt_free_end(void); /* never 0 */

/* ---- host arguments (control device HOST_ARGS; empty on QEMU) -------------------------- */

/* The raw host-args string ("" when absent). Format: "key=value" tokens separated by spaces. */
const char *rt_host_args(void);
/* Value of `key` as a number (decimal, 0x hex, optional K/M/G suffix), or `dflt` when absent
 * or malformed. */
uint32_t rt_arg_u32(const char *key, uint32_t dflt);

/* ---- console (UART 0, polling) ------------------------------------------------------ */

void con_putc(int c);
void con_write(const char *s, size_t n);
void con_puts(const char *s); /* no newline added */
/* The next received byte, or -1 when none is waiting. */
int con_getc_nb(void);
/* Waits for a received byte (polls, then sleeps in WFI with the timer armed). */
int con_getc(void);

/* printf-lite: %d %i %u %x %X %c %s %p %%, flags '-' '0', width, precision for %s,
 * length modifiers l, ll, z. */
int kprintf(const char *fmt, ...) PRINTF_LIKE(1, 2);
int kvprintf(const char *fmt, va_list ap);
int ksnprintf(char *buf, size_t size, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* ---- time and counters ----------------------------------------------------------------- */

uint64_t rt_mtime(void); /* CLINT mtime, CLINT_HZ ticks per second */
uint64_t rt_rdtime(void); /* the time CSR (same clock, read through rdtime) */
uint64_t rt_instret(void); /* instructions retired (rdinstret/rdinstreth) */
uint64_t rt_cycle(void);
/* Sleeps in WFI until mtime >= deadline (the timer is armed only to wake WFI). */
void rt_sleep_until(uint64_t deadline);
/* Sleeps in WFI until the timer reaches `deadline` or the host wakes the hart
 * (e.g. UART input on the Handoff VMM); may return early. */
void rt_wait_event(uint64_t deadline);

/* ---- small helpers ------------------------------------------------------------------- */

static inline uint32_t mmio_read32(uint32_t addr) { return *(volatile uint32_t *)(uintptr_t)addr; }
static inline void mmio_write32(uint32_t addr, uint32_t v) { *(volatile uint32_t *)(uintptr_t)addr = v; }
static inline uint8_t mmio_read8(uint32_t addr) { return *(volatile uint8_t *)(uintptr_t)addr; }
static inline void mmio_write8(uint32_t addr, uint8_t v) { *(volatile uint8_t *)(uintptr_t)addr = v; }

#define csr_read(csr)                                         \
  ({                                                          \
    uint32_t v_;                                              \
    __asm__ volatile("csrr %0, " #csr : "=r"(v_)::"memory"); \
    v_;                                                       \
  })
#define csr_write(csr, val) __asm__ volatile("csrw " #csr ", %0" ::"r"((uint32_t)(val)) : "memory")
#define csr_set(csr, val) __asm__ volatile("csrs " #csr ", %0" ::"r"((uint32_t)(val)) : "memory")
#define csr_clear(csr, val) __asm__ volatile("csrc " #csr ", %0" ::"r"((uint32_t)(val)) : "memory")

#endif
