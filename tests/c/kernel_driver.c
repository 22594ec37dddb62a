/* Stream driver of the C kernels for tests/c/test_kernels_random.py.
 *
 * Reads whitespace-separated integers from stdin: a sequence of cases, each "<op> <fields...>",
 * and writes for each case one line: the status, then the output values. Compiled once with
 * ASan/UBSan, so one process runs hundreds of random cases. Ops (field order as read below):
 *   1 fixed-point helpers   2 convolution (3 kinds)   3 add   4 avgpool   5 l2norm
 *   6 FastGRNN steps        7 RNNPool (whole map, row by row, patch by patch)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnnpool_conv.h"
#include "rnnpool_rnn.h"

static long long rd(void)
{
    long long v;
    if (scanf("%lld", &v) != 1) {
        fprintf(stderr, "driver: short input\n");
        exit(3);
    }
    return v;
}

static int32_t rd32(void) { return (int32_t)rd(); }

static void *rd_arr(long n, int bytes)
{
    long i;
    void *p = malloc((size_t)(n > 0 ? n : 1) * (size_t)bytes);
    for (i = 0; i < n; i++) {
        const long long v = rd();
        if (bytes == 1) {
            ((int8_t *)p)[i] = (int8_t)v;
        } else if (bytes == 2) {
            ((int16_t *)p)[i] = (int16_t)v;
        } else {
            ((int32_t *)p)[i] = (int32_t)v;
        }
    }
    return p;
}

static void put_s8(int st, const int8_t *v, long n)
{
    long i;
    printf("%d", st);
    for (i = 0; i < n; i++) {
        printf(" %d", v[i]);
    }
    printf("\n");
}

static void fixedpoint(void)
{
    const long n = (long)rd();
    long i;
    printf("0");
    for (i = 0; i < n; i++) {
        const int32_t f = rd32(), a = rd32(), b = rd32(), c = rd32();
        long long r = 0;
        if (f == 0) {
            r = rnnpool_doubling_high_mul(a, b);
        } else if (f == 1) {
            r = rnnpool_rounding_divide_by_pot(a, b);
        } else if (f == 2) {
            r = rnnpool_requantize(a, b, c);
        } else {
            r = rnnpool_rshift_round(a, b);
        }
        printf(" %lld", r);
    }
    printf("\n");
}

static void conv(void)
{
    const int32_t kind = rd32();
    const rnnpool_dims in = {rd32(), rd32(), rd32()};
    const rnnpool_dims fd = {rd32(), rd32(), rd32()};
    const rnnpool_dims out = {rd32(), rd32(), rd32()};
    rnnpool_conv_params p;
    rnnpool_per_channel_quant q;
    int8_t *x, *w, *y;
    int32_t *bias, *m, *s;
    long nw;
    int st;
    p.stride_h = rd32();
    p.stride_w = rd32();
    p.pad_top = rd32();
    p.pad_bottom = rd32();
    p.pad_left = rd32();
    p.pad_right = rd32();
    p.input_offset = rd32();
    p.output_offset = rd32();
    p.activation.min = rd32();
    p.activation.max = rd32();
    nw = kind == 1 ? (long)fd.h * fd.w * fd.c : (long)out.c * fd.h * fd.w * fd.c;
    x = rd_arr((long)in.h * in.w * in.c, 1);
    w = rd_arr(nw, 1);
    bias = rd_arr(rd32() ? out.c : 0, 4);
    m = rd_arr(out.c, 4);
    s = rd_arr(out.c, 4);
    q.multiplier = m;
    q.shift = s;
    y = malloc((size_t)out.h * out.w * out.c);
    if (kind == 1) {
        st = rnnpool_depthwise_conv2d_s8(NULL, &p, &q, &in, x, &fd, w, bias, &out, y);
    } else if (kind == 2) {
        st = rnnpool_conv2d_1x1_s8(NULL, &p, &q, &in, x, &fd, w, bias, &out, y);
    } else {
        st = rnnpool_conv2d_s8(NULL, &p, &q, &in, x, &fd, w, bias, &out, y);
    }
    put_s8(st, y, st == 0 ? (long)out.h * out.w * out.c : 0);
    free(x);
    free(w);
    free(bias);
    free(m);
    free(s);
    free(y);
}

static void add(void)
{
    const rnnpool_dims d = {rd32(), rd32(), rd32()};
    const long n = (long)d.h * d.w * d.c;
    rnnpool_add_params p;
    int8_t *a, *b, *y;
    int st;
    p.input1_offset = rd32();
    p.input1_multiplier = rd32();
    p.input1_shift = rd32();
    p.input2_offset = rd32();
    p.input2_multiplier = rd32();
    p.input2_shift = rd32();
    p.left_shift = rd32();
    p.output_multiplier = rd32();
    p.output_shift = rd32();
    p.output_offset = rd32();
    p.activation.min = rd32();
    p.activation.max = rd32();
    a = rd_arr(n, 1);
    b = rd_arr(n, 1);
    y = malloc((size_t)n);
    st = rnnpool_add_s8(NULL, &p, &d, a, b, y);
    put_s8(st, y, st == 0 ? n : 0);
    free(a);
    free(b);
    free(y);
}

static void avgpool(void)
{
    const rnnpool_dims in = {rd32(), rd32(), rd32()};
    const rnnpool_dims out = {rd32(), rd32(), rd32()};
    rnnpool_pool_params p;
    rnnpool_per_tensor_quant q;
    int8_t *x, *y;
    int st;
    p.kernel_h = rd32();
    p.kernel_w = rd32();
    p.stride_h = rd32();
    p.stride_w = rd32();
    p.input_offset = rd32();
    p.output_offset = rd32();
    p.activation.min = rd32();
    p.activation.max = rd32();
    q.multiplier = rd32();
    q.shift = rd32();
    x = rd_arr((long)in.h * in.w * in.c, 1);
    y = malloc((size_t)out.h * out.w * out.c);
    st = rnnpool_avgpool_s8(NULL, &p, &q, &in, x, &out, y);
    put_s8(st, y, st == 0 ? (long)out.h * out.w * out.c : 0);
    free(x);
    free(y);
}

static void l2norm(void)
{
    const rnnpool_dims d = {rd32(), rd32(), rd32()};
    const long n = (long)d.h * d.w * d.c;
    rnnpool_l2norm_params p;
    rnnpool_per_channel_quant q;
    int8_t *x, *y;
    int32_t *m, *s;
    int st;
    p.input_offset = rd32();
    p.output_offset = rd32();
    p.activation.min = rd32();
    p.activation.max = rd32();
    m = rd_arr(d.c, 4);
    s = rd_arr(d.c, 4);
    q.multiplier = m;
    q.shift = s;
    x = rd_arr(n, 1);
    y = malloc((size_t)n);
    st = rnnpool_l2norm_s8(NULL, &p, &q, &d, x, y);
    put_s8(st, y, st == 0 ? n : 0);
    free(x);
    free(y);
    free(m);
    free(s);
}

/* Cell fields: first, in, hid, frac, zeta, nu, W_ih (int8 + mult + shift, or int16), U, bz, bh. */
static void rd_cell(rnnpool_fastgrnn_params *c)
{
    const int32_t first = rd32();
    memset(c, 0, sizeof *c);
    c->input_size = rd32();
    c->hidden_size = rd32();
    c->frac_bits = rd32();
    c->zeta_q = rd32();
    c->nu_q = rd32();
    if (first) {
        c->weight_ih_s8 = rd_arr((long)c->hidden_size * c->input_size, 1);
        c->ih_quant.multiplier = rd_arr(c->hidden_size, 4);
        c->ih_quant.shift = rd_arr(c->hidden_size, 4);
    } else {
        c->weight_ih_s16 = rd_arr((long)c->hidden_size * c->input_size, 2);
    }
    c->weight_hh = rd_arr((long)c->hidden_size * c->hidden_size, 2);
    c->bias_gate = rd_arr(c->hidden_size, 4);
    c->bias_update = rd_arr(c->hidden_size, 4);
}

