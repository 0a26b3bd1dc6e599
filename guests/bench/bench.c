/*
 * bench: a CPU-bound mix for MIPS measurements (instret / wall time). Four kernels, each run
 * BENCH_ITERS times (host args: bench.iters=N), each printing a checksum that must be the same
 * on every correct RV32IMA machine; then the instret of each kernel and in total.
 *
 *   crc32     bitwise-table CRC-32 (IEEE) over a 64 KiB buffer
 *   matmul    48x48 int32 matrix multiply
 *   listsort  merge sort of a 4096-node singly linked list (pointer chasing)
 *   sieve     sieve of Eratosthenes up to 2^16 over a byte array
 *
 * Output lines up to "checksum:" are deterministic; the "instret:" line is exact on the
 * Handoff VMM and on QEMU with -icount shift=0 (plain QEMU TCG reports host ticks there).
 */
#include <string.h>

#include "rt.h"

#ifndef BENCH_ITERS
#define BENCH_ITERS 1000
#endif

#define CRC_BYTES (64u << 10)
#define MAT_N 48
#define LIST_NODES 4096
#define SIEVE_N (1u << 16)

static uint8_t crc_buf[CRC_BYTES];
static uint32_t crc_table[256];
static int32_t mat_a[MAT_N][MAT_N], mat_b[MAT_N][MAT_N], mat_c[MAT_N][MAT_N];
struct node {
  struct node *next;
  uint32_t value;
};
static struct node nodes[LIST_NODES];
static uint8_t sieve_buf[SIEVE_N];

static uint32_t lcg_state;
static uint32_t lcg(void) {
  lcg_state = lcg_state * 1664525u + 1013904223u;
  return lcg_state;
}

/* ---- crc32 ----------------------------------------------------------------------------- */

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
  lcg_state = 1;
  for (uint32_t i = 0; i < CRC_BYTES; i++) crc_buf[i] = (uint8_t)(lcg() >> 24);
}

