/* Common runtime: traps, exit, RAM discovery, host args, timer, control-device helpers. */
#include <string.h>

#include "handoff.h"
#include "rt.h"

#ifndef RT_DEFAULT_RAM_SIZE
#define RT_DEFAULT_RAM_SIZE (128u << 20) /* QEMU virt's and the VMM's default */
#endif

uint32_t rt_boot_hartid;
uint32_t rt_boot_dtb;

void rt_init(void);
struct trap_frame {
  uint32_t x[32]; /* x[0] unused, x[2] = the interrupted sp */
};
void rt_trap(struct trap_frame *f);

/* ---- traps ------------------------------------------------------------------------- */

/* Set while rt_probe_load32() runs: a load/store access fault anywhere is then expected. */
static volatile int probing;
static volatile int probe_faulted;

static uint32_t sext(uint32_t v, unsigned bits) { return (uint32_t)((int32_t)(v << (32 - bits)) >> (32 - bits)); }

/* Effective address of the load/store/AMO `insn` (used when mtval does not carry it). */
static uint32_t effective_address(const struct trap_frame *f, uint32_t insn) {
  uint32_t rs1 = (insn >> 15) & 31, base = rs1 == 0 ? 0 : f->x[rs1];
  switch (insn & 0x7f) {
    case 0x03: /* LOAD */
      return base + sext(insn >> 20, 12);
    case 0x23: /* STORE */
      return base + sext(((insn >> 25) << 5) | ((insn >> 7) & 31), 12);
    default: /* AMO, LR/SC */
      return base;
  }
}

void rt_trap(struct trap_frame *f) {
  uint32_t cause = csr_read(mcause), epc = csr_read(mepc), tval = csr_read(mtval);
  if (cause == CAUSE_LOAD_ACCESS || cause == CAUSE_STORE_ACCESS) {
    uint32_t insn = *(const uint32_t *)(uintptr_t)epc; /* the image is built without C: 4 bytes */
    uint32_t addr = tval != 0 ? tval : effective_address(f, insn);
    if (probing || addr - HF_CTRL_BASE < HF_CTRL_SIZE) {
      /* Absent device (or a probe): the load reads 0, the store is dropped. */
      uint32_t op = insn & 0x7f, rd = (insn >> 7) & 31;
      if ((op == 0x03 || op == 0x2f) && rd != 0) f->x[rd] = 0;
      if (probing) probe_faulted = 1;
      csr_write(mepc, epc + 4);
      return;
    }
  }
  kprintf("\ntrap: unexpected mcause=0x%08x mepc=0x%08x mtval=0x%08x ra=0x%08x sp=0x%08x\n", (unsigned)cause,
          (unsigned)epc, (unsigned)tval, (unsigned)f->x[1], (unsigned)f->x[2]);
  rt_exit(3);
}

/* Loads a word that may not exist; *ok = 0 when it faulted. */
static uint32_t probe_load32(uint32_t addr, int *ok) {
  uint32_t v;
  probe_faulted = 0;
  probing = 1;
  __asm__ volatile("lw %0, 0(%1)" : "=r"(v) : "r"(addr) : "memory");
  probing = 0;
  *ok = !probe_faulted;
  return v;
}

void rt_exit(int code) {
  /* let the UART drain: the transmitter reports empty before we power off */
  for (int k = 0; k < 100000 && !(mmio_read8(BOARD_UART0 + UART_LSR) & 0x40); k++) {
  }
  mmio_write32(BOARD_FINISHER, code == 0 ? FINISHER_PASS : (FINISHER_FAIL | ((uint32_t)code << 16)));
  for (;;) __asm__ volatile("wfi");
}

void rt_panic(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  con_puts("panic: ");
  kvprintf(fmt, ap);
  va_end(ap);
  con_putc('\n');
  rt_exit(2);
}

/* ---- control device ------------------------------------------------------------------ */

static inline uint32_t hf_reg(uint32_t off) { return mmio_read32(HF_CTRL_BASE + off); }

