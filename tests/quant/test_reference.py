"""The integer reference against independent float64 computations (torch conv on integers)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnpool.nn import RNNPool2d
from rnnpool.quant import ir
from rnnpool.quant import reference as R
from rnnpool.quant.fixedpoint import quantize_multipliers
from rnnpool.quant.ptq import quantize_rnnpool


def _conv_op(rng, c_in, c_out, k, stride, pad, groups):
    cin_g = c_in // groups
    w = rng.integers(-127, 128, (c_out, k, k, cin_g)).astype(np.int8)
    bias = rng.integers(-5000, 5000, c_out).astype(np.int32)
    reals = rng.uniform(0.0005, 0.01, c_out)
    m, s = quantize_multipliers(reals)
    op = ir.Conv2dS8("c", "x", "y", w, bias, (stride, stride), pad, groups, m, s, 7, -3, -100, 120)
    return op, reals


@pytest.mark.parametrize("c_in,c_out,k,stride,pad,groups", [
    (3, 5, 3, 1, (1, 1, 1, 1), 1), (4, 6, 3, 2, (0, 1, 0, 1), 1), (8, 8, 3, 2, (1, 1, 1, 1), 8),
    (6, 4, 1, 1, (0, 0, 0, 0), 1), (5, 5, 5, 1, (2, 2, 2, 2), 5),
])
def test_conv2d_against_float64(c_in, c_out, k, stride, pad, groups):
    rng = np.random.default_rng(c_in * 10 + k)
    op, reals = _conv_op(rng, c_in, c_out, k, stride, pad, groups)
    x = rng.integers(-128, 128, (9, 11, c_in)).astype(np.int8)
    y = R.conv2d(op, x)
    xt = torch.tensor(x, dtype=torch.float64).permute(2, 0, 1)[None] + op.input_offset
    top, bottom, left, right = pad
    xt = F.pad(xt, (left, right, top, bottom))
    wt = torch.tensor(op.weight, dtype=torch.float64).permute(0, 3, 1, 2)
    acc = F.conv2d(xt, wt, torch.tensor(op.bias, dtype=torch.float64), stride, groups=groups)
    acc = acc[0].permute(1, 2, 0).numpy()  # exact integers
    expect = np.clip(np.round(acc * reals) + op.output_offset, op.act_min, op.act_max)
    assert y.shape == expect.shape
    assert np.abs(y.astype(int) - expect).max() <= 1
    assert (y == expect).mean() > 0.97


def test_add_against_float():
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (5, 6, 7)).astype(np.int8)
    b = rng.integers(-128, 128, (5, 6, 7)).astype(np.int8)
    params = ir.make_add_params(0.05, 3, 0.02, -10, 0.08, 5)
    op = ir.AddS8("add", "a", "b", "y", *params)
    y = R.add(op, a, b)
    expect = np.clip(np.round((0.05 * (a - 3.0) + 0.02 * (b + 10.0)) / 0.08) + 5, -128, 127)
    assert np.abs(y - expect).max() <= 1


def test_l2norm_against_float():
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (4, 5, 16)).astype(np.int8)
    x[0, 0] = 3  # all equal to the zero point -> zero vector
    weight = rng.uniform(2, 10, 16)
    out_scale = 10.0 / 127
    m, s = quantize_multipliers(weight * 2.0**-14 / out_scale)
    op = ir.L2NormS8("n", "x", "y", -3, m, s, 0)
    y = R.l2norm(op, x)
    xc = x.astype(np.float64) - 3
    nrm = np.sqrt((xc**2).sum(-1, keepdims=True))
    expect = np.clip(
        np.round(np.where(nrm > 0, xc / np.maximum(nrm, 1e-12), 0) * weight / out_scale),
        -128, 127)
    assert np.abs(y - expect).max() <= 1
    assert (y[0, 0] == 0).all()


@pytest.mark.parametrize("padding,mode", [("same", "zeros"), (0, "zeros"), ("same", "replicate")])
def test_rnnpool_fixed_point_close_to_float(padding, mode):
    torch.manual_seed(0)
    pool = RNNPool2d(4, 8, 6, (4, 3), (2, 2), padding=padding, padding_mode=mode,
                     gate="hard_sigmoid", update="hard_tanh")
    with torch.no_grad():
        pool.rnn1.bias_gate.uniform_(-1, 1)
        pool.rnn2.bias_update.uniform_(-0.5, 0.5)
    x_scale, x_zp = 0.03, -5
    xq = np.random.default_rng(0).integers(-128, 128, (10, 9, 4)).astype(np.int8)
    xf = torch.tensor((xq.astype(np.float64) - x_zp) * x_scale, dtype=torch.float32)
    with torch.no_grad():
        yf = pool(xf.permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    out_scale = 1.0 / 127
    inp = ir.QTensor("x", xq.shape, "int8", x_scale, x_zp)
    out = ir.QTensor("y", yf.shape, "int8", out_scale, 0)
    op = quantize_rnnpool(pool, "p", inp, out)
    y = R.rnnpool(op, xq)
    assert y.shape == yf.shape
    err = np.abs(y * out_scale - yf)
    assert err.max() < 4 * out_scale, err.max()
    assert err.mean() < 0.6 * out_scale


def test_conv2d_rejects_int32_accumulator_overflow():
    # C accumulates in int32: 36 * 127 * 255 + bias > 2**31 - 1 would overflow there
    w = np.full((1, 3, 3, 4), 127, np.int8)
    m, s = quantize_multipliers(np.array([1e-9]))
    op = ir.Conv2dS8("c", "x", "y", w, np.array([2**31 - 1000], np.int32), (1, 1),
                     (0, 0, 0, 0), 1, m, s, 128, 0)
    with pytest.raises(OverflowError, match="int32"):
        R.conv2d(op, np.full((3, 3, 4), 127, np.int8))
    op.bias[:] = 2**31 - 1 - 36 * 127 * 255  # the largest bias that still fits
    assert R.conv2d(op, np.full((3, 3, 4), 127, np.int8)).shape == (1, 1, 1)


def _cell(f: int, bz: int, bh: int) -> ir.FastGRNNQ:
    return ir.FastGRNNQ(np.zeros((1, 1), np.int16), np.zeros((1, 1), np.int16),
                        np.array([bz], np.int32), np.array([bh], np.int32), f)


def test_fastgrnn_scan_rejects_what_overflows_int32_in_c():
    # C computes z = (a + b_z + 2**f) >> (f + 1) in int32. |a| stays within the old 3 * 2**29
    # check, but a + b_z + 2**f is INT32_MAX (fits) or one more (overflows).
    f = 11
    a = 2**31 - 1 - 2**29 - 2**f
    assert abs(a) <= 3 * 2**29
    assert R.fastgrnn_scan(np.array([[[a]]]), _cell(f, 2**29, 0)).tolist() == [[0]]
    with pytest.raises(OverflowError, match="int32"):
        R.fastgrnn_scan(np.array([[[a + 1]]]), _cell(f, 2**29, 0))
    # and below: a + b_h = INT32_MIN - 1
    with pytest.raises(OverflowError, match="int32"):
        R.fastgrnn_scan(np.array([[[-3 * 2**29]]]), _cell(f, 0, -(2**29) - 1))


def test_conv2d_rejects_depthwise_multiplier():
    w = np.ones((4, 3, 3, 1), np.int8)  # groups 2, C_out 4: channel multiplier 2
    m, s = quantize_multipliers(np.full(4, 0.01))
    op = ir.Conv2dS8("c", "x", "y", w, np.zeros(4, np.int32), (1, 1), (1, 1, 1, 1), 2, m, s, 0, 0)
    with pytest.raises(ValueError, match="depthwise"):
        R.conv2d(op, np.zeros((3, 3, 2), np.int8))
