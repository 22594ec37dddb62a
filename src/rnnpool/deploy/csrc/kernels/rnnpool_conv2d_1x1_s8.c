/* 1x1 int8 convolution (stride 1, no padding): a matrix-vector product per pixel. */
#include "../rnnpool_conv.h"

rnnpool_status rnnpool_conv2d_1x1_s8(const rnnpool_context *ctx, const rnnpool_conv_params *params,
                                     const rnnpool_per_channel_quant *quant,
                                     const rnnpool_dims *input_dims, const int8_t *input,
                                     const rnnpool_dims *filter_dims, const int8_t *filter,
                                     const int32_t *bias, const rnnpool_dims *output_dims,
                                     int8_t *output)
{
    const int32_t in_c = input_dims->c, out_c = output_dims->c;
    const int32_t n = input_dims->h * input_dims->w;
    int32_t p, o, i;
    (void)ctx;
    if (filter_dims->h != 1 || filter_dims->w != 1 || filter_dims->c != in_c ||
        params->stride_h != 1 || params->stride_w != 1 || params->pad_top || params->pad_bottom ||
        params->pad_left || params->pad_right || output_dims->h != input_dims->h ||
        output_dims->w != input_dims->w) {
        return RNNPOOL_ARG_ERROR;
    }
    for (p = 0; p < n; p++) {
        const int8_t *px = input + p * in_c;
        for (o = 0; o < out_c; o++) {
            const int8_t *w = filter + o * in_c;
            int32_t acc = bias ? bias[o] : 0;
            int32_t wsum = 0;
            for (i = 0; i < in_c; i++) {
                acc += (int32_t)w[i] * px[i];
                wsum += w[i];
            }
            acc += wsum * params->input_offset;
            acc = rnnpool_requantize(acc, quant->multiplier[o], quant->shift[o]);
            acc += params->output_offset;
            *output++ = (int8_t)rnnpool_clamp(acc, params->activation.min, params->activation.max);
        }
    }
    return RNNPOOL_OK;
}
