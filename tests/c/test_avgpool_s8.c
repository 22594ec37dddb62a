/* Golden test of rnnpool_avgpool_s8. */
#include "rnnpool_conv.h"
#include "check.h"
#include GOLDEN

int main(void)
{
    static int8_t out[OUT_H * OUT_W * C];
    const rnnpool_dims in_dims = {IN_H, IN_W, C}, out_dims = {OUT_H, OUT_W, C};
    const rnnpool_pool_params p = {K_H, K_W, STRIDE_H, STRIDE_W, IN_OFF, OUT_OFF,
                                   {ACT_MIN, ACT_MAX}};
    const rnnpool_per_tensor_quant q = {MULT, SHIFT};
    if (rnnpool_avgpool_s8(NULL, &p, &q, &in_dims, g_input, &out_dims, out) != RNNPOOL_OK) {
        return 2;
    }
    return check_s8("avgpool", out, g_expected, (long)OUT_H * OUT_W * C);
}
