/* 1x1 int8 convolution (stride 1, no padding): per pixel, four output channels per pass. */
#include "rnnpool_conv_internal.h"

rnnpool_status rnnpool_conv2d_1x1_s8(const rnnpool_context *ctx, const rnnpool_conv_params *params,
                                     const rnnpool_per_channel_quant *quant,
                                     const rnnpool_dims *input_dims, const int8_t *input,
                                     const rnnpool_dims *filter_dims, const int8_t *filter,
                                     const int32_t *bias, const rnnpool_dims *output_dims,
                                     int8_t *output)
{
    const int32_t in_c = input_dims->c, out_c = output_dims->c;
    const int32_t n = input_dims->h * input_dims->w;
    const int32_t off = params->input_offset;
    int32_t p, o, k;
    (void)ctx;
    if (filter_dims->h != 1 || filter_dims->w != 1 || filter_dims->c != in_c ||
        params->stride_h != 1 || params->stride_w != 1 || params->pad_top || params->pad_bottom ||
        params->pad_left || params->pad_right || output_dims->h != input_dims->h ||
        output_dims->w != input_dims->w) {
        return RNNPOOL_ARG_ERROR;
    }
    for (p = 0; p < n; p++) {
        const int8_t *px = input + p * in_c;
        for (o = 0; o + 3 < out_c; o += 4) {
            const int8_t *w = filter + o * in_c;
            int32_t acc[4];
            for (k = 0; k < 4; k++) {
                acc[k] = bias ? bias[o + k] : 0;
            }
            rnnpool_dot4_s8(px, w, w + in_c, w + 2 * in_c, w + 3 * in_c, in_c, off, acc);
            for (k = 0; k < 4; k++) {
                *output++ = rnnpool_out_s8(acc[k], quant->multiplier[o + k], quant->shift[o + k],
                                           params->output_offset, &params->activation);
            }
        }
        for (; o < out_c; o++) {
            const int32_t acc = (bias ? bias[o] : 0) + rnnpool_dot1_s8(px, filter + o * in_c, in_c, off);
            *output++ = rnnpool_out_s8(acc, quant->multiplier[o], quant->shift[o],
                                       params->output_offset, &params->activation);
        }
    }
    return RNNPOOL_OK;
}
