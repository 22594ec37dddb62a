/* Formatting shared by both hio back ends (no printf, so no libc stdio on the target). */
#include "hio.h"

void hio_put_kv(const char *key, long value) {
    char buf[64];
    char digits[24];
    size_t n = 0, k = 0;
    unsigned long v = value < 0 ? 0ul - (unsigned long)value : (unsigned long)value;
    while (key[k] != '\0' && n < 36) {
        buf[n++] = key[k++];
    }
    buf[n++] = '=';
    if (value < 0) {
        buf[n++] = '-';
    }
    k = 0;
    do {
        digits[k++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    while (k > 0) {
        buf[n++] = digits[--k];
    }
    buf[n++] = '\n';
    buf[n] = '\0';
    hio_puts(buf);
}

__attribute__((noinline, used)) void harness_mark(void) {
    __asm__ volatile("" ::: "memory");
}
