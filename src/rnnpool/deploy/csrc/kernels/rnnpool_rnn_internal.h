/*
 * rnnpool_rnn_internal.h - private helpers shared by the RNN kernels (not part of the API).
 */
#ifndef RNNPOOL_RNN_INTERNAL_H
#define RNNPOOL_RNN_INTERNAL_H

#include <string.h>

#include "../rnnpool_rnn.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

/* sum a[i] * b[i] over n int16 pairs. Cortex-M4: two MACs per __smlad; elsewhere the same
 * sums in portable C (identical results: the quantizer bounds every partial sum below 2^31). */
static inline int32_t rnnpool_dot_s16(const int16_t *a, const int16_t *b, int32_t n)
{
    int32_t acc = 0;
    int32_t i = 0;
#if defined(__ARM_FEATURE_DSP)
    for (; i + 1 < n; i += 2) {
        int32_t x, y;
        memcpy(&x, a + i, sizeof x);
        memcpy(&y, b + i, sizeof y);
        acc = __smlad(x, y, acc);
    }
#else
    for (; i + 1 < n; i += 2) {
        acc += (int32_t)a[i] * b[i] + (int32_t)a[i + 1] * b[i + 1];
    }
#endif
    for (; i < n; i++) {
        acc += (int32_t)a[i] * b[i];
    }
    return acc;
}

/* out[j] = (add ? add[j] : 0) + sum_i m[j * cols + i] * v[i] for j < rows. Four rows per pass
 * share each load of v (Cortex-M4: 5 loads + 4 __smlad per 8 MACs). Exact integer sums: the
 * order of additions does not change the result (no partial sum overflows, see rnnpool_rnn.h). */
static inline void rnnpool_matvec_s16(const int16_t *m, const int16_t *v, int32_t rows,
                                      int32_t cols, const int32_t *add, int32_t *out)
{
    int32_t j = 0, i;
    for (; j + 3 < rows; j += 4) {
        const int16_t *r0 = m + j * cols;
        const int16_t *r1 = r0 + cols, *r2 = r1 + cols, *r3 = r2 + cols;
        int32_t acc0 = add ? add[j] : 0, acc1 = add ? add[j + 1] : 0;
        int32_t acc2 = add ? add[j + 2] : 0, acc3 = add ? add[j + 3] : 0;
        i = 0;
#if defined(__ARM_FEATURE_DSP)
        for (; i + 1 < cols; i += 2) {
            int32_t x, w;
            memcpy(&x, v + i, sizeof x);
            memcpy(&w, r0 + i, sizeof w);
            acc0 = __smlad(w, x, acc0);
            memcpy(&w, r1 + i, sizeof w);
            acc1 = __smlad(w, x, acc1);
            memcpy(&w, r2 + i, sizeof w);
            acc2 = __smlad(w, x, acc2);
            memcpy(&w, r3 + i, sizeof w);
            acc3 = __smlad(w, x, acc3);
        }
#else
        for (; i + 1 < cols; i += 2) {
            acc0 += (int32_t)r0[i] * v[i] + (int32_t)r0[i + 1] * v[i + 1];
            acc1 += (int32_t)r1[i] * v[i] + (int32_t)r1[i + 1] * v[i + 1];
            acc2 += (int32_t)r2[i] * v[i] + (int32_t)r2[i + 1] * v[i + 1];
            acc3 += (int32_t)r3[i] * v[i] + (int32_t)r3[i + 1] * v[i + 1];
        }
#endif
        for (; i < cols; i++) {
            acc0 += (int32_t)r0[i] * v[i];
            acc1 += (int32_t)r1[i] * v[i];
            acc2 += (int32_t)r2[i] * v[i];
            acc3 += (int32_t)r3[i] * v[i];
        }
        out[j] = acc0;
        out[j + 1] = acc1;
        out[j + 2] = acc2;
        out[j + 3] = acc3;
    }
    for (; j < rows; j++) {
        out[j] = (add ? add[j] : 0) + rnnpool_dot_s16(m + j * cols, v, cols);
    }
}

static inline int32_t rnnpool_clamp_proj(int32_t v)
{
    return rnnpool_clamp(v, -RNNPOOL_PROJ_LIMIT, RNNPOOL_PROJ_LIMIT);
}

/* RNN1 input projection of one pixel (k int8 channels) into proj[h] (Q(f+14)). */
static inline void rnnpool_project_pixel(const rnnpool_fastgrnn_params *rnn1, int32_t input_offset,
                                         const int8_t *px, int32_t *proj)
{
    const int32_t k = rnn1->input_size;
    int32_t j, i;
    for (j = 0; j < rnn1->hidden_size; j++) {
        const int8_t *w = rnn1->weight_ih_s8 + j * k;
        int32_t acc = 0;
        for (i = 0; i < k; i++) {
            acc += (int32_t)w[i] * ((int32_t)px[i] + input_offset);
        }
        proj[j] = rnnpool_clamp_proj(
            rnnpool_requantize(acc, rnn1->ih_quant.multiplier[j], rnn1->ih_quant.shift[j]));
    }
}

