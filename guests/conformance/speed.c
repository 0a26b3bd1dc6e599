/*
 * speed: a CPU-bound probe of interpreter speed (not a conformance test). A mix of
 * table-driven CRC32, integer matrix multiply, a sieve and an insertion sort, repeated
 * ROUNDS times; prints one checksum per kernel, identical on QEMU and on Handoff.
 * Measure with: run-elf prebuilt/speed.elf --stats
 */
#include <stdint.h>

#define UART ((volatile uint8_t *)0x10000000)
#define ROUNDS 160

static void putc_(char c) {
  while ((UART[5] & 0x20) == 0) {
  }
  UART[0] = (uint8_t)c;
}

static void puts_(const char *s) {
  while (*s) putc_(*s++);
}

static void puthex(uint32_t v) {
  for (int i = 28; i >= 0; i -= 4) putc_("0123456789abcdef"[(v >> i) & 15]);
}

static uint32_t crc_table[256];
static uint8_t buf[16384];

static void crc_init(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    crc_table[n] = c;
  }
}

static uint32_t crc32(const uint8_t *p, uint32_t len, uint32_t crc) {
  crc = ~crc;
  while (len--) crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#define N 24
static int32_t ma[N][N], mb[N][N], mc[N][N];

static uint32_t matmul(uint32_t seed) {
  for (int i = 0; i < N; i++)
    for (int j = 0; j < N; j++) {
      seed = seed * 1103515245u + 12345u;
      ma[i][j] = (int32_t)(seed >> 16) % 100 - 50;
      mb[i][j] = (int32_t)(seed >> 8) % 100 - 50;
    }
  for (int i = 0; i < N; i++)
    for (int j = 0; j < N; j++) {
      int32_t s = 0;
      for (int k = 0; k < N; k++) s += ma[i][k] * mb[k][j];
      mc[i][j] = s;
    }
  uint32_t h = 0;
  for (int i = 0; i < N; i++)
    for (int j = 0; j < N; j++) h = h * 31u + (uint32_t)mc[i][j];
  return h;
}

#define SIEVE 20000
static uint8_t composite[SIEVE];

static uint32_t sieve(void) {
  for (int i = 0; i < SIEVE; i++) composite[i] = 0;
  uint32_t count = 0;
  for (int i = 2; i < SIEVE; i++) {
    if (composite[i]) continue;
    count++;
    for (int j = i * 2; j < SIEVE; j += i) composite[j] = 1;
  }
  return count;
}

#define SORT 400
static int32_t arr[SORT];

static uint32_t sort(uint32_t seed) {
  for (int i = 0; i < SORT; i++) {
    seed = seed * 1664525u + 1013904223u;
    arr[i] = (int32_t)seed / 7;
  }
  for (int i = 1; i < SORT; i++) {
    int32_t v = arr[i];
    int j = i - 1;
    while (j >= 0 && arr[j] > v) {
      arr[j + 1] = arr[j];
      j--;
    }
    arr[j + 1] = v;
  }
  uint32_t h = 0;
  for (int i = 0; i < SORT; i++) h = h * 33u ^ (uint32_t)arr[i];
  return h;
}

int main(void) {
  uint32_t crc = 0, mat = 0, primes = 0, sorted = 0;
  crc_init();
  for (uint32_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 7 + (i >> 5));
  for (int r = 0; r < ROUNDS; r++) {
    crc = crc32(buf, sizeof buf, crc);
    buf[r & 1023] ^= (uint8_t)crc;
    mat ^= matmul((uint32_t)r + crc);
    primes += sieve();
    sorted ^= sort(mat + (uint32_t)r);
  }
  puts_("speed: crc=");
  puthex(crc);
  puts_(" mat=");
  puthex(mat);
  puts_(" primes=");
  puthex(primes);
  puts_(" sort=");
  puthex(sorted);
  puts_("\n");
  return 0;
}
