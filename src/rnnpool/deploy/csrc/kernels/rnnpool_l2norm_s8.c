/* S3FD L2Norm over channels per pixel. Integer steps: rnnpool.quant.ir.L2NormS8. */
#include "../rnnpool_conv.h"

/* floor(sqrt(v)), bit by bit (no division, no float). */
static uint32_t rnnpool_isqrt64(uint64_t v)
{
    uint64_t res = 0;
    uint64_t bit = (uint64_t)1 << 62;
    while (bit > v) {
        bit >>= 2;
    }
    while (bit != 0) {
        if (v >= res + bit) {
            v -= res + bit;
            res = (res >> 1) + bit;
        } else {
            res >>= 1;
        }
        bit >>= 2;
    }
    return (uint32_t)res;
}

rnnpool_status rnnpool_l2norm_s8(const rnnpool_context *ctx, const rnnpool_l2norm_params *params,
                                 const rnnpool_per_channel_quant *quant, const rnnpool_dims *dims,
                                 const int8_t *input, int8_t *output)
{
    const int32_t n = dims->h * dims->w, c = dims->c;
    int32_t p, ch;
    (void)ctx;
    if (c < 1 || c > 33025) {
        return RNNPOOL_ARG_ERROR;
    }
    for (p = 0; p < n; p++) {
        const int8_t *px = input + p * c;
        int8_t *out = output + p * c;
        uint32_t ss = 0;
        int64_t inv = 0;
        for (ch = 0; ch < c; ch++) {
            const int32_t v = (int32_t)px[ch] + params->input_offset;
            ss += (uint32_t)(v * v);
        }
        if (ss != 0) {
            inv = ((int64_t)1 << 38) / (int64_t)rnnpool_isqrt64((uint64_t)ss << 16);
        }
        for (ch = 0; ch < c; ch++) {
            const int64_t v = (int64_t)((int32_t)px[ch] + params->input_offset) * inv;
            int32_t q = (int32_t)((v + (1 << 15)) >> 16); /* Q14 of x / ||x|| */
            q = rnnpool_requantize(q, quant->multiplier[ch], quant->shift[ch]);
            q += params->output_offset;
            out[ch] = (int8_t)rnnpool_clamp(q, params->activation.min, params->activation.max);
        }
    }
    return RNNPOOL_OK;
}
