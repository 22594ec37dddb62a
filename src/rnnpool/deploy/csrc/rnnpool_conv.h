/*
 * rnnpool_conv.h - int8 convolution-family kernels (HWC, batch 1).
 *
 * Semantics (Python twin: rnnpool.quant.reference):
 *   acc = bias[o] + sum_{ky,kx,i} w[...] * (in[y*sh - pad_top + ky][x*sw - pad_left + kx][i]
 *         + input_offset)            (padded pixels contribute 0)
 *   out = clamp(rnnpool_requantize(acc, multiplier[o], shift[o]) + output_offset, act.min, act.max)
 */
#ifndef RNNPOOL_CONV_H
#define RNNPOOL_CONV_H

#include "rnnpool_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Convolution parameters. */
typedef struct {
    int32_t input_offset;   /**< -zero_point of the input, in [-127, 128] */
    int32_t output_offset;  /**< zero_point of the output, in [-128, 127] */
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_bottom, pad_left, pad_right;
    rnnpool_activation activation;
} rnnpool_conv_params;

/** Element-wise add parameters (TFLite int8 add; see rnnpool.quant.ir.AddS8). */
typedef struct {
    int32_t input1_offset, input1_multiplier, input1_shift;
    int32_t input2_offset, input2_multiplier, input2_shift;
    int32_t left_shift;
    int32_t output_multiplier, output_shift, output_offset;
    rnnpool_activation activation;
} rnnpool_add_params;

/** Pooling parameters (no padding). */
typedef struct {
    int32_t kernel_h, kernel_w, stride_h, stride_w;
    int32_t input_offset, output_offset;
    rnnpool_activation activation;
} rnnpool_pool_params;

/** L2Norm parameters (per-channel weight folded in the per-channel quant). */
typedef struct {
    int32_t input_offset, output_offset;
    rnnpool_activation activation;
} rnnpool_l2norm_params;

/**
 * Regular convolution.
 * @param ctx          unused (may be NULL)
 * @param params       offsets, strides, padding, clamp
 * @param quant        per-output-channel multiplier/shift [C_out]
 * @param input_dims   {H_in, W_in, C_in}
 * @param input        int8 [H_in, W_in, C_in]
 * @param filter_dims  {KH, KW, C_in}
 * @param filter       int8 [C_out, KH, KW, C_in]
 * @param bias         int32 [C_out] (may be NULL)
 * @param output_dims  {H_out, W_out, C_out}; H_out = (H_in + pad_top + pad_bottom - KH) / stride_h + 1
 * @param output       int8 [H_out, W_out, C_out]
 */
rnnpool_status rnnpool_conv2d_s8(const rnnpool_context *ctx, const rnnpool_conv_params *params,
                                 const rnnpool_per_channel_quant *quant,
                                 const rnnpool_dims *input_dims, const int8_t *input,
                                 const rnnpool_dims *filter_dims, const int8_t *filter,
                                 const int32_t *bias, const rnnpool_dims *output_dims,
                                 int8_t *output);

/**
 * Depthwise convolution (channel multiplier 1, C_out == C_in).
 * @param filter_dims  {KH, KW, C}
 * @param filter       int8 [KH, KW, C]
 * Other arguments as rnnpool_conv2d_s8.
 */
rnnpool_status rnnpool_depthwise_conv2d_s8(const rnnpool_context *ctx,
                                           const rnnpool_conv_params *params,
                                           const rnnpool_per_channel_quant *quant,
                                           const rnnpool_dims *input_dims, const int8_t *input,
                                           const rnnpool_dims *filter_dims, const int8_t *filter,
                                           const int32_t *bias, const rnnpool_dims *output_dims,
                                           int8_t *output);

/**
 * 1x1 convolution, stride 1, no padding (a per-pixel matrix-vector product).
 * @param filter_dims  {1, 1, C_in}
 * @param filter       int8 [C_out, C_in]
 * Other arguments as rnnpool_conv2d_s8.
 */
