/* Golden test of rnnpool_mbconv_s8 (row-streamed inverted residual). */
#include "rnnpool_conv.h"
#include "check.h"
#include GOLDEN

static uint32_t scratch[1 << 15];

#define STAGE(P)                                                                            \
    {{P##_IN_OFF, P##_OUT_OFF, P##_STRIDE, P##_STRIDE, P##_PAD_T, P##_PAD_B, P##_PAD_L,       \
      P##_PAD_R, {P##_ACT_MIN, P##_ACT_MAX}},                                                 \
     {g_##P##_m, g_##P##_s}, g_##P##_w, g_##P##_b}

#define ex_IN_OFF EX_IN_OFF
#define ex_OUT_OFF EX_OUT_OFF
#define ex_STRIDE EX_STRIDE
#define ex_PAD_T EX_PAD_T
#define ex_PAD_B EX_PAD_B
#define ex_PAD_L EX_PAD_L
#define ex_PAD_R EX_PAD_R
#define ex_ACT_MIN EX_ACT_MIN
#define ex_ACT_MAX EX_ACT_MAX
#define dw_IN_OFF DW_IN_OFF
#define dw_OUT_OFF DW_OUT_OFF
#define dw_STRIDE DW_STRIDE
#define dw_PAD_T DW_PAD_T
#define dw_PAD_B DW_PAD_B
#define dw_PAD_L DW_PAD_L
#define dw_PAD_R DW_PAD_R
#define dw_ACT_MIN DW_ACT_MIN
#define dw_ACT_MAX DW_ACT_MAX
#define pr_IN_OFF PR_IN_OFF
#define pr_OUT_OFF PR_OUT_OFF
#define pr_STRIDE PR_STRIDE
#define pr_PAD_T PR_PAD_T
#define pr_PAD_B PR_PAD_B
#define pr_PAD_L PR_PAD_L
#define pr_PAD_R PR_PAD_R
#define pr_ACT_MIN PR_ACT_MIN
#define pr_ACT_MAX PR_ACT_MAX

int main(void)
{
    static int8_t out[OUT_H * OUT_W * OUT_C];
    const rnnpool_dims in_dims = {IN_H, IN_W, IN_C}, out_dims = {OUT_H, OUT_W, OUT_C};
#if EX_PRESENT
    const rnnpool_mbconv_stage ex = STAGE(ex);
    const rnnpool_mbconv_stage *exp_stage = &ex;
#else
    const rnnpool_mbconv_stage *exp_stage = NULL;
#endif
    const rnnpool_mbconv_stage dw = STAGE(dw);
    const rnnpool_mbconv_stage pr = STAGE(pr);
#if ADD_PRESENT
    const rnnpool_add_params add = {ADD_INPUT1_OFFSET, ADD_INPUT1_MULTIPLIER, ADD_INPUT1_SHIFT,
                                    ADD_INPUT2_OFFSET, ADD_INPUT2_MULTIPLIER, ADD_INPUT2_SHIFT,
                                    ADD_LEFT_SHIFT, ADD_OUTPUT_MULTIPLIER, ADD_OUTPUT_SHIFT,
                                    ADD_OUTPUT_OFFSET, {ADD_ACT_MIN, ADD_ACT_MAX}};
    const rnnpool_add_params *addp = &add;
#else
    const rnnpool_add_params *addp = NULL;
#endif
    const rnnpool_mbconv_params p = {exp_stage, &dw, &pr, addp, HIDDEN, K_H, K_W};
    rnnpool_context ctx = {scratch, 0};
    const int32_t need = rnnpool_mbconv_s8_get_buffer_size(&p, &in_dims, &out_dims);
    int fail = 0;
    if (need != SCRATCH || need > (int32_t)sizeof scratch) {
        printf("buffer size %d, Python twin says %d\n", (int)need, (int)SCRATCH);
        return 2;
    }
    ctx.size = need - 1;
    if (rnnpool_mbconv_s8(&ctx, &p, &in_dims, g_input, &out_dims, out) != RNNPOOL_ARG_ERROR) {
        printf("too small scratch accepted\n");
        fail = 1;
    }
    ctx.size = need;
    if (rnnpool_mbconv_s8(&ctx, &p, &in_dims, g_input, &out_dims, out) != RNNPOOL_OK) {
        return 2;
    }
    return fail | check_s8("mbconv", out, g_expected, (long)OUT_H * OUT_W * OUT_C);
}
