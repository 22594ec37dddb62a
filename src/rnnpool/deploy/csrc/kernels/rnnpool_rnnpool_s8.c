/*
 * RNNPool over a whole HWC map, streamed by input rows (padded coordinates Y, X).
 *
 * For each input row Y that some patch reads:
 *   1. project every pixel of the row through W1 once (prow[X]);
 *   2. run the RNN1 row segment of every output column ow on prow (each segment once, shared
 *      by all patches whose band contains Y) and store its W2 projection in a ring of kh rows;
 *   3. advance the RNN1 column sweeps of every band containing Y by one step (each column
 *      segment once, shared by the horizontally overlapping patches);
 *   4. when row Y completes band b: project the column summaries through W2 and run the four
 *      RNN2 sweeps of every patch of output row b, writing its int8 output pixels.
 * rnnpool_rnnpool_s8_row does one input row (the state stays in the caller's scratch between
 * calls), so a producer can stream rows into it; rnnpool_rnnpool_s8 feeds it the whole map.
 * Scratch (rnnpool_rnnpool_s8_get_buffer_size): prow, the column states of the
 * ceil(kh / sh) open bands, the row-projection ring, one row of column projections and one
 * patch's gathered row projections.
 */
#include "rnnpool_rnn_internal.h"

typedef struct {
    int32_t hr, wc, nb;
} rnnpool_geom;

static rnnpool_geom rnnpool_geometry(const rnnpool_rnnpool_params *p, const rnnpool_dims *out)
{
    rnnpool_geom g;
    g.hr = p->stride_h * (out->h - 1) + p->kernel_h;
    g.wc = p->stride_w * (out->w - 1) + p->kernel_w;
    g.nb = (p->kernel_h + p->stride_h - 1) / p->stride_h;
    return g;
}

int32_t rnnpool_rnnpool_s8_get_buffer_size(const rnnpool_rnnpool_params *params,
                                           const rnnpool_fastgrnn_params *rnn1,
                                           const rnnpool_fastgrnn_params *rnn2,
                                           const rnnpool_dims *input_dims,
                                           const rnnpool_dims *output_dims)
{
    const rnnpool_geom g = rnnpool_geometry(params, output_dims);
    const int32_t h1 = rnn1->hidden_size, h2 = rnn2->hidden_size;
    const int32_t hmax = h1 > h2 ? h1 : h2;
    (void)input_dims;
    return g.wc * h1 * 4                                   /* prow */
           + params->kernel_h * output_dims->w * h2 * 4    /* row-projection ring */
           + g.wc * h2 * 4                                 /* column projections */
           + params->kernel_h * h2 * 4                     /* one patch's row projections */
           + RNNPOOL_ALIGN4(g.nb * g.wc * h1 * 2)          /* open column sweeps */
           + RNNPOOL_ALIGN4(2 * hmax * 2);                 /* two state buffers */
}

int32_t rnnpool_rnnpool_s8_row_output(const rnnpool_rnnpool_params *params,
                                      const rnnpool_dims *output_dims, int32_t y)
{
    const int32_t first = y - params->kernel_h + 1; /* first row of a band ending at y */
    if (first < 0 || first % params->stride_h != 0 || first / params->stride_h >= output_dims->h) {
        return -1;
    }
    return first / params->stride_h;
}

static int rnnpool_rnnpool_ok(const rnnpool_context *ctx, const rnnpool_rnnpool_params *params,
                              const rnnpool_fastgrnn_params *rnn1, const rnnpool_fastgrnn_params *rnn2,
                              const rnnpool_dims *input_dims, const rnnpool_dims *output_dims)
{
    return ctx != NULL && ctx->buf != NULL && rnnpool_rnnpool_args_ok(params, rnn1, rnn2, input_dims) &&
           output_dims->h >= 1 && output_dims->w >= 1 && output_dims->c == 4 * rnn2->hidden_size &&
           output_dims->h == (input_dims->h + params->pad_top + params->pad_bottom - params->kernel_h) /
                                 params->stride_h + 1 &&
           output_dims->w == (input_dims->w + params->pad_left + params->pad_right - params->kernel_w) /
                                 params->stride_w + 1 &&
           ctx->size >= rnnpool_rnnpool_s8_get_buffer_size(params, rnn1, rnn2, input_dims, output_dims);
}

