/*
 * kvserver: builds a large in-memory hash table, rings the control device's READY doorbell
 * (the template point), then serves line-based requests on the UART. Protocol: README.md.
 *
 * Table: open addressing, linear probing, 64-byte slots in free RAM after the image.
 * Size: 2^KV_SLOTS_LOG2 slots (default 2^19 = 32 MiB), KV_FILL_PERCENT of them prefilled
 * with k<i> -> a 16-hex-digit value computed by KV_WORK rounds of a mixing function.
 * Host args (Handoff VMM): kv.slots_log2=N kv.fill=PERCENT kv.work=ROUNDS.
 * When free RAM is smaller than the table, the table shrinks to the largest power of two
 * that fits.
 *
 * Input: once ready it reads the UART by its receive interrupt (irq.h) and sleeps in WFI with
 * no timer armed between requests, so an idle kvserver executes nothing at all.
 */
#include <string.h>

#include "handoff.h"
#include "irq.h"
#include "rt.h"

#ifndef KV_SLOTS_LOG2
#define KV_SLOTS_LOG2 19
#endif
#ifndef KV_FILL_PERCENT
#define KV_FILL_PERCENT 75
#endif
#ifndef KV_WORK
#define KV_WORK 512
#endif

#define KEY_MAX 24
#define VAL_MAX 32
#define LINE_MAX 128

struct slot {
  uint32_t hash;
  uint8_t klen; /* 0: empty */
  uint8_t vlen;
  uint16_t pad;
  char key[KEY_MAX];
  char val[VAL_MAX];
};
_Static_assert(sizeof(struct slot) == 64, "slots are 64 bytes");

static struct slot *table;
static uint32_t mask; /* slots - 1 */
static uint32_t entries;
static uint32_t gets, hits, puts;

static uint32_t fnv1a(const char *s, unsigned n) {
  uint32_t h = 2166136261u;
  for (unsigned k = 0; k < n; k++) h = (h ^ (uint8_t)s[k]) * 16777619u;
  return h;
}

/* The slot holding key, or the empty slot where it would go, or NULL when the table is full. */
static struct slot *lookup(const char *key, unsigned klen, uint32_t h) {
  for (uint32_t i = h & mask, n = 0; n <= mask; i = (i + 1) & mask, n++) {
    struct slot *s = &table[i];
    if (s->klen == 0) return s;
    if (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0) return s;
  }
  return NULL;
}

/* 0 ok, -1 table full (keeps one slot free so lookups terminate). */
static int put(const char *key, unsigned klen, const char *val, unsigned vlen) {
  uint32_t h = fnv1a(key, klen);
  struct slot *s = lookup(key, klen, h);
  if (s == NULL) return -1;
  if (s->klen == 0) {
    if (entries >= mask) return -1;
    s->hash = h;
    s->klen = (uint8_t)klen;
    memcpy(s->key, key, klen);
    entries++;
  }
  s->vlen = (uint8_t)vlen;
  memcpy(s->val, val, vlen);
  return 0;
}

/* The prefilled value of k<i>: `rounds` of a 64-bit mix (xorshift-multiply), split in halves
 * so it needs no 64-bit multiply helper. */
static void computed_value(uint32_t i, uint32_t rounds, uint32_t out[2]) {
  uint32_t a = i * 0x9e3779b9u + 0x7f4a7c15u, b = i ^ 0x85ebca6bu;
  for (uint32_t r = 0; r < rounds; r++) {
    a ^= b >> 7;
    b ^= a << 9;
    a = a * 0xcc9e2d51u + b;
    b = (b ^ (a >> 13)) * 0x1b873593u;
  }
  out[0] = a;
  out[1] = b;
}

