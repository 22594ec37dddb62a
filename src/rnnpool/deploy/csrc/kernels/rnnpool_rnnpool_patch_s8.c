/* RNNPool of one patch, read in place from the HWC map (minimal RAM, no sharing). */
#include "rnnpool_rnn_internal.h"

int32_t rnnpool_rnnpool_patch_s8_get_buffer_size(const rnnpool_rnnpool_params *params,
                                                 const rnnpool_fastgrnn_params *rnn1,
                                                 const rnnpool_fastgrnn_params *rnn2)
{
    const int32_t h1 = rnn1->hidden_size, h2 = rnn2->hidden_size;
    const int32_t hmax = h1 > h2 ? h1 : h2;
    return (params->kernel_h + params->kernel_w) * h2 * 4 /* W2 projections of the summaries */
           + h1 * 4                                       /* projection of one pixel */
           + RNNPOOL_ALIGN4(2 * hmax * 2);                /* two state buffers */
}

/* One RNN1 sweep of n pixels from (y, x) in steps of (dy, dx), then the W2 projection of its
 * summary into out. pix (h1 int32) and h_a, h_b (states) are scratch. */
static void sweep(const rnnpool_rnnpool_params *params, const rnnpool_dims *input_dims,
                  const int8_t *input, const rnnpool_fastgrnn_params *rnn1,
                  const rnnpool_fastgrnn_params *rnn2, int32_t y, int32_t x, int32_t dy,
                  int32_t dx, int32_t n, int32_t *pix, int16_t *h_a, int16_t *h_b, int32_t *out)
{
    const int16_t *h = NULL;
    int32_t t, j;
    for (t = 0; t < n; t++) {
        const int8_t *px =
            rnnpool_padded_pixel(params, input_dims, input, y + t * dy, x + t * dx);
        int16_t *dst = (h == h_a) ? h_b : h_a;
        if (px != NULL) {
            rnnpool_project_pixel(rnn1, params->input_offset, px, pix);
        } else {
            for (j = 0; j < rnn1->hidden_size; j++) {
                pix[j] = 0;
            }
        }
        rnnpool_fastgrnn_s16(rnn1, pix, h, dst);
        h = dst;
    }
    rnnpool_project_summary(rnn2, h, out);
}

rnnpool_status rnnpool_rnnpool_patch_s8(const rnnpool_context *ctx,
                                        const rnnpool_rnnpool_params *params,
                                        const rnnpool_fastgrnn_params *rnn1,
                                        const rnnpool_fastgrnn_params *rnn2,
                                        const rnnpool_dims *input_dims, const int8_t *input,
                                        int32_t out_y, int32_t out_x, int8_t *output)
{
    const int32_t kh = params->kernel_h, kw = params->kernel_w;
    const int32_t h1 = rnn1->hidden_size, h2 = rnn2->hidden_size;
    const int32_t hmax = h1 > h2 ? h1 : h2;
    const int32_t y0 = out_y * params->stride_h, x0 = out_x * params->stride_w;
    int32_t *rows, *cols, *pix;
    int16_t *h_a, *h_b;
    int32_t r, t;
    if (ctx == NULL || ctx->buf == NULL ||
        ctx->size < rnnpool_rnnpool_patch_s8_get_buffer_size(params, rnn1, rnn2) ||
        !rnnpool_rnnpool_args_ok(params, rnn1, rnn2, input_dims) || out_y < 0 || out_x < 0 ||
        y0 + kh > input_dims->h + params->pad_top + params->pad_bottom ||
        x0 + kw > input_dims->w + params->pad_left + params->pad_right) {
        return RNNPOOL_ARG_ERROR;
    }
    rows = (int32_t *)ctx->buf;
    cols = rows + kh * h2;
    pix = cols + kw * h2;
    h_a = (int16_t *)(pix + h1);
    h_b = h_a + hmax;
    /* Row sweeps, then column sweeps: each pixel is projected once for its row and once for
     * its column (no patch copy, no shared state). */
    for (r = 0; r < kh; r++) {
        sweep(params, input_dims, input, rnn1, rnn2, y0 + r, x0, 0, 1, kw, pix, h_a, h_b,
              rows + r * h2);
    }
    for (t = 0; t < kw; t++) {
        sweep(params, input_dims, input, rnn1, rnn2, y0, x0 + t, 1, 0, kh, pix, h_a, h_b,
              cols + t * h2);
    }
    rnnpool_patch_rnn2(params, rnn2, rows, h2, cols, h2, h_a, h_b, output);
    return RNNPOOL_OK;
}