static void free_cell(rnnpool_fastgrnn_params *c)
{
    free((void *)c->weight_ih_s8);
    free((void *)c->ih_quant.multiplier);
    free((void *)c->ih_quant.shift);
    free((void *)c->weight_ih_s16);
    free((void *)c->weight_hh);
    free((void *)c->bias_gate);
    free((void *)c->bias_update);
}

/* steps, cell, proj[steps][hid]: prints every state after each step. */
static void fastgrnn(void)
{
    const int32_t steps = rd32();
    rnnpool_fastgrnn_params c;
    int32_t *proj;
    int16_t *h;
    int32_t t, j;
    int st = 0;
    rd_cell(&c);
    proj = rd_arr((long)steps * c.hidden_size, 4);
    h = malloc(sizeof(int16_t) * (size_t)(steps + 1) * (size_t)c.hidden_size);
    for (t = 0; t < steps && st == 0; t++) {
        st = rnnpool_fastgrnn_s16(&c, proj + t * c.hidden_size,
                                  t ? h + (t - 1) * c.hidden_size : NULL, h + t * c.hidden_size);
    }
    printf("%d", st);
    for (j = 0; st == 0 && j < steps * c.hidden_size; j++) {
        printf(" %d", h[j]);
    }
    printf("\n");
    free(proj);
    free(h);
    free_cell(&c);
}

