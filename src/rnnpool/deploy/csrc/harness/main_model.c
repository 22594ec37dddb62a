/* Harness main: runs the generated model on every image of input.bin through both APIs and
 * prints the measurements (key=value lines). The same file builds for the host (hio_host.c)
 * and for the Cortex-M4 (hio_semihost.c + startup.c).
 *
 * Per image:
 *  1. whole-buffer API: the frame is read into hio_input, rnnpool_model_run writes the maps to
 *     hio_output (both in PSRAM on the Cortex-M4: .hostio), appended to output.bin; detectors
 *     then decode them (rnnpool_model_decode) into boxes.bin;
 *  2. row API: the rows come straight from input.bin by semihosting reads (read_row_from_file;
 *     no frame in memory); detectors run rnnpool_model_detect_rows (boxes decoded on the fly,
 *     no output buffer), classifiers rnnpool_model_run_rows into a RAM buffer; the results are
 *     appended to rows.bin.
 * harness_mark() is called around each of the three steps. Everything the row API needs (the
 * arena, the box list or the classifier's outputs, the stack) is in the RAM region. */
#include "hio.h"
#include "model.h"

static int8_t hio_input[RNNPOOL_MODEL_INPUT_BYTES] HIO_BUFFER;
static int8_t hio_output[RNNPOOL_MODEL_OUTPUT_BYTES] HIO_BUFFER;
#ifdef RNNPOOL_MODEL_HAS_DECODE
#ifndef HARNESS_DECODE_MIN_LOGIT_Q8
#define HARNESS_DECODE_MIN_LOGIT_Q8 0 /* face probability >= 0.5 */
#endif
/* boxes.bin / rows.bin: per image, int32 count then RNNPOOL_MODEL_MAX_BOXES boxes (6 x int32). */
static rnnpool_model_box boxes[RNNPOOL_MODEL_MAX_BOXES];
#else
static int8_t row_output[RNNPOOL_MODEL_OUTPUT_BYTES];
#endif

/* Rows of input.bin in file order: image after image, row after row. */
typedef struct {
    int handle;
    int32_t next; /* next row of the current image in the file */
} row_file;

/* Read rows until the next one is y; the last row read is left in row. */
static int skip_rows(row_file *f, int32_t y, int8_t *row) {
    while (f->next < y) {
        if (hio_read(f->handle, row, RNNPOOL_MODEL_INPUT_ROW_BYTES) !=
            RNNPOOL_MODEL_INPUT_ROW_BYTES) {
            return -1;
        }
        f->next++;
    }
    return 0;
}

static int read_row_from_file(void *ctx, int32_t y, int8_t *row) {
    row_file *f = (row_file *)ctx;
    if (y < f->next || y >= RNNPOOL_MODEL_INPUT_H) {
        return -1;
    }
    return skip_rows(f, y + 1, row); /* rows the model does not need are read past */
}

static int write_all(int handle, const void *buf, size_t n) {
    return hio_write(handle, buf, n) == n ? 0 : -1;
}

int main(void) {
    int fin = hio_open("input.bin", HIO_READ);
    int fout = hio_open("output.bin", HIO_WRITE);
    int frows = hio_open("rows.bin", HIO_WRITE);
    row_file src;
    src.handle = hio_open("input.bin", HIO_READ);
    if (fin < 0 || src.handle < 0 || fout < 0 || frows < 0) {
        hio_puts("harness: cannot open input.bin / output.bin / rows.bin\n");
        return 2;
    }
#ifdef RNNPOOL_MODEL_HAS_DECODE
    int fbox = hio_open("boxes.bin", HIO_WRITE);
    if (fbox < 0) {
        hio_puts("harness: cannot open boxes.bin\n");
        return 2;
    }
#endif
    long n = hio_flen(fin) / (long)RNNPOOL_MODEL_INPUT_BYTES;
    for (long i = 0; i < n; i++) {
        /* 1. whole-buffer API */
        if (hio_read(fin, hio_input, RNNPOOL_MODEL_INPUT_BYTES) != RNNPOOL_MODEL_INPUT_BYTES) {
            hio_puts("harness: short read from input.bin\n");
            return 3;
        }
        harness_mark();
        int status = rnnpool_model_run(hio_input, hio_output);
        harness_mark();
        if (status != 0) {
            hio_put_kv("harness: model status", status);
            return 4;
        }
        if (write_all(fout, hio_output, RNNPOOL_MODEL_OUTPUT_BYTES) != 0) {
            hio_puts("harness: short write to output.bin\n");
            return 3;
        }
#ifdef RNNPOOL_MODEL_HAS_DECODE
        {
            int32_t count;
            harness_mark();
            count = rnnpool_model_decode(hio_output, HARNESS_DECODE_MIN_LOGIT_Q8, boxes,
                                         RNNPOOL_MODEL_MAX_BOXES);
            harness_mark();
            if (count < 0 || write_all(fbox, &count, sizeof count) != 0 ||
                write_all(fbox, boxes, sizeof boxes) != 0) {
                hio_puts("harness: decode failed or short write to boxes.bin\n");
                return 4;
            }
        }
#endif
        /* 2. row API: rows straight from the file */
        src.next = 0;
        harness_mark();
#ifdef RNNPOOL_MODEL_HAS_DECODE
        {
            const int32_t count = rnnpool_model_detect_rows(
                read_row_from_file, &src, HARNESS_DECODE_MIN_LOGIT_Q8, boxes,
                RNNPOOL_MODEL_MAX_BOXES);
            harness_mark();
            if (count < 0) {
                hio_put_kv("harness: model status (rows)", count);
                return 4;
            }
            if (write_all(frows, &count, sizeof count) != 0 ||
                write_all(frows, boxes, sizeof boxes) != 0) {
                hio_puts("harness: short write to rows.bin\n");
                return 3;
            }
        }
#else
        status = rnnpool_model_run_rows(read_row_from_file, &src, row_output);
        harness_mark();
        if (status != 0) {
            hio_put_kv("harness: model status (rows)", status);
            return 4;
        }
        if (write_all(frows, row_output, RNNPOOL_MODEL_OUTPUT_BYTES) != 0) {
            hio_puts("harness: short write to rows.bin\n");
            return 3;
        }
#endif
        if (skip_rows(&src, RNNPOOL_MODEL_INPUT_H, hio_input) != 0) { /* to the next image */
            hio_puts("harness: short read from input.bin (rows)\n");
            return 3;
        }
    }
#ifdef RNNPOOL_MODEL_HAS_DECODE
    hio_close(fbox);
#endif
    hio_close(fin);
    hio_close(src.handle);
    hio_close(fout);
    hio_close(frows);
    hio_put_kv("images", n);
    hio_put_kv("stack_used", harness_stack_used());
    return 0;
}