rnnpool_status rnnpool_conv2d_1x1_s8(const rnnpool_context *ctx, const rnnpool_conv_params *params,
                                     const rnnpool_per_channel_quant *quant,
                                     const rnnpool_dims *input_dims, const int8_t *input,
                                     const rnnpool_dims *filter_dims, const int8_t *filter,
                                     const int32_t *bias, const rnnpool_dims *output_dims,
                                     int8_t *output);

/**
 * out = in1 + in2 element-wise (same shapes).
 * @param dims    {H, W, C} of all three tensors
 * @param input1  int8 [H, W, C]
 * @param input2  int8 [H, W, C]
 * @param output  int8 [H, W, C] (may alias input1 or input2)
 */
rnnpool_status rnnpool_add_s8(const rnnpool_context *ctx, const rnnpool_add_params *params,
                              const rnnpool_dims *dims, const int8_t *input1,
                              const int8_t *input2, int8_t *output);

/**
 * Average pooling without padding: out = requantize(sum(in + input_offset)) + output_offset.
 * @param quant   per-tensor factor in_scale / (KH * KW * out_scale)
 */
rnnpool_status rnnpool_avgpool_s8(const rnnpool_context *ctx, const rnnpool_pool_params *params,
                                  const rnnpool_per_tensor_quant *quant,
                                  const rnnpool_dims *input_dims, const int8_t *input,
                                  const rnnpool_dims *output_dims, int8_t *output);

/**
 * L2Norm over channels per pixel (S3FD): out[c] = weight[c] * x[c] / ||x||.
 * Integer steps in rnnpool.quant.ir.L2NormS8.
 * @param quant   per-channel [C]: weight[c] * 2^-14 / out_scale (sign in the multiplier)
 * @param dims    {H, W, C}, C * 255^2 < 2^31
 */
rnnpool_status rnnpool_l2norm_s8(const rnnpool_context *ctx, const rnnpool_l2norm_params *params,
                                 const rnnpool_per_channel_quant *quant, const rnnpool_dims *dims,
                                 const int8_t *input, int8_t *output);

/** One convolution of an MBConv block: params, quant, weights, bias. */
typedef struct {
    rnnpool_conv_params params;
    rnnpool_per_channel_quant quant;
    const int8_t *filter; /**< expand/project: [C_out, C_in]; depthwise: [KH, KW, C_hidden] */
    const int32_t *bias;  /**< [C_out] */
} rnnpool_mbconv_stage;

/** An inverted-residual block (see rnnpool.quant.ir.MBConvS8). */
typedef struct {
    const rnnpool_mbconv_stage *expand;    /**< 1x1 C_in -> C_hidden, or NULL (t = 1) */
    const rnnpool_mbconv_stage *depthwise; /**< KH x KW depthwise on C_hidden */
    const rnnpool_mbconv_stage *project;   /**< 1x1 C_hidden -> C_out */
    const rnnpool_add_params *add;         /**< residual add, or NULL: input1 = the block input,
                                                input2 = the projection */
    int32_t hidden;                        /**< C_hidden */
    int32_t kernel_h, kernel_w;            /**< depthwise kernel */
} rnnpool_mbconv_params;

/** Scratch bytes of rnnpool_mbconv_s8: KH rows of the expanded map + one depthwise row. */
int32_t rnnpool_mbconv_s8_get_buffer_size(const rnnpool_mbconv_params *params,
                                          const rnnpool_dims *input_dims,
                                          const rnnpool_dims *output_dims);

/**
 * Row-streamed MBConv: the expanded map is computed KH rows at a time into a ring buffer in
 * ctx, so it is never held whole. Bit-identical to expand -> depthwise -> project (-> add).
 * @param input   int8 [H_in, W_in, C_in]
 * @param output  int8 [H_out, W_out, C_out], must not overlap input
 */
rnnpool_status rnnpool_mbconv_s8(const rnnpool_context *ctx, const rnnpool_mbconv_params *params,
                                 const rnnpool_dims *input_dims, const int8_t *input,
                                 const rnnpool_dims *output_dims, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* RNNPOOL_CONV_H */