rnnpool_status rnnpool_rnnpool_s8_row(const rnnpool_context *ctx, const rnnpool_rnnpool_params *params,
                                      const rnnpool_fastgrnn_params *rnn1,
                                      const rnnpool_fastgrnn_params *rnn2,
                                      const rnnpool_dims *input_dims, int32_t y, const int8_t *in_row,
                                      const rnnpool_dims *output_dims, int8_t *out_row)
{
    const int32_t kh = params->kernel_h, kw = params->kernel_w;
    const int32_t sh = params->stride_h, sw = params->stride_w;
    const int32_t h1 = rnn1->hidden_size, h2 = rnn2->hidden_size;
    const int32_t hmax = h1 > h2 ? h1 : h2;
    const int32_t ho = output_dims->h, wo = output_dims->w;
    const int32_t in_w = input_dims->w, in_c = input_dims->c;
    rnnpool_geom g;
    int32_t *prow, *ring, *colp, *rows;
    int16_t *cstate, *h_a, *h_b;
    int32_t x, ow, b, j, b_lo, b_hi;
    if (!rnnpool_rnnpool_ok(ctx, params, rnn1, rnn2, input_dims, output_dims) || y < 0) {
        return RNNPOOL_ARG_ERROR;
    }
    g = rnnpool_geometry(params, output_dims);
    if (y >= g.hr) {
        return RNNPOOL_ARG_ERROR;
    }
    /* Bands b with b*sh <= y < b*sh + kh. */
    b_hi = rnnpool_clamp(y / sh, 0, ho - 1);
    b_lo = y - kh + 1 <= 0 ? 0 : (y - kh + sh) / sh; /* ceil((y - kh + 1) / sh) */
    if (b_lo > b_hi) {
        return RNNPOOL_OK; /* a row no patch reads (stride larger than the patch) */
    }
    if (rnnpool_rnnpool_s8_row_output(params, output_dims, y) >= 0 && out_row == NULL) {
        return RNNPOOL_ARG_ERROR;
    }
    prow = (int32_t *)ctx->buf;
    ring = prow + g.wc * h1;
    colp = ring + kh * wo * h2;
    rows = colp + g.wc * h2;
    cstate = (int16_t *)(rows + kh * h2);
    h_a = cstate + RNNPOOL_ALIGN4(g.nb * g.wc * h1 * 2) / 2;
    h_b = h_a + hmax;

    /* 1. projections of the row (padded columns: 0, or the edge pixel when replicating) */
    for (x = 0; x < g.wc; x++) {
        int32_t ix = x - params->pad_left;
        if (params->padding_mode == 1) {
            ix = rnnpool_clamp(ix, 0, in_w - 1);
        }
        if (in_row != NULL && ix >= 0 && ix < in_w) {
            rnnpool_project_pixel(rnn1, params->input_offset, in_row + ix * in_c, prow + x * h1);
        } else {
            for (j = 0; j < h1; j++) {
                prow[x * h1 + j] = 0;
            }
        }
    }
    /* 2. row segments -> W2 projections in the ring */
    for (ow = 0; ow < wo; ow++) {
        const int16_t *h = rnnpool_sweep(rnn1, prow + ow * sw * h1, kw, h1, h_a, h_b);
        rnnpool_project_summary(rnn2, h, ring + ((y % kh) * wo + ow) * h2);
    }
    /* 3. one step of the column sweeps of every open band */
    for (b = b_lo; b <= b_hi; b++) {
        int16_t *st = cstate + (b % g.nb) * g.wc * h1;
        const int32_t t = y - b * sh;
        for (x = 0; x < g.wc; x++) {
            rnnpool_fastgrnn_s16(rnn1, prow + x * h1, t == 0 ? NULL : st + x * h1, h_a);
            memcpy(st + x * h1, h_a, (size_t)h1 * sizeof(int16_t));
        }
        /* 4. band complete: RNN2 for output row b */
        if (t == kh - 1) {
            for (x = 0; x < g.wc; x++) {
                rnnpool_project_summary(rnn2, st + x * h1, colp + x * h2);
            }
            for (ow = 0; ow < wo; ow++) {
                /* Row r of the patch is ring slot (b*sh + r) % kh: gather for a plain stride
                 * (kh * h2 words, negligible next to the sweeps). */
                int32_t r;
                for (r = 0; r < kh; r++) {
                    memcpy(rows + r * h2, ring + (((b * sh + r) % kh) * wo + ow) * h2,
                           (size_t)h2 * sizeof(int32_t));
                }
                rnnpool_patch_rnn2(params, rnn2, rows, h2, colp + ow * sw * h2, h2, h_a, h_b,
                                   out_row + ow * 4 * h2);
            }
        }
    }
    return RNNPOOL_OK;
}

rnnpool_status rnnpool_rnnpool_s8(const rnnpool_context *ctx, const rnnpool_rnnpool_params *params,
                                  const rnnpool_fastgrnn_params *rnn1,
                                  const rnnpool_fastgrnn_params *rnn2,
                                  const rnnpool_dims *input_dims, const int8_t *input,
                                  const rnnpool_dims *output_dims, int8_t *output)
{
    const int32_t in_h = input_dims->h, row_bytes = input_dims->w * input_dims->c;
    const int32_t out_row_bytes = output_dims->w * output_dims->c;
    rnnpool_geom g;
    int32_t y;
    if (!rnnpool_rnnpool_ok(ctx, params, rnn1, rnn2, input_dims, output_dims)) {
        return RNNPOOL_ARG_ERROR;
    }
    g = rnnpool_geometry(params, output_dims);
    for (y = 0; y < g.hr; y++) {
        int32_t iy = y - params->pad_top;
        const int32_t b = rnnpool_rnnpool_s8_row_output(params, output_dims, y);
        rnnpool_status st;
        if (params->padding_mode == 1) {
            iy = rnnpool_clamp(iy, 0, in_h - 1);
        }
        st = rnnpool_rnnpool_s8_row(ctx, params, rnn1, rnn2, input_dims, y,
                                    iy >= 0 && iy < in_h ? input + iy * row_bytes : NULL,
                                    output_dims, b >= 0 ? output + b * out_row_bytes : NULL);
        if (st != RNNPOOL_OK) {
            return st;
        }
    }
    return RNNPOOL_OK;
}