/* RNN2 input projection of one RNN1 summary s[h1] into proj[h2]. */
static inline void rnnpool_project_summary(const rnnpool_fastgrnn_params *rnn2, const int16_t *s,
                                           int32_t *proj)
{
    int32_t j;
    rnnpool_matvec_s16(rnn2->weight_ih_s16, s, rnn2->hidden_size, rnn2->input_size, NULL, proj);
    for (j = 0; j < rnn2->hidden_size; j++) {
        proj[j] = rnnpool_clamp_proj(proj[j]);
    }
}

/* Final state of a sweep over n projections proj[t * stride .. + h] (reverse if step < 0),
 * from zero state; h_a / h_b are two [h] buffers, returns the one holding the result. */
static inline const int16_t *rnnpool_sweep(const rnnpool_fastgrnn_params *cell,
                                           const int32_t *proj, int32_t n, int32_t stride,
                                           int16_t *h_a, int16_t *h_b)
{
    const int16_t *h = NULL;
    int32_t t;
    for (t = 0; t < n; t++) {
        int16_t *dst = (h == h_a) ? h_b : h_a;
        rnnpool_fastgrnn_s16(cell, proj + t * stride, h, dst);
        h = dst;
    }
    return h;
}

/* The four RNN2 sweeps of one patch and the int8 output pixel [4 * h2].
 * rows[t]: W2 projection of row summary t (t < kh); cols[t] likewise (t < kw); row_stride /
 * col_stride: distance in int32 between consecutive projections. */
static inline void rnnpool_patch_rnn2(const rnnpool_rnnpool_params *p,
                                      const rnnpool_fastgrnn_params *rnn2,
                                      const int32_t *rows, int32_t row_stride,
                                      const int32_t *cols, int32_t col_stride,
                                      int16_t *h_a, int16_t *h_b, int8_t *out)
{
    const int32_t h2 = rnn2->hidden_size;
    int32_t d, j;
    for (d = 0; d < 4; d++) {
        const int32_t *base = d < 2 ? rows : cols;
        const int32_t n = d < 2 ? p->kernel_h : p->kernel_w;
        const int32_t stride = d < 2 ? row_stride : col_stride;
        const int16_t *h = (d & 1) ? rnnpool_sweep(rnn2, base + (n - 1) * stride, n, -stride, h_a, h_b)
                                   : rnnpool_sweep(rnn2, base, n, stride, h_a, h_b);
        for (j = 0; j < h2; j++) {
            const int32_t v = rnnpool_requantize(h[j], p->output_quant.multiplier,
                                                 p->output_quant.shift) + p->output_offset;
            out[d * h2 + j] = (int8_t)rnnpool_clamp(v, -128, 127);
        }
    }
}

/* Checks shared by both RNNPool kernels. */
static inline int rnnpool_rnnpool_args_ok(const rnnpool_rnnpool_params *p,
                                          const rnnpool_fastgrnn_params *rnn1,
                                          const rnnpool_fastgrnn_params *rnn2,
                                          const rnnpool_dims *in)
{
    return p->kernel_h > 0 && p->kernel_w > 0 && p->stride_h > 0 && p->stride_w > 0 &&
           rnn1->input_size == in->c && rnn1->weight_ih_s8 != NULL && rnn2->weight_ih_s16 != NULL &&
           rnn2->input_size == rnn1->hidden_size && (p->padding_mode == 0 || p->padding_mode == 1) &&
           in->h + p->pad_top + p->pad_bottom >= p->kernel_h &&
           in->w + p->pad_left + p->pad_right >= p->kernel_w;
}

/* Input pixel of padded coordinates (y, x), or NULL for a zero-padded position. */
static inline const int8_t *rnnpool_padded_pixel(const rnnpool_rnnpool_params *p,
                                                 const rnnpool_dims *in, const int8_t *input,
                                                 int32_t y, int32_t x)
{
    y -= p->pad_top;
    x -= p->pad_left;
    if (y < 0 || y >= in->h || x < 0 || x >= in->w) {
        if (p->padding_mode == 0) {
            return NULL;
        }
        y = rnnpool_clamp(y, 0, in->h - 1);
        x = rnnpool_clamp(x, 0, in->w - 1);
    }
    return input + (y * in->w + x) * in->c;
}

#define RNNPOOL_ALIGN4(n) (((n) + 3) & ~3)

#endif /* RNNPOOL_RNN_INTERNAL_H */
