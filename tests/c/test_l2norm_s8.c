/* Golden test of rnnpool_l2norm_s8. */
#include "rnnpool_conv.h"
#include "check.h"
#include GOLDEN

int main(void)
{
    static int8_t out[H * W * C];
    const rnnpool_dims dims = {H, W, C};
    const rnnpool_l2norm_params p = {IN_OFF, OUT_OFF, {ACT_MIN, ACT_MAX}};
    const rnnpool_per_channel_quant q = {g_mult, g_shift};
    if (rnnpool_l2norm_s8(NULL, &p, &q, &dims, g_input, out) != RNNPOOL_OK) {
        return 2;
    }
    return check_s8("l2norm", out, g_expected, (long)H * W * C);
}
