/* Regular int8 convolution, HWC: per output pixel, four output channels per pass over the
 * in-bounds taps (padded taps contribute nothing). */
#include "rnnpool_conv_internal.h"

rnnpool_status rnnpool_conv2d_s8(const rnnpool_context *ctx, const rnnpool_conv_params *params,
                                 const rnnpool_per_channel_quant *quant,
                                 const rnnpool_dims *input_dims, const int8_t *input,
                                 const rnnpool_dims *filter_dims, const int8_t *filter,
                                 const int32_t *bias, const rnnpool_dims *output_dims,
                                 int8_t *output)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t kh = filter_dims->h, kw = filter_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, out_c = output_dims->c;
    const int32_t sh = params->stride_h, sw = params->stride_w;
    const int32_t off = params->input_offset;
    const int32_t wsize = kh * kw * in_c;
    int32_t oy, ox, o, k;
    (void)ctx;
    if (filter_dims->c != in_c ||
        !rnnpool_conv_output_ok(params, in_h, in_w, kh, kw, out_h, out_w)) {
        return RNNPOOL_ARG_ERROR;
    }
    for (oy = 0; oy < out_h; oy++) {
        const int32_t y0 = oy * sh - params->pad_top;
        int32_t ky0, ky1;
        rnnpool_taps_in_bounds(y0, kh, in_h, &ky0, &ky1);
        for (ox = 0; ox < out_w; ox++) {
            const int32_t x0 = ox * sw - params->pad_left;
            int32_t kx0, kx1;
            rnnpool_taps_in_bounds(x0, kw, in_w, &kx0, &kx1);
            /* the in-bounds taps of a row are contiguous in both input and filter */
            const int32_t run = (kx1 - kx0) * in_c;
            int32_t ky;
            for (o = 0; o < out_c; o += 4) {
                const int32_t nb = out_c - o < 4 ? out_c - o : 4;
                int32_t acc[4] = {0, 0, 0, 0};
                const int8_t *w[4];
                for (k = 0; k < 4; k++) {
                    w[k] = filter + (o + (k < nb ? k : 0)) * wsize;
                }
                for (ky = ky0; ky < ky1 && run > 0; ky++) {
                    const int8_t *px = input + ((y0 + ky) * in_w + (x0 + kx0)) * in_c;
                    const int32_t wo = (ky * kw + kx0) * in_c;
                    if (nb == 4) {
                        rnnpool_dot4_s8(px, w[0] + wo, w[1] + wo, w[2] + wo, w[3] + wo, run, off, acc);
                    } else {
                        for (k = 0; k < nb; k++) {
                            acc[k] += rnnpool_dot1_s8(px, w[k] + wo, run, off);
                        }
                    }
                }
                for (k = 0; k < nb; k++) {
                    *output++ = rnnpool_out_s8(acc[k] + (bias ? bias[o + k] : 0),
                                               quant->multiplier[o + k], quant->shift[o + k],
                                               params->output_offset, &params->activation);
                }
            }
        }
    }
    return RNNPOOL_OK;
}
