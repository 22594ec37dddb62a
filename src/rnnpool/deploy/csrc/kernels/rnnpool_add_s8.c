/* Element-wise int8 add (TFLite semantics). See rnnpool.quant.ir.AddS8. */
#include "../rnnpool_conv.h"

rnnpool_status rnnpool_add_s8(const rnnpool_context *ctx, const rnnpool_add_params *params,
                              const rnnpool_dims *dims, const int8_t *input1,
                              const int8_t *input2, int8_t *output)
{
    const int32_t n = dims->h * dims->w * dims->c;
    const int32_t ls = params->left_shift;
    int32_t i;
    (void)ctx;
    if (ls < 0 || ls > 22) {
        return RNNPOOL_ARG_ERROR;
    }
    for (i = 0; i < n; i++) {
        int32_t a = ((int32_t)input1[i] + params->input1_offset) * (1 << ls);
        int32_t b = ((int32_t)input2[i] + params->input2_offset) * (1 << ls);
        int32_t s;
        a = rnnpool_requantize(a, params->input1_multiplier, params->input1_shift);
        b = rnnpool_requantize(b, params->input2_multiplier, params->input2_shift);
        s = rnnpool_requantize(a + b, params->output_multiplier, params->output_shift);
        s += params->output_offset;
        output[i] = (int8_t)rnnpool_clamp(s, params->activation.min, params->activation.max);
    }
    return RNNPOOL_OK;
}
