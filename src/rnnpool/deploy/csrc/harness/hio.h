/* Host I/O for the test harness: semihosting on the Cortex-M4 (hio_semihost.c), stdio on the
 * host (hio_host.c). Only the harness uses it; generated model code never does I/O. */
#ifndef RNNPOOL_HIO_H
#define RNNPOOL_HIO_H

#include <stddef.h>
#include <stdint.h>

#if defined(__arm__) && !defined(RNNPOOL_HOST)
/* Buffers the harness owns (model input/output images) live outside the RAM budget, like a
 * camera frame buffer in external memory: see the .hostio section of the linker script. */
#define HIO_BUFFER __attribute__((section(".hostio"), aligned(4)))
#else
#define HIO_BUFFER __attribute__((aligned(4)))
#endif

enum { HIO_READ = 1, HIO_WRITE = 5 }; /* semihosting modes "rb" and "wb" */

/* Returns a handle >= 0, or -1. */
int hio_open(const char *path, int mode);
int hio_close(int handle);
/* Number of bytes in the file, or -1. */
long hio_flen(int handle);
/* Return the number of bytes transferred. */
size_t hio_read(int handle, void *buf, size_t n);
size_t hio_write(int handle, const void *buf, size_t n);
void hio_puts(const char *s);
/* Prints "<key>=<value>\n". */
void hio_put_kv(const char *key, long value);
/* Called around each inference; the instruction-counting plugin records the count on entry. */
void harness_mark(void);
/* Bytes of stack touched so far (painted-stack scan), or -1 where not measured (host). */
long harness_stack_used(void);
void hio_exit(int code) __attribute__((noreturn));

#endif
