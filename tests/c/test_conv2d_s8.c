/* Golden test of rnnpool_conv2d_s8 / rnnpool_depthwise_conv2d_s8 / rnnpool_conv2d_1x1_s8. */
#include "rnnpool_conv.h"
#include "check.h"
#include GOLDEN

int main(void)
{
    static int8_t out[OUT_H * OUT_W * OUT_C];
    const rnnpool_dims in_dims = {IN_H, IN_W, IN_C};
    const rnnpool_dims f_dims = {K_H, K_W, F_C};
    const rnnpool_dims out_dims = {OUT_H, OUT_W, OUT_C};
    const rnnpool_conv_params p = {IN_OFF, OUT_OFF, STRIDE_H, STRIDE_W, PAD_T, PAD_B, PAD_L, PAD_R,
                                   {ACT_MIN, ACT_MAX}};
    const rnnpool_per_channel_quant q = {g_mult, g_shift};
    rnnpool_status st;
    int fail;
    if (KIND == 1) {
        st = rnnpool_depthwise_conv2d_s8(NULL, &p, &q, &in_dims, g_input, &f_dims, g_filter,
                                         g_bias, &out_dims, out);
    } else if (KIND == 2) {
        st = rnnpool_conv2d_1x1_s8(NULL, &p, &q, &in_dims, g_input, &f_dims, g_filter, g_bias,
                                   &out_dims, out);
    } else {
        st = rnnpool_conv2d_s8(NULL, &p, &q, &in_dims, g_input, &f_dims, g_filter, g_bias,
                               &out_dims, out);
    }
    if (st != RNNPOOL_OK) {
        printf("status %d\n", (int)st);
        return 2;
    }
    fail = check_s8("conv", out, g_expected, (long)OUT_H * OUT_W * OUT_C);
    if (KIND != 1) { /* the regular kernel must also handle 1x1 and the 1x1 kernel is checked */
        const rnnpool_dims bad = {OUT_H + 1, OUT_W, OUT_C};
        if (rnnpool_conv2d_s8(NULL, &p, &q, &in_dims, g_input, &f_dims, g_filter, g_bias, &bad,
                              out) != RNNPOOL_ARG_ERROR) {
            printf("wrong output dims accepted\n");
            fail = 1;
        }
    }
    if (KIND == 2) {
        st = rnnpool_conv2d_s8(NULL, &p, &q, &in_dims, g_input, &f_dims, g_filter, g_bias,
                               &out_dims, out);
        fail |= st != RNNPOOL_OK || check_s8("conv2d on 1x1", out, g_expected,
                                             (long)OUT_H * OUT_W * OUT_C);
    }
    return fail;
}