static unsigned fmt_u32(char *p, uint32_t v) {
  char tmp[10];
  unsigned n = 0, k = 0;
  do tmp[n++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (n) p[k++] = tmp[--n];
  return k;
}

static void fmt_hex32(char *p, uint32_t v) {
  for (int k = 7; k >= 0; k--, v >>= 4) p[k] = "0123456789abcdef"[v & 15];
}

static void build(uint32_t count, uint32_t rounds) {
  char key[KEY_MAX], val[16];
  uint32_t v[2];
  key[0] = 'k';
  for (uint32_t i = 0; i < count; i++) {
    unsigned klen = 1 + fmt_u32(key + 1, i);
    computed_value(i, rounds, v);
    fmt_hex32(val, v[0]);
    fmt_hex32(val + 8, v[1]);
    if (put(key, klen, val, 16) != 0) rt_panic("kvserver: table full while building");
  }
}

/* ---- entropy for RAND: reseeded whenever the generation id changes (i.e. after a clone) ---- */

static uint64_t rng_generation;
static uint32_t rng[4];
static int rng_seeded;

static void rng_seed(void) {
  rng_generation = hf_generation();
  uint64_t t = rt_mtime();
  for (unsigned k = 0; k < 4; k++) rng[k] = hf_entropy(k) ^ hf_entropy(k + 4) ^ (uint32_t)(t >> (8 * k)) ^ (0x9e3779b9u * (k + 1));
  rng_seeded = 1;
}

static uint32_t rng_next(void) { /* xoshiro128** */
  if (!rng_seeded || hf_generation() != rng_generation) rng_seed();
  uint32_t result = ((rng[1] * 5) << 7 | (rng[1] * 5) >> 25) * 9, t = rng[1] << 9;
  rng[2] ^= rng[0];
  rng[3] ^= rng[1];
  rng[1] ^= rng[2];
  rng[0] ^= rng[3];
  rng[2] ^= t;
  rng[3] = rng[3] << 11 | rng[3] >> 21;
  return result;
}

/* ---- requests ------------------------------------------------------------------------ */

static int echo;
static uint32_t build_ms;

static const char *skip_spaces(const char *p) {
  while (*p == ' ' || *p == '\t') p++;
  return p;
}

static unsigned token(const char *p) {
  unsigned n = 0;
  while (p[n] && p[n] != ' ' && p[n] != '\t') n++;
  return n;
}

static int is_cmd(const char *line, unsigned n, const char *cmd) { return n == strlen(cmd) && memcmp(line, cmd, n) == 0; }

static void serve(const char *line) {
  line = skip_spaces(line);
  unsigned n = token(line);
  const char *arg = skip_spaces(line + n);
  if (is_cmd(line, n, "GET")) {
    unsigned klen = token(arg);
    gets++;
    if (klen == 0 || *skip_spaces(arg + klen) != 0) {
      kprintf("ERR usage: GET key\n");
      return;
    }
    struct slot *s = klen <= KEY_MAX ? lookup(arg, klen, fnv1a(arg, klen)) : NULL;
    if (s == NULL || s->klen == 0) {
      kprintf("NOT_FOUND\n");
      return;
    }
    hits++;
    kprintf("VALUE %.*s\n", (int)s->vlen, s->val);
  } else if (is_cmd(line, n, "PUT")) {
    unsigned klen = token(arg);
    const char *val = skip_spaces(arg + klen);
    unsigned vlen = strlen(val);
    while (vlen > 0 && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t')) vlen--;
    if (klen == 0 || vlen == 0) kprintf("ERR usage: PUT key value\n");
    else if (klen > KEY_MAX) kprintf("ERR key longer than %u bytes\n", KEY_MAX);
    else if (vlen > VAL_MAX) kprintf("ERR value longer than %u bytes\n", VAL_MAX);
    else if (put(arg, klen, val, vlen) != 0) kprintf("ERR table full\n");
    else {
      puts++;
      kprintf("OK\n");
    }
  } else if (is_cmd(line, n, "STATS")) {
    kprintf("STATS entries=%u slots=%u gets=%u hits=%u puts=%u build_ms=%u ready_count=%u generation=0x%016llx\n",
            (unsigned)entries, (unsigned)(mask + 1), (unsigned)gets, (unsigned)hits, (unsigned)puts,
            (unsigned)build_ms, (unsigned)hf_ready_count(), (unsigned long long)hf_generation());
  } else if (is_cmd(line, n, "RAND")) {
    kprintf("RAND %08x%08x\n", (unsigned)rng_next(), (unsigned)rng_next());
  } else if (is_cmd(line, n, "PING")) {
    kprintf("PONG\n");
  } else if (is_cmd(line, n, "ECHO")) {
    if (strcmp(arg, "on") == 0) echo = 1;
    else if (strcmp(arg, "off") == 0) echo = 0;
    else {
      kprintf("ERR usage: ECHO on|off\n");
      return;
    }
    kprintf("OK\n");
  } else if (is_cmd(line, n, "SHUTDOWN")) {
    kprintf("BYE\n");
    rt_exit(0);
  } else {
    kprintf("ERR unknown command (GET, PUT, STATS, RAND, PING, ECHO, SHUTDOWN)\n");
  }
}

int main(void) {
  uint32_t log2 = rt_arg_u32("kv.slots_log2", KV_SLOTS_LOG2);
  uint32_t fill = rt_arg_u32("kv.fill", KV_FILL_PERCENT);
  uint32_t rounds = rt_arg_u32("kv.work", KV_WORK);
  if (log2 < 4) log2 = 4;
  if (log2 > 24) log2 = 24;
  if (fill > 90) fill = 90;

  uint32_t base = rt_free_start(), avail = rt_free_end() - base;
  while (log2 > 4 && ((uint32_t)sizeof(struct slot) << log2) > avail) log2--;
  if (((uint32_t)sizeof(struct slot) << log2) > avail) rt_panic("kvserver: no free RAM for the table");
  uint32_t slots = 1u << log2, bytes = (uint32_t)sizeof(struct slot) << log2;
  uint32_t count = (uint32_t)((uint64_t)slots * fill / 100);
  table = (struct slot *)(uintptr_t)base;
  mask = slots - 1;

  kprintf("kvserver: building %u entries in %u slots (%u KiB at 0x%08x), %u rounds each\n", (unsigned)count,
          (unsigned)slots, (unsigned)(bytes >> 10), (unsigned)base, (unsigned)rounds);
  uint64_t t0 = rt_mtime();
  memset(table, 0, bytes); /* RAM is zero at boot on QEMU and the VMM, but do not rely on it */
  build(count, rounds);
  build_ms = (uint32_t)((rt_mtime() - t0) / (CLINT_HZ / 1000));
  kprintf("kvserver: built in %u ms\n", (unsigned)build_ms);

  /* The template point: on the Handoff VMM the vCPU stops here; a clone resumes right after. */
  hf_ready(HF_READY_TAG_KVSERVER);
  kprintf("kvserver: ready\n");
  irq_init();
  con_rx_irq_start(); /* input that came during the build raises the interrupt at once */

  char line[LINE_MAX];
  unsigned len = 0;
  int overflow = 0, prev = 0;
  for (;;) {
    int c = con_getc_irq();
    if (echo && !(c == '\n' && prev == '\r')) con_putc(c == '\r' ? '\n' : c); /* CR LF: one newline */
    prev = c;
    if (c == '\n' || c == '\r') {
      line[len] = 0;
      if (overflow) kprintf("ERR line longer than %u bytes\n", LINE_MAX - 1);
      else if (*skip_spaces(line) != 0) serve(line);
      len = 0;
      overflow = 0;
    } else if (c == 0x7f || c == 0x08) { /* backspace, for people typing into the console */
      if (len > 0) len--;
    } else if (len < LINE_MAX - 1) {
      line[len++] = (char)c;
    } else {
      overflow = 1;
    }
  }
}