/* Prints three lines: whole map, row by row, patch by patch. */
static void rnnpool(void)
{
    const rnnpool_dims in = {rd32(), rd32(), rd32()};
    const rnnpool_dims out = {rd32(), rd32(), rd32()};
    rnnpool_rnnpool_params p;
    rnnpool_fastgrnn_params c1, c2;
    rnnpool_context ctx;
    int8_t *x, *y, *row;
    const long n_out = (long)out.h * out.w * out.c;
    int32_t yy, oy, ox, hr;
    int st;
    p.kernel_h = rd32();
    p.kernel_w = rd32();
    p.stride_h = rd32();
    p.stride_w = rd32();
    p.pad_top = rd32();
    p.pad_bottom = rd32();
    p.pad_left = rd32();
    p.pad_right = rd32();
    p.padding_mode = rd32();
    p.input_offset = rd32();
    p.output_offset = rd32();
    p.output_quant.multiplier = rd32();
    p.output_quant.shift = rd32();
    rd_cell(&c1);
    rd_cell(&c2);
    x = rd_arr((long)in.h * in.w * in.c, 1);
    y = malloc((size_t)n_out);
    ctx.size = rnnpool_rnnpool_s8_get_buffer_size(&p, &c1, &c2, &in, &out);
    ctx.buf = malloc((size_t)ctx.size);
    st = rnnpool_rnnpool_s8(&ctx, &p, &c1, &c2, &in, x, &out, y);
    put_s8(st, y, st == 0 ? n_out : 0);

    memset(y, 0, (size_t)n_out);
    row = malloc((size_t)in.w * in.c);
    hr = p.stride_h * (out.h - 1) + p.kernel_h;
    for (yy = 0, st = 0; yy < hr && st == 0; yy++) {
        int32_t iy = yy - p.pad_top;
        const int32_t b = rnnpool_rnnpool_s8_row_output(&p, &out, yy);
        const int8_t *src = NULL;
        if (p.padding_mode == 1) {
            iy = iy < 0 ? 0 : (iy >= in.h ? in.h - 1 : iy);
        }
        if (iy >= 0 && iy < in.h) {
            memcpy(row, x + (long)iy * in.w * in.c, (size_t)in.w * in.c);
            src = row;
        }
        st = rnnpool_rnnpool_s8_row(&ctx, &p, &c1, &c2, &in, yy, src, &out,
                                    b >= 0 ? y + (long)b * out.w * out.c : NULL);
    }
    put_s8(st, y, st == 0 ? n_out : 0);
    free(ctx.buf);

    memset(y, 0, (size_t)n_out);
    ctx.size = rnnpool_rnnpool_patch_s8_get_buffer_size(&p, &c1, &c2);
    ctx.buf = malloc((size_t)ctx.size);
    for (oy = 0, st = 0; oy < out.h && st == 0; oy++) {
        for (ox = 0; ox < out.w && st == 0; ox++) {
            st = rnnpool_rnnpool_patch_s8(&ctx, &p, &c1, &c2, &in, x, oy, ox,
                                          y + ((long)oy * out.w + ox) * out.c);
        }
    }
    put_s8(st, y, st == 0 ? n_out : 0);
    free(ctx.buf);
    free(row);
    free(x);
    free(y);
    free_cell(&c1);
    free_cell(&c2);
}

int main(void)
{
    long long op;
    while (scanf("%lld", &op) == 1) {
        switch (op) {
        case 1: fixedpoint(); break;
        case 2: conv(); break;
        case 3: add(); break;
        case 4: avgpool(); break;
        case 5: l2norm(); break;
        case 6: fastgrnn(); break;
        case 7: rnnpool(); break;
        default: fprintf(stderr, "driver: unknown op %lld\n", op); return 3;
        }
    }
    return 0;
}
