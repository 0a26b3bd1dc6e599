/*
 * ab: the a-b migration consistency guest (after QEMU's tests/migration/i386/a-b-bootblock).
 *
 * Increments the first byte of every 4 KiB page in [start, end) in an endless loop,
 * ascending; prints 'A' once before the first pass and 'B' after every AB_EVERY passes.
 * A paused VM's range is then consistent iff all first bytes are equal except at most one
 * place where the value drops by exactly one (mod 256): the page the pass had reached.
 * apps/vmm/src/guests/ab-check.ts checks that on the host.
 *
 * Range: by default every free page (rt_free_start()..rt_free_end(): after the image, below
 * QEMU's device tree). Overrides, first match wins per bound:
 *   host args  ab.start=ADDR ab.end=ADDR ab.pages=N ab.every=N   (Handoff VMM only)
 *   build      -DAB_START=ADDR -DAB_END=ADDR -DAB_PAGES=N -DAB_EVERY=N
 * Out-of-range values are clamped to the free range (the image is never touched).
 */
#include "handoff.h"
#include "rt.h"

#ifndef AB_START
#define AB_START 0 /* 0: rt_free_start() */
#endif
#ifndef AB_END
#define AB_END 0 /* 0: rt_free_end() */
#endif
#ifndef AB_PAGES
#define AB_PAGES 0 /* 0: up to the end */
#endif
#ifndef AB_EVERY
#define AB_EVERY 16
#endif

/* Where the host finds the range without parsing the console: symbol `ab_info` in the ELF. */
struct ab_info {
  uint32_t magic; /* "AB01" once the range is set */
  uint32_t start; /* first page (inclusive) */
  uint32_t end; /* last page + 4 KiB (exclusive) */
  uint32_t every; /* passes per 'B' */
};
volatile struct ab_info ab_info;

static uint32_t page_down(uint32_t a) { return a & ~(PAGE_SIZE - 1); }

int main(void) {
  uint32_t lo = rt_free_start(), hi = rt_free_end();
  uint32_t start = page_down(rt_arg_u32("ab.start", AB_START != 0 ? AB_START : lo));
  uint32_t end = page_down(rt_arg_u32("ab.end", AB_END != 0 ? AB_END : hi));
  uint32_t pages = rt_arg_u32("ab.pages", AB_PAGES);
  uint32_t every = rt_arg_u32("ab.every", AB_EVERY);
  if (start < lo) start = lo;
  if (end > hi || end == 0) end = hi;
  if (end < start) end = start;
  if (pages != 0 && pages < (end - start) / PAGE_SIZE) end = start + pages * PAGE_SIZE;
  if (every == 0) every = 1;
  if (end == start) rt_panic("ab: empty range");

  ab_info.start = start;
  ab_info.end = end;
  ab_info.every = every;
  ab_info.magic = 0x31304241; /* "AB01" */

  /* no capital A or B before the 'A': hosts wait for those letters */
  kprintf("ab: range 0x%08x..0x%08x, %u pages, every %u passes\n", (unsigned)start, (unsigned)end,
          (unsigned)((end - start) / PAGE_SIZE), (unsigned)every);
  con_putc('A');
  for (uint32_t pass = 1;; pass++) {
    for (volatile uint8_t *p = (volatile uint8_t *)start; p != (volatile uint8_t *)end; p += PAGE_SIZE) *p += 1;
    if (pass == every) {
      con_putc('B');
      pass = 0;
    }
  }
}
