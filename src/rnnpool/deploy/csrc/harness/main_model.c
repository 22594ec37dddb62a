/* Harness main: runs the generated model on every image of input.bin, appends the outputs to
 * output.bin, and prints the measurements (key=value lines). The same file builds for the
 * host (hio_host.c) and for the Cortex-M4 (hio_semihost.c + startup.c). */
#include "hio.h"
#include "model.h"

static int8_t hio_input[RNNPOOL_MODEL_INPUT_BYTES] HIO_BUFFER;
static int8_t hio_output[RNNPOOL_MODEL_OUTPUT_BYTES] HIO_BUFFER;
#ifdef RNNPOOL_MODEL_HAS_DECODE
#ifndef HARNESS_DECODE_MAX_BOXES
#define HARNESS_DECODE_MAX_BOXES 750
#endif
#ifndef HARNESS_DECODE_MIN_LOGIT_Q8
#define HARNESS_DECODE_MIN_LOGIT_Q8 0 /* face probability >= 0.5 */
#endif
/* boxes.bin: per image, int32 count then HARNESS_DECODE_MAX_BOXES boxes (6 x int32 each). */
static rnnpool_model_box hio_boxes[HARNESS_DECODE_MAX_BOXES] HIO_BUFFER;
#endif

int main(void) {
    int fin = hio_open("input.bin", HIO_READ);
    if (fin < 0) {
        hio_puts("harness: cannot open input.bin\n");
        return 2;
    }
    int fout = hio_open("output.bin", HIO_WRITE);
    if (fout < 0) {
        hio_puts("harness: cannot open output.bin\n");
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
        if (hio_write(fout, hio_output, RNNPOOL_MODEL_OUTPUT_BYTES) != RNNPOOL_MODEL_OUTPUT_BYTES) {
            hio_puts("harness: short write to output.bin\n");
            return 3;
        }
#ifdef RNNPOOL_MODEL_HAS_DECODE
        {
            int32_t count;
            harness_mark();
            count = rnnpool_model_decode(hio_output, HARNESS_DECODE_MIN_LOGIT_Q8, hio_boxes,
                                         HARNESS_DECODE_MAX_BOXES);
            harness_mark();
            hio_write(fbox, &count, sizeof count);
            hio_write(fbox, hio_boxes, sizeof hio_boxes);
        }
#endif
    }
#ifdef RNNPOOL_MODEL_HAS_DECODE
    hio_close(fbox);
#endif
    hio_close(fin);
    hio_close(fout);
    hio_put_kv("images", n);
    hio_put_kv("stack_used", harness_stack_used());
    return 0;
}