static uint32_t crc32(const uint8_t *p, uint32_t n, uint32_t crc) {
  crc = ~crc;
  for (uint32_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

static uint32_t run_crc(uint32_t iters) {
  uint32_t crc = 0;
  for (uint32_t it = 0; it < iters; it++) {
    crc_buf[it % CRC_BYTES] ^= (uint8_t)it; /* every pass sees different data */
    crc = crc32(crc_buf, CRC_BYTES, crc);
  }
  return crc;
}

/* ---- matmul ---------------------------------------------------------------------------- */

static uint32_t run_matmul(uint32_t iters) {
  uint32_t sum = 0;
  lcg_state = 2;
  for (int i = 0; i < MAT_N; i++)
    for (int j = 0; j < MAT_N; j++) {
      mat_a[i][j] = (int32_t)(lcg() >> 16) - 32768;
      mat_b[i][j] = (int32_t)(lcg() >> 16) - 32768;
    }
  for (uint32_t it = 0; it < iters; it++) {
    mat_a[it % MAT_N][(it / MAT_N) % MAT_N] += (int32_t)it;
    for (int i = 0; i < MAT_N; i++)
      for (int j = 0; j < MAT_N; j++) {
        int32_t acc = 0;
        for (int k = 0; k < MAT_N; k++) acc += mat_a[i][k] * mat_b[k][j];
        mat_c[i][j] = acc;
      }
    for (int i = 0; i < MAT_N; i++)
      for (int j = 0; j < MAT_N; j++) sum = (sum << 5 | sum >> 27) ^ (uint32_t)mat_c[i][j];
  }
  return sum;
}

/* ---- listsort -------------------------------------------------------------------------- */

static struct node *merge(struct node *a, struct node *b) {
  struct node head, *t = &head;
  while (a && b) {
    if (a->value <= b->value) {
      t->next = a;
      a = a->next;
    } else {
      t->next = b;
      b = b->next;
    }
    t = t->next;
  }
  t->next = a ? a : b;
  return head.next;
}

static struct node *merge_sort(struct node *list) {
  if (list == NULL || list->next == NULL) return list;
  struct node *slow = list, *fast = list->next;
  while (fast && fast->next) {
    slow = slow->next;
    fast = fast->next->next;
  }
  struct node *right = slow->next;
  slow->next = NULL;
  return merge(merge_sort(list), merge_sort(right));
}

static uint32_t run_listsort(uint32_t iters) {
  uint32_t sum = 0;
  lcg_state = 3;
  for (uint32_t it = 0; it < iters; it++) {
    /* link the nodes in a scrambled order with fresh values */
    for (uint32_t i = 0; i < LIST_NODES; i++) nodes[i].value = lcg() >> 8;
    struct node *list = NULL;
    for (uint32_t i = 0; i < LIST_NODES; i++) {
      struct node *n = &nodes[(i * 2654435761u) % LIST_NODES];
      n->next = list;
      list = n;
    }
    list = merge_sort(list);
    uint32_t prev = 0, count = 0;
    for (struct node *n = list; n; n = n->next, count++) {
      if (n->value < prev) rt_panic("listsort: not sorted at node %u", (unsigned)count);
      prev = n->value;
      sum = sum * 31 + n->value;
    }
    if (count != LIST_NODES) rt_panic("listsort: lost nodes (%u)", (unsigned)count);
  }
  return sum;
}

/* ---- sieve ----------------------------------------------------------------------------- */

static uint32_t primes_found;

static uint32_t run_sieve(uint32_t iters) {
  uint32_t sum = 0;
  for (uint32_t it = 0; it < iters; it++) {
    uint32_t limit = SIEVE_N - (it % 64); /* vary the bound a little */
    memset(sieve_buf, 1, limit);
    sieve_buf[0] = sieve_buf[1] = 0;
    for (uint32_t i = 2; i * i < limit; i++)
      if (sieve_buf[i])
        for (uint32_t j = i * i; j < limit; j += i) sieve_buf[j] = 0;
    uint32_t count = 0, last = 0;
    for (uint32_t i = 0; i < limit; i++)
      if (sieve_buf[i]) {
        count++;
        last = i;
      }
    primes_found = count;
    sum = (sum << 7 | sum >> 25) ^ count ^ (last << 12);
  }
  return sum;
}

/* ---- main ------------------------------------------------------------------------------ */

struct kernel {
  const char *name;
  uint32_t (*run)(uint32_t iters);
  uint32_t checksum;
  uint64_t instret;
};

int main(void) {
  uint32_t iters = rt_arg_u32("bench.iters", BENCH_ITERS);
  struct kernel kernels[] = {
      {"crc32", run_crc, 0, 0},
      {"matmul", run_matmul, 0, 0},
      {"listsort", run_listsort, 0, 0},
      {"sieve", run_sieve, 0, 0},
  };
  const unsigned nk = sizeof kernels / sizeof kernels[0];
  kprintf("bench: %u iterations of crc32, matmul, listsort, sieve\n", (unsigned)iters);
  crc_init();
  uint64_t t0 = rt_mtime(), i0 = rt_instret();
  uint32_t total = 0;
  for (unsigned k = 0; k < nk; k++) {
    uint64_t start = rt_instret();
    kernels[k].checksum = kernels[k].run(iters);
    kernels[k].instret = rt_instret() - start;
    total = (total << 9 | total >> 23) ^ kernels[k].checksum;
    kprintf("%-9s checksum 0x%08x\n", kernels[k].name, (unsigned)kernels[k].checksum);
  }
  uint64_t instret = rt_instret() - i0, ticks = rt_mtime() - t0;
  kprintf("primes below %u: %u\n", (unsigned)(SIEVE_N - ((iters - 1) % 64)), (unsigned)primes_found);
  kprintf("checksum: 0x%08x\n", (unsigned)total);
  kprintf("instret: %llu (crc32 %llu, matmul %llu, listsort %llu, sieve %llu)\n", (unsigned long long)instret,
          (unsigned long long)kernels[0].instret, (unsigned long long)kernels[1].instret,
          (unsigned long long)kernels[2].instret, (unsigned long long)kernels[3].instret);
  kprintf("time: %u ms by mtime\n", (unsigned)(ticks / (CLINT_HZ / 1000)));
  return 0;
}
