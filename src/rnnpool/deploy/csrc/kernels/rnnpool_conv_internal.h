/*
 * rnnpool_conv_internal.h - private helpers of the int8 convolution kernels (not part of the API).
 *
 * Cortex-M4 (__ARM_FEATURE_DSP): four int8 values are loaded as one word, sign-extended into two
 * int16x2 lanes with SXTB16 ((v0, v2) and (v1, v3)), offset with SADD16 and multiplied with
 * SMLAD (two MACs per instruction) or SMLABB / SMLATT. Elsewhere the same integer sums are
 * computed in portable C: the results are identical (exact integer arithmetic, no overflow).
 */
#ifndef RNNPOOL_CONV_INTERNAL_H
#define RNNPOOL_CONV_INTERNAL_H

#include <string.h>

#include "../rnnpool_conv.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>

static inline int32_t rnnpool_ld4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline int32_t rnnpool_ror8(int32_t v)
{
    return (int32_t)(((uint32_t)v >> 8) | ((uint32_t)v << 24));
}
#endif

/* 1 when out_h x out_w is the output size of a kh x kw window moved with the strides and padding
 * of p over in_h x in_w, and the strides are positive. */
static inline int rnnpool_conv_output_ok(const rnnpool_conv_params *p, int32_t in_h, int32_t in_w,
                                         int32_t kh, int32_t kw, int32_t out_h, int32_t out_w)
{
    return p->stride_h >= 1 && p->stride_w >= 1 &&
           out_h == (in_h + p->pad_top + p->pad_bottom - kh) / p->stride_h + 1 &&
           out_w == (in_w + p->pad_left + p->pad_right - kw) / p->stride_w + 1;
}

/* The taps [*k0, *k1) of a window of k taps starting at `start` that lie inside [0, size). */
static inline void rnnpool_taps_in_bounds(int32_t start, int32_t k, int32_t size, int32_t *k0,
                                          int32_t *k1)
{
    *k0 = start < 0 ? -start : 0;
    *k1 = start + k > size ? size - start : k;
}

/* acc[k] += sum_{i < n} w_k[i] * (x[i] + offset) for the four weight rows w0..w3. */
static inline void rnnpool_dot4_s8(const int8_t *x, const int8_t *w0, const int8_t *w1,
                                   const int8_t *w2, const int8_t *w3, int32_t n, int32_t offset,
                                   int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    int32_t i = 0;
#if defined(__ARM_FEATURE_DSP)
    const int32_t off2 = (int32_t)(((uint32_t)offset & 0xffffu) * 0x10001u);
    for (; i + 3 < n; i += 4) {
        const int32_t xv = rnnpool_ld4(x + i);
        const int32_t xa = __sadd16(__sxtb16(xv), off2);
        const int32_t xb = __sadd16(__sxtb16(rnnpool_ror8(xv)), off2);
        int32_t wv = rnnpool_ld4(w0 + i);
        a0 = __smlad(__sxtb16(wv), xa, a0);
        a0 = __smlad(__sxtb16(rnnpool_ror8(wv)), xb, a0);
        wv = rnnpool_ld4(w1 + i);
        a1 = __smlad(__sxtb16(wv), xa, a1);
        a1 = __smlad(__sxtb16(rnnpool_ror8(wv)), xb, a1);
        wv = rnnpool_ld4(w2 + i);
        a2 = __smlad(__sxtb16(wv), xa, a2);
        a2 = __smlad(__sxtb16(rnnpool_ror8(wv)), xb, a2);
        wv = rnnpool_ld4(w3 + i);
        a3 = __smlad(__sxtb16(wv), xa, a3);
        a3 = __smlad(__sxtb16(rnnpool_ror8(wv)), xb, a3);
    }
#endif
    for (; i < n; i++) {
        const int32_t v = (int32_t)x[i] + offset;
        a0 += w0[i] * v;
        a1 += w1[i] * v;
        a2 += w2[i] * v;
        a3 += w3[i] * v;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* sum_{i < n} w[i] * (x[i] + offset). */
static inline int32_t rnnpool_dot1_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t offset)
{
    int32_t a = 0, i = 0;
#if defined(__ARM_FEATURE_DSP)
    const int32_t off2 = (int32_t)(((uint32_t)offset & 0xffffu) * 0x10001u);
    for (; i + 3 < n; i += 4) {
        const int32_t xv = rnnpool_ld4(x + i);
        const int32_t wv = rnnpool_ld4(w + i);
        a = __smlad(__sxtb16(wv), __sadd16(__sxtb16(xv), off2), a);
        a = __smlad(__sxtb16(rnnpool_ror8(wv)), __sadd16(__sxtb16(rnnpool_ror8(xv)), off2), a);
    }
#endif
    for (; i < n; i++) {
        a += w[i] * ((int32_t)x[i] + offset);
    }
    return a;
}

/* Requantize, offset and clamp one accumulator to int8. */
static inline int8_t rnnpool_out_s8(int32_t acc, int32_t mult, int32_t shift, int32_t offset,
                                    const rnnpool_activation *act)
{
    return (int8_t)rnnpool_clamp(rnnpool_requantize(acc, mult, shift) + offset, act->min, act->max);
}

#endif /* RNNPOOL_CONV_INTERNAL_H */
