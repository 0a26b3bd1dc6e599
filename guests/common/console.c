/* Console on UART 0 (NS16550A, polled) and a small printf. */
#include <string.h>

#include "rt.h"

#define UART_REG(r) (BOARD_UART0 + (r))

void con_putc(int c) {
  while (!(mmio_read8(UART_REG(UART_LSR)) & UART_LSR_THRE)) {
  }
  mmio_write8(UART_REG(UART_THR), (uint8_t)c);
}

void con_write(const char *s, size_t n) {
  for (size_t k = 0; k < n; k++) con_putc(s[k]);
}

void con_puts(const char *s) {
  while (*s) con_putc(*s++);
}

int con_getc_nb(void) {
  if (mmio_read8(UART_REG(UART_LSR)) & UART_LSR_DR) return mmio_read8(UART_REG(UART_RBR));
  return -1;
}

/* Right after activity, busy-poll before sleeping: on QEMU only the timer ends WFI (the UART's
 * interrupt is not routed), so the rest of a line is read at full speed. Once idle, poll only
 * briefly between 10 ms sleeps, so an idle guest costs the host almost nothing. */
#define CON_SPIN_ACTIVE 20000
#define CON_SPIN_IDLE 64
#define CON_SLEEP_TICKS (CLINT_HZ / 100) /* 10 ms */

int con_getc(void) {
  static int idle;
  for (;;) {
    for (int k = 0, n = idle ? CON_SPIN_IDLE : CON_SPIN_ACTIVE; k < n; k++) {
      int c = con_getc_nb();
      if (c >= 0) {
        idle = 0;
        return c;
      }
    }
    idle = 1;
    rt_wait_event(rt_mtime() + CON_SLEEP_TICKS);
  }
}

/* ---- printf-lite ------------------------------------------------------------------ */

struct sink {
  char *buf; /* NULL: write to the console */
  size_t size, len;
};

static void emit(struct sink *s, char c) {
  if (s->buf == NULL) con_putc(c);
  else if (s->len + 1 < s->size) s->buf[s->len] = c;
  s->len++;
}

static void emit_padded(struct sink *s, const char *p, size_t n, unsigned width, int left, char pad) {
  size_t fill = width > n ? width - n : 0;
  if (!left) {
    /* zero padding goes after a sign */
    if (pad == '0' && n > 0 && *p == '-') {
      emit(s, *p++);
      n--;
    }
    while (fill--) emit(s, pad);
  }
  for (size_t k = 0; k < n; k++) emit(s, p[k]);
  if (left)
    while (fill--) emit(s, ' ');
}

static int format(struct sink *s, const char *fmt, va_list ap) {
  static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
  for (; *fmt; fmt++) {
    if (*fmt != '%') {
      emit(s, *fmt);
      continue;
    }
    fmt++;
    int left = 0;
    char pad = ' ';
    for (;; fmt++) {
      if (*fmt == '-') left = 1;
      else if (*fmt == '0') pad = '0';
      else break;
    }
    unsigned width = 0;
    int precision = -1;
    if (*fmt == '*') {
      width = (unsigned)va_arg(ap, int);
      fmt++;
    }
    while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (unsigned)(*fmt++ - '0');
    if (*fmt == '.') {
      precision = 0;
      fmt++;
      if (*fmt == '*') {
        precision = va_arg(ap, int);
        fmt++;
      }
      while (*fmt >= '0' && *fmt <= '9') precision = precision * 10 + (*fmt++ - '0');
    }
    int longs = 0;
    while (*fmt == 'l' || *fmt == 'z') /* size_t is 32-bit here */
      if (*fmt++ == 'l') longs++;
    char tmp[24];
    char *end = tmp + sizeof tmp, *p = end;
    uint64_t u;
    int neg = 0;
    switch (*fmt) {
      case 'd':
      case 'i': {
        int64_t v = longs >= 2 ? va_arg(ap, long long) : longs == 1 ? va_arg(ap, long) : va_arg(ap, int);
        neg = v < 0;
        u = neg ? -(uint64_t)v : (uint64_t)v;
        goto decimal;
      }
      case 'u':
        u = longs >= 2 ? va_arg(ap, unsigned long long) : longs == 1 ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
      decimal:
        /* 32-bit values avoid the 64-bit division helper */
        if (u <= 0xffffffffu) {
          uint32_t w = (uint32_t)u;
          do *--p = (char)('0' + w % 10);
          while ((w /= 10) != 0);
        } else {
          do *--p = (char)('0' + u % 10);
          while ((u /= 10) != 0);
        }
        if (neg) *--p = '-';
        emit_padded(s, p, (size_t)(end - p), width, left, pad);
        break;
      case 'x':
      case 'X':
      case 'p': {
        const char *digits = *fmt == 'X' ? upper : lower;
        if (*fmt == 'p') {
          u = (uintptr_t)va_arg(ap, void *);
          pad = '0';
          if (width == 0) width = 8;
          emit(s, '0');
          emit(s, 'x');
        } else {
          u = longs >= 2 ? va_arg(ap, unsigned long long)
              : longs == 1 ? va_arg(ap, unsigned long)
                           : va_arg(ap, unsigned);
        }
        do *--p = digits[u & 15];
        while ((u >>= 4) != 0);
        emit_padded(s, p, (size_t)(end - p), width, left, pad);
        break;
      }
      case 'c':
        tmp[0] = (char)va_arg(ap, int);
        emit_padded(s, tmp, 1, width, left, ' ');
        break;
      case 's': {
        const char *str = va_arg(ap, const char *);
        if (str == NULL) str = "(null)";
        size_t n = precision >= 0 ? strnlen(str, (size_t)precision) : strlen(str);
        emit_padded(s, str, n, width, left, ' ');
        break;
      }
      case '%':
        emit(s, '%');
        break;
      case 0:
        return (int)s->len;
      default: /* unknown conversion: print it as is */
        emit(s, '%');
        emit(s, *fmt);
    }
  }
  return (int)s->len;
}

int kvprintf(const char *fmt, va_list ap) {
  struct sink s = {NULL, 0, 0};
  return format(&s, fmt, ap);
}

int kprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = kvprintf(fmt, ap);
  va_end(ap);
  return n;
}

int ksnprintf(char *buf, size_t size, const char *fmt, ...) {
  struct sink s = {buf, size, 0};
  va_list ap;
  va_start(ap, fmt);
  format(&s, fmt, ap);
  va_end(ap);
  if (size > 0) buf[s.len < size ? s.len : size - 1] = 0;
  return (int)s.len;
}
