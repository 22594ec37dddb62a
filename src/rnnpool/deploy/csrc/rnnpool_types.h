/*
 * rnnpool_types.h - shared types and fixed-point helpers of the rnnpool int8 kernels.
 *
 * Layout: every feature map is HWC (batch 1), C innermost. Quantization is affine per tensor for
 * activations (real = scale * (q - zero_point)) and symmetric per output channel for weights.
 * Kernels take "offsets": input_offset = -zero_point of the input, output_offset = zero_point of
 * the output. Rescaling always goes through rnnpool_requantize(); its bit-exact Python twin is
 * rnnpool.quant.fixedpoint.requantize.
 *
 * Portability: C99. Right shifts of negative values are assumed arithmetic (true for gcc/clang
 * on every target rnnpool supports).
 */
#ifndef RNNPOOL_TYPES_H
#define RNNPOOL_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Status returned by every kernel. */
typedef enum {
    RNNPOOL_OK = 0,          /**< success */
    RNNPOOL_ARG_ERROR = -1,  /**< inconsistent dimensions or parameters, or scratch too small */
    RNNPOOL_NO_IMPL = -2     /**< a configuration this kernel does not implement */
} rnnpool_status;

/** Dimensions of a feature map (HWC) or of a filter (KH, KW, C_in). */
typedef struct {
    int32_t h; /**< rows */
    int32_t w; /**< columns */
    int32_t c; /**< channels */
} rnnpool_dims;

/** Caller-owned scratch memory (from the arena); kernels needing none accept NULL. */
typedef struct {
    void *buf;    /**< scratch, 4-byte aligned, at least *_get_buffer_size() bytes */
    int32_t size; /**< bytes available at buf */
} rnnpool_context;

/** Output clamp in the int8 domain (ReLU/ReLU6 folded in). Range [-128, 127], min <= max. */
typedef struct {
    int32_t min;
    int32_t max;
} rnnpool_activation;

/** Per-output-channel requantization: real factor = multiplier[c] * 2^(shift[c] - 31). */
typedef struct {
    const int32_t *multiplier; /**< [C_out], |m| in [2^30, 2^31) or 0 */
    const int32_t *shift;      /**< [C_out], in [-31, 30]; > 0 shifts left */
} rnnpool_per_channel_quant;

/** Per-tensor requantization: real factor = multiplier * 2^(shift - 31). */
typedef struct {
    int32_t multiplier;
    int32_t shift;
} rnnpool_per_tensor_quant;

#define RNNPOOL_STATE_FRAC_BITS 14             /* RNN state Q format: 1.0 == 16384 */
#define RNNPOOL_ONE_Q14 (1 << RNNPOOL_STATE_FRAC_BITS)
#define RNNPOOL_PROJ_LIMIT (1 << 29)           /* |projection| clamp of the RNN cells */

static inline int32_t rnnpool_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

static inline int16_t rnnpool_sat16(int32_t v)
{
    return (int16_t)(v < -32768 ? -32768 : (v > 32767 ? 32767 : v));
}

/** ((int64)a * b + 2^30) >> 31: the rounded high half of the doubled product (gemmlowp
 * SaturatingRoundingDoublingHighMul); INT32_MIN * INT32_MIN, its one overflow, gives INT32_MAX. */
static inline int32_t rnnpool_doubling_high_mul(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
}

/** x / 2^exponent rounded half away from zero; exponent in [0, 31]. */
static inline int32_t rnnpool_rounding_divide_by_pot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/**
 * THE requantization helper: acc * multiplier * 2^(shift - 31), rounded.
 * x = saturate_int32(acc * 2^max(shift, 0)); y = rnnpool_doubling_high_mul(x, multiplier);
 * return rnnpool_rounding_divide_by_pot(y, max(-shift, 0)).
 * Python twin: rnnpool.quant.fixedpoint.requantize.
 */
static inline int32_t rnnpool_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    int32_t x = acc;
    if (shift > 0) {
        int64_t v = (int64_t)acc * ((int64_t)1 << shift);
        x = v > INT32_MAX ? INT32_MAX : (v < INT32_MIN ? INT32_MIN : (int32_t)v);
    }
    /* = rnnpool_doubling_high_mul(x, multiplier) without its INT32_MIN check: |multiplier| <
     * 2^31, so the rounded product always fits int32 */
    return rnnpool_rounding_divide_by_pot(
        (int32_t)(((int64_t)x * multiplier + ((int64_t)1 << 30)) >> 31), shift < 0 ? -shift : 0);
}

/** (v + 2^(n-1)) >> n, round half up (n >= 1; v + 2^(n-1) must fit int32); v for n == 0.
 * Python: fixedpoint.rshift_round. */
static inline int32_t rnnpool_rshift_round(int32_t v, int32_t n)
{
    return n > 0 ? (v + (1 << (n - 1))) >> n : v;
}

#ifdef __cplusplus
}
#endif

#endif /* RNNPOOL_TYPES_H */
