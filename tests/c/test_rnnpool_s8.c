/* Golden test of rnnpool_rnnpool_s8 (whole map) and rnnpool_rnnpool_patch_s8 (every patch). */
#include "rnnpool_rnn.h"
#include "check.h"
#include <string.h>
#include GOLDEN

static uint32_t scratch[1 << 15];

int main(void)
{
    static int8_t out[OUT_H * OUT_W * OUT_C];
    const rnnpool_dims in_dims = {IN_H, IN_W, IN_C}, out_dims = {OUT_H, OUT_W, OUT_C};
    const rnnpool_rnnpool_params p = {K_H, K_W, STRIDE_H, STRIDE_W, PAD_T, PAD_B, PAD_L, PAD_R,
                                      PAD_MODE, IN_OFF, OUT_OFF, {OUT_MULT, OUT_SHIFT}};
    const rnnpool_fastgrnn_params rnn1 = {RNN1_IN, RNN1_HID, g_rnn1_wih8, {g_rnn1_ihm, g_rnn1_ihs},
                                          NULL, g_rnn1_whh, g_rnn1_bz, g_rnn1_bh, RNN1_FRAC,
                                          RNN1_ZETA, RNN1_NU};
    const rnnpool_fastgrnn_params rnn2 = {RNN2_IN, RNN2_HID, NULL, {NULL, NULL}, g_rnn2_wih16,
                                          g_rnn2_whh, g_rnn2_bz, g_rnn2_bh, RNN2_FRAC, RNN2_ZETA,
                                          RNN2_NU};
    rnnpool_context ctx = {scratch, 0};
    int32_t need = rnnpool_rnnpool_s8_get_buffer_size(&p, &rnn1, &rnn2, &in_dims, &out_dims);
    int fail = 0, y, x;
    if (need <= 0 || need > (int32_t)sizeof scratch) {
        printf("bad buffer size %d\n", (int)need);
        return 2;
    }
    ctx.size = need - 1;
    if (rnnpool_rnnpool_s8(&ctx, &p, &rnn1, &rnn2, &in_dims, g_input, &out_dims, out) !=
        RNNPOOL_ARG_ERROR) {
        printf("too small scratch accepted\n");
        fail = 1;
    }
    ctx.size = need;
    if (rnnpool_rnnpool_s8(&ctx, &p, &rnn1, &rnn2, &in_dims, g_input, &out_dims, out) !=
        RNNPOOL_OK) {
        return 2;
    }
    fail |= check_s8("rnnpool", out, g_expected, (long)OUT_H * OUT_W * OUT_C);

    /* Streaming: each input row passes through a one-row buffer (ASan catches any read of
     * another row); output rows go to their place as bands complete. */
    {
        static int8_t row[IN_W * IN_C];
        static int8_t out2[OUT_H * OUT_W * OUT_C];
        const int32_t hr = STRIDE_H * (OUT_H - 1) + K_H;
        int32_t yy, produced = 0;
        for (yy = 0; yy < hr; yy++) {
            int32_t iy = yy - PAD_T;
            const int32_t b = rnnpool_rnnpool_s8_row_output(&p, &out_dims, yy);
            const int8_t *src = NULL;
            if (PAD_MODE == 1) {
                iy = iy < 0 ? 0 : (iy >= IN_H ? IN_H - 1 : iy);
            }
            if (iy >= 0 && iy < IN_H) {
                memcpy(row, g_input + iy * IN_W * IN_C, sizeof row);
                src = row;
            }
            if (rnnpool_rnnpool_s8_row(&ctx, &p, &rnn1, &rnn2, &in_dims, yy, src, &out_dims,
                                       b >= 0 ? out2 + b * OUT_W * OUT_C : NULL) != RNNPOOL_OK) {
                return 4;
            }
            produced += b >= 0;
        }
        fail |= produced != OUT_H;
        fail |= check_s8("rnnpool_row", out2, g_expected, (long)OUT_H * OUT_W * OUT_C);
    }

    ctx.size = rnnpool_rnnpool_patch_s8_get_buffer_size(&p, &rnn1, &rnn2);
    for (y = 0; y < OUT_H; y++) {
        for (x = 0; x < OUT_W; x++) {
            int8_t px[OUT_C];
            if (rnnpool_rnnpool_patch_s8(&ctx, &p, &rnn1, &rnn2, &in_dims, g_input, y, x, px) !=
                RNNPOOL_OK) {
                return 3;
            }
            fail |= check_s8("rnnpool_patch", px, g_expected + (y * OUT_W + x) * OUT_C, OUT_C);
        }
    }
    return fail;
}
