/*
 * rnnpool_rnn.h - fixed-point FastGRNN and RNNPool kernels.
 *
 * Fixed point (Python twin: rnnpool.quant.reference.fastgrnn_scan / rnnpool): int16 state in
 * Q14; a cell with frac_bits f keeps pre-activations in int32 Q(f+14); U (and RNN2's W) are int16
 * with f fractional bits. One step, with proj = W x (precomputed):
 *   a  = proj + U h
 *   z  = clamp(rshift_round(a + bias_gate, f + 1), 0, 16384)     (bias_gate holds b_z + 1)
 *   c  = clamp(rshift_round(a + bias_update, f), -16384, 16384)
 *   co = rshift_round(zeta_q * (16384 - z), 14) + nu_q
 *   h' = sat16(rshift_round(z * h + co * c, 14))
 * The quantizer guarantees |proj|, |bias|, |U h| <= 2^29, so int32 never overflows.
 */
#ifndef RNNPOOL_RNN_H
#define RNNPOOL_RNN_H

#include "rnnpool_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Parameters of one FastGRNN cell. W and U are shared by the gate and the update, so the two
 * "gates" differ only in their bias (bias_gate, bias_update).
 */
typedef struct {
    int32_t input_size;   /**< k */
    int32_t hidden_size;  /**< h */
    const int8_t *weight_ih_s8;          /**< RNN1: int8 [h, k] per-row symmetric, else NULL */
    rnnpool_per_channel_quant ih_quant;  /**< RNN1: [h] factors to Q(f+14); else {NULL, NULL} */
    const int16_t *weight_ih_s16;        /**< RNN2: int16 [h, k] with frac_bits, else NULL */
    const int16_t *weight_hh;            /**< int16 [h, h], frac_bits fractional bits */
    const int32_t *bias_gate;            /**< int32 [h], Q(f+14) of b_z + 1 */
    const int32_t *bias_update;          /**< int32 [h], Q(f+14) of b_h */
    int32_t frac_bits;                   /**< f, in [0, 16] */
    int32_t zeta_q;                      /**< zeta in Q14 (16384 in the paper) */
    int32_t nu_q;                        /**< nu in Q14 (0 in the paper) */
} rnnpool_fastgrnn_params;

/**
 * One FastGRNN step.
 * @param cell    the cell
 * @param proj    int32 [h]: W x in Q(f+14), |proj| <= 2^29
 * @param h_in    int16 [h] previous state (Q14), or NULL for the zero state
 * @param h_out   int16 [h] new state; must not overlap h_in (h <= 64)
 */
rnnpool_status rnnpool_fastgrnn_s16(const rnnpool_fastgrnn_params *cell, const int32_t *proj,
                                    const int16_t *h_in, int16_t *h_out);

/** RNNPool layer parameters. */
typedef struct {
    int32_t kernel_h, kernel_w;  /**< patch r x c */
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_bottom, pad_left, pad_right;
    int32_t padding_mode;        /**< 0: zeros, 1: replicate */
    int32_t input_offset;        /**< -zero_point of the input */
    int32_t output_offset;       /**< zero_point of the output */
    rnnpool_per_tensor_quant output_quant; /**< Q14 state -> output scale */
} rnnpool_rnnpool_params;

/** Scratch bytes for rnnpool_rnnpool_s8 (a few rows of projections and summaries). */
int32_t rnnpool_rnnpool_s8_get_buffer_size(const rnnpool_rnnpool_params *params,
                                           const rnnpool_fastgrnn_params *rnn1,
                                           const rnnpool_fastgrnn_params *rnn2,
                                           const rnnpool_dims *input_dims,
                                           const rnnpool_dims *output_dims);

/**
 * RNNPool over a whole feature map, streamed by input rows: each pixel is projected through
 * W1 once, each RNN1 row/column segment runs once however many patches share it, each summary is
 * projected through W2 once. Patches are read in place from the HWC input.
 * @param input        int8 [H_in, W_in, C_in]
 * @param output_dims  {H_out, W_out, 4 * h2}
 * @param output       int8 [H_out, W_out, 4 * h2]: [row-fwd, row-rev, col-fwd, col-rev]
 */
rnnpool_status rnnpool_rnnpool_s8(const rnnpool_context *ctx, const rnnpool_rnnpool_params *params,
                                  const rnnpool_fastgrnn_params *rnn1,
                                  const rnnpool_fastgrnn_params *rnn2,
                                  const rnnpool_dims *input_dims, const int8_t *input,
                                  const rnnpool_dims *output_dims, int8_t *output);

/** The output row that input row y (padded coordinates) completes, or -1. */
int32_t rnnpool_rnnpool_s8_row_output(const rnnpool_rnnpool_params *params,
                                      const rnnpool_dims *output_dims, int32_t y);

/**
 * Incremental RNNPool: the same computation as rnnpool_rnnpool_s8, one input row per call, so
 * the input map never has to be held whole. Feed padded rows y = 0, 1, ..., hr - 1 in order,
 * hr = stride_h * (H_out - 1) + kernel_h (rows no patch reads may be skipped). The state lives
 * in ctx->buf between calls (rnnpool_rnnpool_s8_get_buffer_size bytes, must stay untouched).
 * @param input_dims   {H_in, W_in, C_in} of the whole (unpadded) input map
 * @param y            padded row index (image row y - pad_top)
 * @param in_row       int8 [W_in, C_in]: image row y - pad_top (replicate padding: the clamped
 *                     row), or NULL when the row is zero padding
 * @param out_row      int8 [W_out, 4 * h2]: written when rnnpool_rnnpool_s8_row_output(y) >= 0
 *                     (that output row); may be NULL otherwise
 */
rnnpool_status rnnpool_rnnpool_s8_row(const rnnpool_context *ctx, const rnnpool_rnnpool_params *params,
                                      const rnnpool_fastgrnn_params *rnn1,
                                      const rnnpool_fastgrnn_params *rnn2,
                                      const rnnpool_dims *input_dims, int32_t y, const int8_t *in_row,
                                      const rnnpool_dims *output_dims, int8_t *out_row);

/** Scratch bytes for rnnpool_rnnpool_patch_s8. */
int32_t rnnpool_rnnpool_patch_s8_get_buffer_size(const rnnpool_rnnpool_params *params,
                                                 const rnnpool_fastgrnn_params *rnn1,
                                                 const rnnpool_fastgrnn_params *rnn2);

/**
 * RNNPool of ONE patch (output pixel (out_y, out_x)), read in place from the HWC input; the
 * minimal-RAM variant (no sharing between patches). Same numbers as rnnpool_rnnpool_s8.
 * @param output  int8 [4 * h2]: the output pixel
 */
rnnpool_status rnnpool_rnnpool_patch_s8(const rnnpool_context *ctx,
                                        const rnnpool_rnnpool_params *params,
                                        const rnnpool_fastgrnn_params *rnn1,
                                        const rnnpool_fastgrnn_params *rnn2,
                                        const rnnpool_dims *input_dims, const int8_t *input,
                                        int32_t out_y, int32_t out_x, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* RNNPOOL_RNN_H */