int hf_present(void) {
  return hf_reg(HF_CTRL_MAGIC) == HF_MAGIC_VALUE && (hf_reg(HF_CTRL_VERSION) >> 16) == HF_VERSION_MAJOR;
}
uint32_t hf_version(void) { return hf_present() ? hf_reg(HF_CTRL_VERSION) : 0; }
uint32_t hf_features(void) { return hf_present() ? hf_reg(HF_CTRL_FEATURES) : 0; }
void hf_ready(uint32_t tag) {
  if (hf_present()) mmio_write32(HF_CTRL_BASE + HF_CTRL_READY, tag);
}
uint32_t hf_ready_count(void) { return hf_present() ? hf_reg(HF_CTRL_READY_COUNT) : 0; }
uint64_t hf_generation(void) {
  if (!hf_present()) return 0;
  uint32_t hi, lo;
  do {
    hi = hf_reg(HF_CTRL_GENERATION_HI);
    lo = hf_reg(HF_CTRL_GENERATION_LO);
  } while (hi != hf_reg(HF_CTRL_GENERATION_HI));
  return ((uint64_t)hi << 32) | lo;
}
uint32_t hf_entropy(unsigned k) {
  return k < HF_ENTROPY_WORDS && hf_present() ? hf_reg(HF_CTRL_ENTROPY + 4 * k) : 0;
}
unsigned hf_host_args(char *buf, unsigned size) {
  unsigned n = 0;
  if (size == 0) return 0;
  if (hf_present() && (hf_features() & HF_FEATURE_HOST_ARGS)) {
    n = hf_reg(HF_CTRL_HOST_ARGS_LEN);
    if (n > HF_HOST_ARGS_SIZE) n = HF_HOST_ARGS_SIZE;
    if (n > size - 1) n = size - 1;
    for (unsigned k = 0; k < n; k++) buf[k] = (char)mmio_read8(HF_CTRL_BASE + HF_CTRL_HOST_ARGS + k);
  }
  buf[n] = 0;
  return n;
}

/* ---- host args ----------------------------------------------------------------------- */

static char host_args[HF_HOST_ARGS_SIZE + 1];

const char *rt_host_args(void) { return host_args; }

static int is_sep(char c) { return c == ' ' || c == '\t' || c == '\n' || c == ',' || c == 0; }

