/* Depthwise int8 convolution (channel multiplier 1), HWC, filter [KH, KW, C]. */
#include "../rnnpool_conv.h"

rnnpool_status rnnpool_depthwise_conv2d_s8(const rnnpool_context *ctx,
                                           const rnnpool_conv_params *params,
                                           const rnnpool_per_channel_quant *quant,
                                           const rnnpool_dims *input_dims, const int8_t *input,
                                           const rnnpool_dims *filter_dims, const int8_t *filter,
                                           const int32_t *bias, const rnnpool_dims *output_dims,
                                           int8_t *output)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, c = input_dims->c;
    const int32_t kh = filter_dims->h, kw = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t sh = params->stride_h, sw = params->stride_w;
    int32_t oy, ox, ch;
    (void)ctx;
    if (filter_dims->c != c || output_dims->c != c || sh < 1 || sw < 1 ||
        out_h != (in_h + params->pad_top + params->pad_bottom - kh) / sh + 1 ||
        out_w != (in_w + params->pad_left + params->pad_right - kw) / sw + 1) {
        return RNNPOOL_ARG_ERROR;
    }
    for (oy = 0; oy < out_h; oy++) {
        const int32_t y0 = oy * sh - params->pad_top;
        const int32_t ky0 = y0 < 0 ? -y0 : 0;
        const int32_t ky1 = y0 + kh > in_h ? in_h - y0 : kh;
        for (ox = 0; ox < out_w; ox++) {
            const int32_t x0 = ox * sw - params->pad_left;
            const int32_t kx0 = x0 < 0 ? -x0 : 0;
            const int32_t kx1 = x0 + kw > in_w ? in_w - x0 : kw;
            for (ch = 0; ch < c; ch++) {
                int32_t acc = bias ? bias[ch] : 0;
                int32_t ky, kx;
                for (ky = ky0; ky < ky1; ky++) {
                    const int8_t *row = input + ((y0 + ky) * in_w + x0) * c + ch;
                    const int8_t *wr = filter + ky * kw * c + ch;
                    for (kx = kx0; kx < kx1; kx++) {
                        acc += (int32_t)wr[kx * c] * ((int32_t)row[kx * c] + params->input_offset);
                    }
                }
                acc = rnnpool_requantize(acc, quant->multiplier[ch], quant->shift[ch]);
                acc += params->output_offset;
                *output++ = (int8_t)rnnpool_clamp(acc, params->activation.min,
                                                  params->activation.max);
            }
        }
    }
    return RNNPOOL_OK;
}
