/* Golden test of rnnpool_add_s8. */
#include "rnnpool_conv.h"
#include "check.h"
#include GOLDEN

int main(void)
{
    static int8_t out[H * W * C];
    const rnnpool_dims dims = {H, W, C};
    const rnnpool_add_params p = {INPUT1_OFFSET, INPUT1_MULTIPLIER, INPUT1_SHIFT, INPUT2_OFFSET,
                                  INPUT2_MULTIPLIER, INPUT2_SHIFT, LEFT_SHIFT, OUTPUT_MULTIPLIER,
                                  OUTPUT_SHIFT, OUTPUT_OFFSET, {ACT_MIN, ACT_MAX}};
    if (rnnpool_add_s8(NULL, &p, &dims, g_in1, g_in2, out) != RNNPOOL_OK) {
        return 2;
    }
    return check_s8("add", out, g_expected, (long)H * W * C);
}