/* Parses a number: decimal or 0x hex, optional K/M/G suffix. Returns 0 when malformed. */
static int parse_u32(const char *s, const char *end, uint32_t *out) {
  uint64_t v = 0;
  unsigned base = 10, digits = 0;
  if (end - s > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
  }
  for (; s < end; s++) {
    char c = *s;
    unsigned d;
    if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
    else if (base == 16 && c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
    else if (base == 16 && c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
    else break;
    v = v * base + d;
    digits++;
    if (v > 0xffffffffu) return 0;
  }
  if (digits == 0) return 0;
  if (s < end) {
    unsigned shift = *s == 'K' || *s == 'k' ? 10 : *s == 'M' || *s == 'm' ? 20 : *s == 'G' || *s == 'g' ? 30 : 99;
    if (shift == 99 || s + 1 != end) return 0;
    v <<= shift;
    if (v > 0xffffffffu) return 0;
  }
  *out = (uint32_t)v;
  return 1;
}

uint32_t rt_arg_u32(const char *key, uint32_t dflt) {
  size_t klen = strlen(key);
  const char *p = host_args;
  while (*p) {
    while (*p && is_sep(*p)) p++;
    const char *tok = p;
    while (!is_sep(*p)) p++;
    if ((size_t)(p - tok) > klen && memcmp(tok, key, klen) == 0 && tok[klen] == '=') {
      uint32_t v;
      return parse_u32(tok + klen + 1, p, &v) ? v : dflt;
    }
  }
  return dflt;
}

/* ---- RAM discovery ------------------------------------------------------------------- */

static uint32_t ram_end;
static const char *ram_source = "default";
static uint32_t free_end;

static uint32_t be32(const void *p) {
  const uint8_t *b = p;
  return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

#define FDT_MAGIC 0xd00dfeedu
#define FDT_BEGIN_NODE 1u
#define FDT_END_NODE 2u
#define FDT_PROP 3u
#define FDT_NOP 4u
#define FDT_END 9u

/* Finds the first /memory node's reg (base, size) in a flattened device tree. */
static int fdt_memory(uint32_t dtb, uint32_t *base, uint32_t *size) {
  const uint8_t *fdt = (const uint8_t *)(uintptr_t)dtb;
  uint32_t total = be32(fdt + 4), off_struct = be32(fdt + 8), off_strings = be32(fdt + 12);
  uint32_t size_struct = be32(fdt + 36);
  if (total > (1u << 20) || off_struct >= total || off_strings >= total || size_struct > total - off_struct) return 0;
  const uint8_t *p = fdt + off_struct, *end = p + size_struct;
  uint32_t addr_cells = 2, size_cells = 1; /* root node's, defaults per the spec */
  int depth = 0, in_memory = 0;
  while (p + 4 <= end) {
    uint32_t tok = be32(p);
    p += 4;
    if (tok == FDT_BEGIN_NODE) {
      const char *name = (const char *)p;
      size_t n = strnlen(name, (size_t)(end - p));
      depth++;
      in_memory = depth == 2 && strncmp(name, "memory", 6) == 0 && (name[6] == 0 || name[6] == '@');
      p += (n + 4) & ~3u;
    } else if (tok == FDT_END_NODE) {
      depth--;
      in_memory = 0;
    } else if (tok == FDT_PROP) {
      if (p + 8 > end) return 0;
      uint32_t len = be32(p), nameoff = be32(p + 4);
      const uint8_t *val = p + 8;
      if (len > (uint32_t)(end - val) || nameoff >= total - off_strings) return 0;
      const char *pname = (const char *)fdt + off_strings + nameoff;
      if (depth == 1 && len == 4 && strcmp(pname, "#address-cells") == 0) addr_cells = be32(val);
      if (depth == 1 && len == 4 && strcmp(pname, "#size-cells") == 0) size_cells = be32(val);
      if (in_memory && strcmp(pname, "reg") == 0 && addr_cells >= 1 && addr_cells <= 2 && size_cells >= 1 &&
          size_cells <= 2 && len >= 4 * (addr_cells + size_cells)) {
        uint32_t a_hi = addr_cells == 2 ? be32(val) : 0, a = be32(val + 4 * (addr_cells - 1));
        const uint8_t *s = val + 4 * addr_cells;
        uint32_t s_hi = size_cells == 2 ? be32(s) : 0, sz = be32(s + 4 * (size_cells - 1));
        if (a_hi != 0) return 0;
        /* clamp to the 32-bit space */
        if (s_hi != 0 || (uint64_t)a + sz > 0x100000000ull) sz = (uint32_t)(0x100000000ull - a);
        *base = a;
        *size = sz;
        return 1;
      }
      p = val + ((len + 3) & ~3u);
    } else if (tok == FDT_NOP) {
      continue;
    } else {
      break; /* FDT_END or garbage */
    }
  }
  return 0;
}

/* Highest page-aligned end of RAM such that the page below it answers loads. */
static uint32_t probe_ram_end(void) {
  /* invariant: lo is known readable (the last page of the image), hi is known not to be */
  uint64_t lo = (uint32_t)(uintptr_t)__image_end - PAGE_SIZE, hi = 0x100000000ull;
  while (hi - lo > PAGE_SIZE) {
    uint64_t mid = lo + (((hi - lo) / 2) & ~(uint64_t)(PAGE_SIZE - 1));
    int ok;
    (void)probe_load32((uint32_t)mid, &ok);
    if (ok) lo = mid;
    else hi = mid;
  }
  return (uint32_t)hi; /* 0 when RAM reaches the top of the address space */
}

void rt_init(void) {
  hf_host_args(host_args, sizeof host_args);

  uint32_t image_end = (uint32_t)(uintptr_t)__image_end;
  uint32_t arg_ram = rt_arg_u32("ram", 0);
  uint32_t dtb_base, dtb_size;
  int dtb_ok = 0;
  if (rt_boot_dtb >= BOARD_RAM_BASE && (rt_boot_dtb & 3) == 0) {
    int ok;
    uint32_t magic = probe_load32(rt_boot_dtb, &ok);
    dtb_ok = ok && be32(&magic) == FDT_MAGIC;
  }
  if (arg_ram != 0) {
    ram_end = BOARD_RAM_BASE + (arg_ram & ~(PAGE_SIZE - 1));
    ram_source = "host-args";
  } else if (dtb_ok && fdt_memory(rt_boot_dtb, &dtb_base, &dtb_size) && dtb_base == BOARD_RAM_BASE) {
    ram_end = dtb_base + (dtb_size & ~(PAGE_SIZE - 1));
    ram_source = "dtb";
  } else {
    int ok;
    (void)probe_load32(image_end - PAGE_SIZE, &ok); /* can we probe at all? */
    if (ok) {
      ram_end = probe_ram_end();
      ram_source = "probe";
    } else {
      ram_end = BOARD_RAM_BASE + RT_DEFAULT_RAM_SIZE;
      ram_source = "default";
    }
  }
  free_end = ram_end != 0 ? ram_end : 0u - PAGE_SIZE; /* 2 GiB of RAM: lose the top page, keep ends nonzero */
  /* keep QEMU's device tree (it sits in the last MiBs of RAM) out of the free range */
  if (dtb_ok && rt_boot_dtb >= image_end && rt_boot_dtb < free_end) {
    free_end = rt_boot_dtb & ~(PAGE_SIZE - 1);
  }
  if (free_end < image_end) free_end = image_end;
}

uint32_t rt_ram_base(void) { return BOARD_RAM_BASE; }
uint32_t rt_ram_end(void) { return ram_end; }
const char *rt_ram_source(void) { return ram_source; }
uint32_t rt_free_start(void) { return (uint32_t)(uintptr_t)__image_end; }
uint32_t rt_free_end(void) { return free_end; }

/* ---- time and counters ----------------------------------------------------------------- */

uint64_t rt_mtime(void) {
  uint32_t hi, lo;
  do {
    hi = mmio_read32(CLINT_MTIME + 4);
    lo = mmio_read32(CLINT_MTIME);
  } while (hi != mmio_read32(CLINT_MTIME + 4));
  return ((uint64_t)hi << 32) | lo;
}

#define READ_CSR64(lo_csr, hi_csr)                \
  uint32_t hi, lo;                                \
  do {                                            \
    hi = csr_read(hi_csr);                        \
    lo = csr_read(lo_csr);                        \
  } while (hi != csr_read(hi_csr));               \
  return ((uint64_t)hi << 32) | lo

uint64_t rt_rdtime(void) { READ_CSR64(time, timeh); }
uint64_t rt_instret(void) { READ_CSR64(instret, instreth); }
uint64_t rt_cycle(void) { READ_CSR64(cycle, cycleh); }

static void set_mtimecmp(uint64_t when) {
  mmio_write32(CLINT_MTIMECMP + 4, 0xffffffffu); /* no spurious deadline while the halves change */
  mmio_write32(CLINT_MTIMECMP, (uint32_t)when);
  mmio_write32(CLINT_MTIMECMP + 4, (uint32_t)(when >> 32));
}

#define MIE_MTIE (1u << 7)

void rt_wait_event(uint64_t deadline) {
  set_mtimecmp(deadline);
  csr_set(mie, MIE_MTIE); /* mstatus.MIE is 0: the interrupt only ends WFI, it is never taken */
  if (rt_mtime() < deadline) __asm__ volatile("wfi");
  csr_clear(mie, MIE_MTIE);
  set_mtimecmp(~0ull);
}

void rt_sleep_until(uint64_t deadline) {
  while (rt_mtime() < deadline) rt_wait_event(deadline);
}
