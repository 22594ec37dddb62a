/* Average pooling without padding, HWC. */
#include "../rnnpool_conv.h"

rnnpool_status rnnpool_avgpool_s8(const rnnpool_context *ctx, const rnnpool_pool_params *params,
                                  const rnnpool_per_tensor_quant *quant,
                                  const rnnpool_dims *input_dims, const int8_t *input,
                                  const rnnpool_dims *output_dims, int8_t *output)
{
    const int32_t in_w = input_dims->w, c = input_dims->c;
    const int32_t kh = params->kernel_h, kw = params->kernel_w;
    int32_t oy, ox, ch, ky, kx;
    (void)ctx;
    if (output_dims->c != c || params->stride_h < 1 || params->stride_w < 1 ||
        output_dims->h != (input_dims->h - kh) / params->stride_h + 1 ||
        output_dims->w != (in_w - kw) / params->stride_w + 1) {
        return RNNPOOL_ARG_ERROR;
    }
    for (oy = 0; oy < output_dims->h; oy++) {
        for (ox = 0; ox < output_dims->w; ox++) {
            const int8_t *base = input + (oy * params->stride_h * in_w + ox * params->stride_w) * c;
            for (ch = 0; ch < c; ch++) {
                int32_t acc = 0;
                for (ky = 0; ky < kh; ky++) {
                    for (kx = 0; kx < kw; kx++) {
                        acc += base[(ky * in_w + kx) * c + ch];
                    }
                }
                acc += kh * kw * params->input_offset;
                acc = rnnpool_requantize(acc, quant->multiplier, quant->shift);
                acc += params->output_offset;
                *output++ = (int8_t)rnnpool_clamp(acc, params->activation.min,
                                                  params->activation.max);
            }
        }
    }
    return RNNPOOL_OK;
}
