/* hio on the Cortex-M4: ARM semihosting calls (BKPT 0xAB), served by QEMU's
 * -semihosting-config enable=on,target=native. Paths are relative to QEMU's working folder. */
#include <string.h>

#include "hio.h"

enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITE0 = 0x04,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_FLEN = 0x0C,
    SYS_EXIT_EXTENDED = 0x20,
};

static int semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int hio_open(const char *path, int mode) {
    const void *args[3] = {path, (const void *)(long)mode, (const void *)strlen(path)};
    return semihost(SYS_OPEN, args);
}

int hio_close(int h) {
    const void *args[1] = {(const void *)(long)h};
    return semihost(SYS_CLOSE, args);
}

long hio_flen(int h) {
    const void *args[1] = {(const void *)(long)h};
    return semihost(SYS_FLEN, args);
}

/* SYS_READ / SYS_WRITE return the number of bytes NOT transferred. */
size_t hio_read(int h, void *buf, size_t n) {
    const void *args[3] = {(const void *)(long)h, buf, (const void *)n};
    return n - (size_t)semihost(SYS_READ, args);
}

size_t hio_write(int h, const void *buf, size_t n) {
    const void *args[3] = {(const void *)(long)h, buf, (const void *)n};
    return n - (size_t)semihost(SYS_WRITE, args);
}

void hio_puts(const char *s) { semihost(SYS_WRITE0, s); }

void hio_exit(int code) {
    const void *args[2] = {(const void *)0x20026 /* ADP_Stopped_ApplicationExit */,
                           (const void *)(long)code};
    semihost(SYS_EXIT_EXTENDED, args);
    for (;;) {
    }
}
