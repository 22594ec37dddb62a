/*
 * Row-streamed MBConv (inverted residual): for each output row, the KH expanded rows it needs
 * are computed (each once) into a ring of KH rows, the depthwise row is computed from the ring,
 * then projected (and added to the block input) straight into the output row. The expanded map
 * is never held whole. Expand, project and add reuse the 1x1 and add kernels, so the results
 * are bit-identical to the unfused ops.
 */
#include "rnnpool_conv_internal.h"

#define RNNPOOL_ALIGN4(n) (((n) + 3) & ~3)

int32_t rnnpool_mbconv_s8_get_buffer_size(const rnnpool_mbconv_params *params,
                                          const rnnpool_dims *input_dims,
                                          const rnnpool_dims *output_dims)
{
    const int32_t ring = params->expand != NULL ? params->kernel_h * input_dims->w * params->hidden : 0;
    return RNNPOOL_ALIGN4(ring) + RNNPOOL_ALIGN4(output_dims->w * params->hidden);
}

rnnpool_status rnnpool_mbconv_s8(const rnnpool_context *ctx, const rnnpool_mbconv_params *params,
                                 const rnnpool_dims *input_dims, const int8_t *input,
                                 const rnnpool_dims *output_dims, int8_t *output)
{
    const int32_t in_h = input_dims->h, in_w = input_dims->w, in_c = input_dims->c;
    const int32_t hid = params->hidden, kh = params->kernel_h, kw = params->kernel_w;
    const int32_t out_w = output_dims->w, out_c = output_dims->c;
    const rnnpool_mbconv_stage *dw = params->depthwise;
    const rnnpool_conv_params *dp = &dw->params;
    const int32_t sh = dp->stride_h, sw = dp->stride_w;
    const rnnpool_dims ex_row_in = {1, in_w, in_c}, ex_row_out = {1, in_w, hid};
    const rnnpool_dims one = {1, 1, in_c}, one_h = {1, 1, hid};
    const rnnpool_dims pr_in = {1, out_w, hid}, pr_out = {1, out_w, out_c};
    int8_t *ring, *dw_row;
    int32_t computed = 0; /* expanded rows computed so far (rows 0 .. computed-1) */
    int32_t oy, ox, ch, ky, kx;
    if (ctx == NULL || ctx->buf == NULL || params->project == NULL || dw == NULL ||
        ctx->size < rnnpool_mbconv_s8_get_buffer_size(params, input_dims, output_dims) ||
        (params->expand == NULL && hid != in_c) ||
        !rnnpool_conv_output_ok(dp, in_h, in_w, kh, kw, output_dims->h, out_w) ||
        (params->add != NULL && (sh != 1 || sw != 1 || out_c != in_c ||
                                 output_dims->h != in_h || out_w != in_w))) {
        return RNNPOOL_ARG_ERROR;
    }
    ring = (int8_t *)ctx->buf;
    dw_row = ring + RNNPOOL_ALIGN4(params->expand != NULL ? kh * in_w * hid : 0);

    for (oy = 0; oy < output_dims->h; oy++) {
        const int32_t y0 = oy * sh - dp->pad_top;
        int8_t *out_row = output + oy * out_w * out_c;
        rnnpool_status st;
        /* expanded rows y0 .. y0+kh-1 (clipped), each computed once, slot y % kh */
        if (params->expand != NULL) {
            const int32_t last = y0 + kh - 1 < in_h - 1 ? y0 + kh - 1 : in_h - 1;
            for (; computed <= last; computed++) {
                st = rnnpool_conv2d_1x1_s8(NULL, &params->expand->params, &params->expand->quant,
                                           &ex_row_in, input + computed * in_w * in_c, &one,
                                           params->expand->filter, params->expand->bias,
                                           &ex_row_out, ring + (computed % kh) * in_w * hid);
                if (st != RNNPOOL_OK) {
                    return st;
                }
            }
        }
        /* depthwise output row */
        for (ox = 0; ox < out_w; ox++) {
            const int32_t x0 = ox * sw - dp->pad_left;
            for (ch = 0; ch < hid; ch++) {
                int32_t acc = dw->bias ? dw->bias[ch] : 0;
                for (ky = 0; ky < kh; ky++) {
                    const int32_t y = y0 + ky;
                    const int8_t *row;
                    if (y < 0 || y >= in_h) {
                        continue;
                    }
                    row = params->expand != NULL ? ring + (y % kh) * in_w * hid : input + y * in_w * in_c;
                    for (kx = 0; kx < kw; kx++) {
                        const int32_t x = x0 + kx;
                        if (x < 0 || x >= in_w) {
                            continue;
                        }
                        acc += (int32_t)dw->filter[(ky * kw + kx) * hid + ch] *
                               ((int32_t)row[x * hid + ch] + dp->input_offset);
                    }
                }
                acc = rnnpool_requantize(acc, dw->quant.multiplier[ch], dw->quant.shift[ch]);
                acc += dp->output_offset;
                dw_row[ox * hid + ch] = (int8_t)rnnpool_clamp(acc, dp->activation.min,
                                                              dp->activation.max);
            }
        }
        /* project (+ residual) into the output row */
        st = rnnpool_conv2d_1x1_s8(NULL, &params->project->params, &params->project->quant, &pr_in,
                                   dw_row, &one_h, params->project->filter, params->project->bias,
                                   &pr_out, out_row);
        if (st != RNNPOOL_OK) {
            return st;
        }
        if (params->add != NULL) {
            st = rnnpool_add_s8(NULL, params->add, &pr_out, input + oy * in_w * in_c, out_row,
                                out_row);
            if (st != RNNPOOL_OK) {
                return st;
            }
        }
    }
    return RNNPOOL_OK;
}
