/* hio on the host: plain stdio. */
#include <stdio.h>
#include <stdlib.h>

#include "hio.h"

#define HIO_MAX_FILES 8
static FILE *hio_files[HIO_MAX_FILES];

int hio_open(const char *path, int mode) {
    for (int h = 0; h < HIO_MAX_FILES; h++) {
        if (hio_files[h] == NULL) {
            hio_files[h] = fopen(path, mode == HIO_WRITE ? "wb" : "rb");
            return hio_files[h] ? h : -1;
        }
    }
    return -1;
}

int hio_close(int h) {
    int rc = fclose(hio_files[h]);
    hio_files[h] = NULL;
    return rc;
}

long hio_flen(int h) {
    long pos = ftell(hio_files[h]);
    fseek(hio_files[h], 0, SEEK_END);
    long n = ftell(hio_files[h]);
    fseek(hio_files[h], pos, SEEK_SET);
    return n;
}

size_t hio_read(int h, void *buf, size_t n) { return fread(buf, 1, n, hio_files[h]); }

size_t hio_write(int h, const void *buf, size_t n) { return fwrite(buf, 1, n, hio_files[h]); }

void hio_puts(const char *s) { fputs(s, stdout); }

long harness_stack_used(void) { return -1; }

void hio_exit(int code) {
    fflush(stdout);
    exit(code);
}
