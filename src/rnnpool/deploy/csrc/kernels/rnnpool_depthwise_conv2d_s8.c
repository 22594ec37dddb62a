/* Depthwise int8 convolution (channel multiplier 1), HWC, filter [KH, KW, C]: per output pixel,
 * four channels per pass over the in-bounds taps. */
#include "rnnpool_conv_internal.h"

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
    const int32_t off = params->input_offset;
    int32_t oy, ox, ch, ky, kx;
    (void)ctx;
    if (filter_dims->c != c || output_dims->c != c ||
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
            for (ch = 0; ch + 3 < c; ch += 4) {
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                for (ky = ky0; ky < ky1; ky++) {
                    const int8_t *row = input + ((y0 + ky) * in_w + x0) * c + ch;
                    const int8_t *wr = filter + ky * kw * c + ch;
                    for (kx = kx0; kx < kx1; kx++) {
                        const int8_t *xp = row + kx * c, *wp = wr + kx * c;
#if defined(__ARM_FEATURE_DSP)
                        const int32_t off2 = (int32_t)(((uint32_t)off & 0xffffu) * 0x10001u);
                        const int32_t xv = rnnpool_ld4(xp), wv = rnnpool_ld4(wp);
                        const int32_t xa = __sadd16(__sxtb16(xv), off2);
                        const int32_t xb = __sadd16(__sxtb16(rnnpool_ror8(xv)), off2);
                        const int32_t wa = __sxtb16(wv), wb = __sxtb16(rnnpool_ror8(wv));
                        a0 = __smlabb(xa, wa, a0);
                        a2 = __smlatt(xa, wa, a2);
                        a1 = __smlabb(xb, wb, a1);
                        a3 = __smlatt(xb, wb, a3);
#else
                        a0 += wp[0] * ((int32_t)xp[0] + off);
                        a1 += wp[1] * ((int32_t)xp[1] + off);
                        a2 += wp[2] * ((int32_t)xp[2] + off);
                        a3 += wp[3] * ((int32_t)xp[3] + off);
#endif
                    }
                }
                if (bias) {
                    a0 += bias[ch];
                    a1 += bias[ch + 1];
                    a2 += bias[ch + 2];
                    a3 += bias[ch + 3];
                }
                *output++ = rnnpool_out_s8(a0, quant->multiplier[ch], quant->shift[ch],
                                           params->output_offset, &params->activation);
                *output++ = rnnpool_out_s8(a1, quant->multiplier[ch + 1], quant->shift[ch + 1],
                                           params->output_offset, &params->activation);
                *output++ = rnnpool_out_s8(a2, quant->multiplier[ch + 2], quant->shift[ch + 2],
                                           params->output_offset, &params->activation);
                *output++ = rnnpool_out_s8(a3, quant->multiplier[ch + 3], quant->shift[ch + 3],
                                           params->output_offset, &params->activation);
            }
            for (; ch < c; ch++) {
                int32_t acc = bias ? bias[ch] : 0;
                for (ky = ky0; ky < ky1; ky++) {
                    const int8_t *row = input + ((y0 + ky) * in_w + x0) * c + ch;
                    const int8_t *wr = filter + ky * kw * c + ch;
                    for (kx = kx0; kx < kx1; kx++) {
                        acc += wr[kx * c] * ((int32_t)row[kx * c] + off);
                    }
                }
                *output++ = rnnpool_out_s8(acc, quant->multiplier[ch], quant->shift[ch],
                                           params->output_offset, &params->activation);
            }
        }
    }
    return RNNPOOL_OK;
}
