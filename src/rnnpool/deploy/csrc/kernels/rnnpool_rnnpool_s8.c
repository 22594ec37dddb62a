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

rnnpool_status rnnpool_rnnpool_s8(const rnnpool_context *ctx, const rnnpool_rnnpool_params *params,
                                  const rnnpool_fastgrnn_params *rnn1,
                                  const rnnpool_fastgrnn_params *rnn2,
                                  const rnnpool_dims *input_dims, const int8_t *input,
                                  const rnnpool_dims *output_dims, int8_t *output)
{
    const int32_t kh = params->kernel_h, kw = params->kernel_w;
    const int32_t sh = params->stride_h, sw = params->stride_w;
    const int32_t h1 = rnn1->hidden_size, h2 = rnn2->hidden_size;
    const int32_t hmax = h1 > h2 ? h1 : h2;
    const int32_t ho = output_dims->h, wo = output_dims->w;
    rnnpool_geom g;
    int32_t *prow, *ring, *colp, *rows;
    int16_t *cstate, *h_a, *h_b;
    int32_t y, x, ow, b, j;
    if (ctx == NULL || ctx->buf == NULL || !rnnpool_rnnpool_args_ok(params, rnn1, rnn2, input_dims) ||
        ho < 1 || wo < 1 || output_dims->c != 4 * h2 ||
        ho != (input_dims->h + params->pad_top + params->pad_bottom - kh) / sh + 1 ||
        wo != (input_dims->w + params->pad_left + params->pad_right - kw) / sw + 1 ||
        ctx->size < rnnpool_rnnpool_s8_get_buffer_size(params, rnn1, rnn2, input_dims,
                                                       output_dims)) {
        return RNNPOOL_ARG_ERROR;
    }
    g = rnnpool_geometry(params, output_dims);
    prow = (int32_t *)ctx->buf;
    ring = prow + g.wc * h1;
    colp = ring + kh * wo * h2;
    rows = colp + g.wc * h2;
    cstate = (int16_t *)(rows + kh * h2);
    h_a = cstate + RNNPOOL_ALIGN4(g.nb * g.wc * h1 * 2) / 2;
    h_b = h_a + hmax;

    for (y = 0; y < g.hr; y++) {
        /* Bands b with b*sh <= y < b*sh + kh. */
        const int32_t b_hi = rnnpool_clamp(y / sh, 0, ho - 1);
        int32_t b_lo = (y - kh + sh) / sh; /* ceil((y - kh + 1) / sh) for y >= kh - 1 */
        if (y - kh + 1 <= 0) {
            b_lo = 0;
        }
        if (b_lo > b_hi) {
            continue; /* a row no patch reads (stride larger than the patch) */
        }
        /* 1. projections of the row */
        for (x = 0; x < g.wc; x++) {
            const int8_t *px = rnnpool_padded_pixel(params, input_dims, input, y, x);
            if (px != NULL) {
                rnnpool_project_pixel(rnn1, params->input_offset, px, prow + x * h1);
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
                    /* Row r of the patch is ring slot (b*sh + r) % kh: gather for a plain
                     * stride (kh * h2 words, negligible next to the sweeps). */
                    int32_t r;
                    for (r = 0; r < kh; r++) {
                        memcpy(rows + r * h2, ring + (((b * sh + r) % kh) * wo + ow) * h2,
                               (size_t)h2 * sizeof(int32_t));
                    }
                    rnnpool_patch_rnn2(params, rnn2, rows, h2, colp + ow * sw * h2, h2, h_a, h_b,
                                       output + (b * wo + ow) * 4 * h2);
                }
            }
        }
    }
    return RNNPOOL_OK;
}
