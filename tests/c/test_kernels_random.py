"""Randomised bit-exactness of the C kernels and fixed-point helpers against the numpy reference.

``kernel_driver.c`` and every kernel are compiled once (host gcc, ASan + UBSan, traps on any
undefined behaviour such as int32 overflow); each test streams a few hundred cases through one
process. Cases cover odd / 1x1 maps, stride 2 with odd sizes, padding at each border alone,
channel counts 1..17, extreme zero points and multipliers (saturation at both ends),
accumulators near the int32 limits, and the FastGRNN hard gates at their breakpoints.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnpool.nn import RNNPool2d
from rnnpool.quant import ir
from rnnpool.quant import reference as R
from rnnpool.quant.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    doubling_high_mul,
    quantize_multiplier,
    quantize_multipliers,
    requantize,
    rounding_divide_by_pot,
    rshift_round,
)
from rnnpool.quant.ptq import quantize_rnnpool

HERE = Path(__file__).resolve().parent
CSRC = HERE.parents[1] / "src" / "rnnpool" / "deploy" / "csrc"
FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    exe = tmp_path_factory.mktemp("cdriver") / "kernel_driver"
    srcs = [HERE / "kernel_driver.c", *sorted((CSRC / "kernels").glob("*.c"))]
    r = subprocess.run(["gcc", *FLAGS, "-I", str(CSRC), *map(str, srcs), "-o", str(exe)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return exe


def _drive(exe: Path, cases: list[list[int]]) -> list[np.ndarray]:
    """Run the driver on the cases (flat int lists); one int64 array per output line."""
    text = "\n".join(" ".join(str(int(v)) for v in c) for c in cases) + "\n"
    r = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return [np.array(line.split(), dtype=np.int64) for line in r.stdout.splitlines()]


def _flat(*parts) -> list[int]:
    out: list[int] = []
    for p in parts:
        out.extend(np.asarray(p, dtype=np.int64).ravel().tolist())
    return out


def _mults(rng: np.random.Generator, n: int, lo: float, hi: float):
    """Per-channel (multiplier, shift) of log-uniform reals in [lo, hi]."""
    return quantize_multipliers(np.exp(rng.uniform(np.log(lo), np.log(hi), n)))


# ---------------------------------------------------------------- fixed-point helpers


def _srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul, written with Python integers."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    q = abs(ab + nudge) >> 31  # C++ integer division truncates toward zero
    return q if ab + nudge >= 0 else -q


def _rdbpot(x: int, e: int) -> int:
    """x / 2**e rounded half away from zero (gemmlowp RoundingDivideByPOT)."""
    q, r = divmod(abs(x), 1 << e)
    q += 2 * r >= (1 << e) and e > 0
    return q if x >= 0 else -q


def _requantize(acc: int, m: int, s: int) -> int:
    x = min(max(acc * (1 << max(s, 0)), INT32_MIN), INT32_MAX)
    return _rdbpot(_srdhm(x, m), max(-s, 0))


def _edge_int32(rng: np.random.Generator, n: int) -> np.ndarray:
    edges = np.array([INT32_MIN, INT32_MIN + 1, -(1 << 30), -2, -1, 0, 1, 2, 1 << 30,
                      INT32_MAX - 1, INT32_MAX], dtype=np.int64)
    return np.concatenate([edges, rng.choice(edges, n // 4),
                           rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True)])


def test_fixedpoint_helpers_c_python_and_reference(driver):
    rng = np.random.default_rng(0)
    n = 3000
    a = _edge_int32(rng, n)
    b = _edge_int32(rng, n)
    rng.shuffle(b)
    b = b[: a.size]
    e = rng.integers(0, 32, a.size)
    e[:32] = np.arange(32)
    mults = np.concatenate([[1 << 30, (1 << 31) - 1, -(1 << 30), -((1 << 31) - 1), 0],
                            rng.integers(1 << 30, 1 << 31, a.size - 5)])
    mults[5::3] *= -1
    shifts = rng.integers(-31, 31, a.size)
    shifts[:62] = np.arange(-31, 31)
    # rshift_round's int32 sum v + 2**(n-1) must not overflow (the RNN cell's values are < 2**31)
    nr = rng.integers(0, 20, a.size)
    v = np.clip(a, INT32_MIN, INT32_MAX - (1 << 19))
    rows = [[0, x, y, 0] for x, y in zip(a, b)] + [[1, x, k, 0] for x, k in zip(a, e)]
    rows += [[2, x, m, s] for x, m, s in zip(a, mults, shifts)]
    rows += [[3, x, k, 0] for x, k in zip(v, nr)]
    (got,) = _drive(driver, [[1, len(rows), *_flat(rows)]])
    got = got[1:]
    k = a.size
    want = [_srdhm(int(x), int(y)) for x, y in zip(a, b)]
    want += [_rdbpot(int(x), int(s)) for x, s in zip(a, e)]
    want += [_requantize(int(x), int(m), int(s)) for x, m, s in zip(a, mults, shifts)]
    want += [(int(x) + ((1 << int(s)) >> 1)) >> int(s) for x, s in zip(v, nr)]
    assert got.tolist() == want
    twin = np.concatenate([doubling_high_mul(a, b), rounding_divide_by_pot(a, e),
                           requantize(a, mults, shifts),
                           np.concatenate([rshift_round(v[i:i + 1], int(nr[i]))
                                           for i in range(k)])])
    assert twin.tolist() == want


def test_doubling_high_mul_int32_min_squared_saturates(driver):
    (got,) = _drive(driver, [[1, 1, 0, INT32_MIN, INT32_MIN, 0]])
    assert int(got[1]) == INT32_MAX
    assert int(doubling_high_mul(INT32_MIN, INT32_MIN)) == INT32_MAX


# ---------------------------------------------------------------- convolutions


def _random_conv(rng: np.random.Generator, i: int):
    kind = ("conv2d", "depthwise_conv2d", "conv2d_1x1")[i % 3]
    c_in = int(rng.integers(1, 18))
    c_out = c_in if kind == "depthwise_conv2d" else int(rng.integers(1, 18))
    h, w = (int(v) for v in rng.integers(1, 10, 2))
    if kind == "conv2d_1x1":
        k, stride, pad = (1, 1), (1, 1), (0, 0, 0, 0)
    else:
        k = tuple(int(v) for v in rng.integers(1, 6, 2))
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        pad = [int(rng.integers(0, k[j // 2])) if rng.random() < 0.5 else 0 for j in range(4)]
        if i % 7 == 0:  # padding at one border only
            pad = [0, 0, 0, 0]
            pad[i % 4] = k[(i % 4) // 2] - 1
        pad = tuple(pad)
        # the padded map must hold at least one window
        h = max(h, k[0] - pad[0] - pad[1])
        w = max(w, k[1] - pad[2] - pad[3])
    groups = c_in if kind == "depthwise_conv2d" else 1
    wt = rng.integers(-127, 128, (c_out, *k, c_in // groups))
    if i % 5 == 0:
        wt[:] = rng.choice([-127, 127], wt.shape)
    taps = k[0] * k[1] * (c_in // groups)
    x = rng.integers(-128, 128, (h, w, c_in))
    in_off = int(rng.choice([-127, 128, int(rng.integers(-127, 129))]))
    mode = i % 4
    if mode == 0:  # ordinary
        bias = rng.integers(-20000, 20000, c_out)
        m, s = _mults(rng, c_out, 1e-4, 0.05)
    elif mode == 1:  # tiny and huge factors: saturation at both ends, left shifts
        bias = rng.integers(-(1 << 20), 1 << 20, c_out)
        m, s = _mults(rng, c_out, 2.0**-31, 2.0**20)
    elif mode == 2:  # accumulator near +-2**31: all terms of one sign, bias fills the rest
        sign = int(rng.choice([-1, 1]))
        in_off = 128 if sign > 0 else -127
        x[:] = 127 if sign > 0 else -128
        wt[:] = 127
        bound = taps * 127 * 255
        bias = np.full(c_out, sign * (INT32_MAX - bound - int(rng.integers(0, 3))))
        m, s = _mults(rng, c_out, 2.0**-31, 2.0**-20)
    else:  # exact zero multipliers and factors near 2**30
        bias = rng.integers(-(1 << 24), 1 << 24, c_out)
        m, s = _mults(rng, c_out, 2.0**28, 2.0**29.9)
        m[::2], s[::2] = 0, 0
    act = sorted(int(v) for v in rng.integers(-128, 128, 2)) if i % 3 else [-128, 127]
    op = ir.Conv2dS8(f"c{i}", "x", "y", wt.astype(np.int8), bias.astype(np.int32), stride, pad,
                     groups, m, s, in_off,
                     int(rng.choice([-128, 127, int(rng.integers(-128, 128))])), act[0], act[1])
    return op, x.astype(np.int8)


def _conv_row(op: ir.Conv2dS8, x: np.ndarray, y: np.ndarray) -> list[int]:
    kind = {"conv2d": 0, "depthwise_conv2d": 1, "conv2d_1x1": 2}[op.kind]
    _, kh, kw, _ = op.weight.shape
    return [2, kind, *x.shape, kh, kw, x.shape[2], *y.shape, *op.stride, *op.padding,
            op.input_offset, op.output_offset, op.act_min, op.act_max,
            *_flat(x, ir.c_weight(op)), 1, *_flat(op.bias, op.multiplier, op.shift)]


def test_conv_kernels_random_bit_exact(driver):
    rng = np.random.default_rng(1)
    cases = [_random_conv(rng, i) for i in range(240)]
    want = [R.conv2d(op, x) for op, x in cases]
    got = _drive(driver, [_conv_row(op, x, y) for (op, x), y in zip(cases, want)])
    for (op, x), y, g in zip(cases, want, got):
        assert g[0] == 0, (op.kind, x.shape, op.weight.shape, op.stride, op.padding)
        assert g[1:].tolist() == y.astype(np.int64).ravel().tolist(), (
            op.kind, x.shape, op.weight.shape, op.stride, op.padding)
    # the edge modes were reached: both clamps and both int32 extremes of the accumulator
    allv = np.concatenate([y.ravel() for y in want])
    assert (allv == -128).any() and (allv == 127).any()


def test_conv2d_on_1x1_maps_and_single_channels(driver):
    rng = np.random.default_rng(2)
    cases = []
    for groups, c in ((1, 1), (1, 3), (3, 3), (1, 17)):
        w = rng.integers(-127, 128, (c, 3, 3, c // groups)).astype(np.int8)
        m, s = _mults(rng, c, 0.001, 0.1)
        op = ir.Conv2dS8("c", "x", "y", w, rng.integers(-99, 99, c).astype(np.int32), (2, 2),
                         (1, 1, 1, 1), groups, m, s, 5, -3)
        cases.append((op, rng.integers(-128, 128, (1, 1, c)).astype(np.int8)))
    want = [R.conv2d(op, x) for op, x in cases]
    got = _drive(driver, [_conv_row(op, x, y) for (op, x), y in zip(cases, want)])
    for y, g in zip(want, got):
        assert y.shape[:2] == (1, 1)
        assert g[1:].tolist() == y.astype(np.int64).ravel().tolist()


# ---------------------------------------------------------------- add, avgpool, l2norm


def test_add_avgpool_l2norm_random_bit_exact(driver):
    rng = np.random.default_rng(3)
    rows, want = [], []
    for i in range(60):
        shape = tuple(int(v) for v in rng.integers(1, 8, 3))
        a = rng.integers(-128, 128, shape).astype(np.int8)
        b = rng.integers(-128, 128, shape).astype(np.int8)
        s1, s2, so = np.exp(rng.uniform(np.log(1e-3), np.log(1.0), 3))
        if i % 4 == 0:
            so = so * 1e-3  # output saturates at both ends
        zp = [int(rng.choice([-128, 127, int(rng.integers(-128, 128))])) for _ in range(3)]
        lo, hi = (-128, 127) if i % 2 else sorted(int(v) for v in rng.integers(-128, 128, 2))
        op = ir.AddS8("a", "a", "b", "y", *ir.make_add_params(s1, zp[0], s2, zp[1], so, zp[2]),
                      lo, hi)
        y = R.add(op, a, b)
        rows.append([3, *shape, op.input1_offset, op.input1_multiplier, op.input1_shift,
                     op.input2_offset, op.input2_multiplier, op.input2_shift, op.left_shift,
                     op.output_multiplier, op.output_shift, op.output_offset, lo, hi,
                     *_flat(a, b)])
        want.append(y)

        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        sh, sw = (int(v) for v in rng.integers(1, 3, 2))
        x = rng.integers(-128, 128, (kh + int(rng.integers(0, 5)), kw + int(rng.integers(0, 5)),
                                     int(rng.integers(1, 18)))).astype(np.int8)
        pm, ps = quantize_multiplier(
            float(np.exp(rng.uniform(np.log(1e-3), np.log(2.0)))) / (kh * kw))
        op = ir.AvgPoolS8("p", "x", "y", (kh, kw), (sh, sw), int(rng.choice([-127, 128, 3])),
                          pm, ps, zp[2], lo, hi)
        y = R.avgpool(op, x)
        rows.append([4, *x.shape, *y.shape, kh, kw, sh, sw, op.input_offset, op.output_offset,
                     lo, hi, pm, ps, *_flat(x)])
        want.append(y)

        c = int(rng.integers(1, 18)) if i % 10 else 300
        x = rng.integers(-128, 128, (int(rng.integers(1, 4)), int(rng.integers(1, 4)), c))
        in_off = int(rng.choice([-127, 128, int(rng.integers(-127, 129))]))
        x[0, 0] = -in_off if -128 <= -in_off <= 127 else x[0, 0]  # an all-zero vector
        x[-1, -1] = 127 if in_off > 0 else -128  # the largest norm
        lm, ls = quantize_multipliers(rng.choice([-1, 1], c) * np.exp(
            rng.uniform(np.log(1e-6), np.log(0.1), c)))
        op = ir.L2NormS8("n", "x", "y", in_off, lm, ls, zp[2], lo, hi)
        y = R.l2norm(op, x.astype(np.int8))
        rows.append([5, *x.shape, in_off, zp[2], lo, hi, *_flat(lm, ls, x)])
        want.append(y)
    got = _drive(driver, rows)
    for r, y, g in zip(rows, want, got):
        assert g[0] == 0, r[:4]
        assert g[1:].tolist() == y.astype(np.int64).ravel().tolist(), r[:4]


# ---------------------------------------------------------------- FastGRNN and RNNPool


def _cell_row(c: ir.FastGRNNQ) -> list[int]:
    first = c.ih_multiplier is not None
    row = [int(first), c.weight_ih.shape[1], c.hidden, c.frac_bits, c.zeta_q, c.nu_q,
           *_flat(c.weight_ih)]
    if first:
        row += _flat(c.ih_multiplier, c.ih_shift)
    return row + _flat(c.weight_hh, c.bias_gate, c.bias_update)


def _breakpoint_cell(rng: np.random.Generator, f: int, hid: int, zeta_nu: bool):
    """A cell whose pre-activations hit the hard gates' knees: U has row sums of |u| at most
    2**14 (the quantizer's bound), biases place a + b on the rounding ties and the clamps."""
    u = rng.integers(-(1 << 14), 1 << 14, (hid, hid))
    u = (u * ((1 << 14) / np.maximum(np.abs(u).sum(1, keepdims=True), 1))).astype(np.int64)
    u[0] = 0  # row 0 sees only proj + bias: exact breakpoints
    one = 1 << (f + 14)
    knees = np.clip([-one, -one - 1, one, one + 1, 0, -1, 1, (1 << f) - 1, 1 << f,
                     -(1 << f), -(1 << f) - 1, 3 * one, -3 * one], -(1 << 29), 1 << 29)
    bz = rng.integers(-(1 << 20), 1 << 20, hid)
    bh = rng.integers(-(1 << 20), 1 << 20, hid)
    bz[0], bh[0] = min(one, 1 << 29), 0  # z = rshift_round(a + one, f + 1): knees at a = +-one
    zq, nq = (int(rng.integers(0, 1 << 14)), int(rng.integers(0, 1 << 14))) if zeta_nu else (
        1 << 14, 0)
    cell = ir.FastGRNNQ(np.zeros((hid, 1), np.int16), u.astype(np.int16), bz.astype(np.int32),
                        bh.astype(np.int32), f, zq, nq, ih_multiplier=np.zeros(hid, np.int32),
                        ih_shift=np.zeros(hid, np.int32))
    steps = 2 * knees.size
    proj = rng.integers(-(1 << 29), 1 << 29, (steps, hid))
    proj[:, 0] = np.concatenate([knees, knees[::-1]])
    proj[1::3, 1:] = rng.choice([-(1 << 29), 1 << 29], (len(range(1, steps, 3)), hid - 1))
    return cell, proj


def test_fastgrnn_breakpoints_and_saturation_bit_exact(driver):
    rng = np.random.default_rng(4)
    rows, want = [], []
    for i, f in enumerate([0, 1, 5, 11, 11, 13, 3, 7]):
        hid = int(rng.integers(1, 18))
        cell, proj = _breakpoint_cell(rng, f, hid, zeta_nu=i % 2 == 1)
        states = [R.fastgrnn_scan(proj[: t + 1, None, :], cell)[0] for t in range(len(proj))]
        rows.append([6, len(proj), *_cell_row(cell), *_flat(proj)])
        want.append(np.stack(states))
    got = _drive(driver, rows)
    for r, y, g in zip(rows, want, got):
        assert g[0] == 0
        assert g[1:].tolist() == y.ravel().tolist(), r[:8]
    # the hard gates reached both clamps: states near +-1 and exactly 0 occur
    allv = np.concatenate([y.ravel() for y in want])
    assert (np.abs(allv) >= (1 << 14) - 1).any() and (allv == 0).any()


def _random_rnnpool(rng: np.random.Generator, i: int):
    c, h1, h2 = (int(v) for v in rng.integers(1, 8, 3))
    k = tuple(int(v) for v in rng.integers(1, 6, 2))
    st = tuple(int(v) for v in rng.integers(1, 4, 2))
    torch.manual_seed(100 + i)
    pool = RNNPool2d(c, h1, h2, k, st, padding=0, gate="hard_sigmoid", update="hard_tanh",
                     trainable_zeta_nu=i % 3 == 1)
    with torch.no_grad():
        for cell in (pool.rnn1, pool.rnn2):
            cell.bias_gate.uniform_(-1.5, 1.5)
            cell.bias_update.uniform_(-1.5, 1.5)
            for p in cell.parameters():
                if p.dim() == 2:
                    p.mul_(float(rng.uniform(1, 4)))
            if i % 3 == 1:
                cell.zeta_raw.fill_(float(rng.normal()))
                cell.nu_raw.fill_(float(rng.normal()))
    pad = tuple(int(rng.integers(0, k[j // 2])) for j in range(4))
    if i % 4 == 0:  # a 1x1 map, padding on every border making up the patch
        hw = (1, 1)
        pad = (k[0] // 2, k[0] - 1 - k[0] // 2, k[1] - 1, 0)
    else:
        hw = (max(int(rng.integers(1, 10)), k[0] - pad[0] - pad[1]),
              max(int(rng.integers(1, 10)), k[1] - pad[2] - pad[3]))
    x = rng.integers(-128, 128, (*hw, c)).astype(np.int8)
    zp = int(rng.choice([-128, 127, int(rng.integers(-128, 128))]))
    # quantized for a 12x12 map (padding 0), then given this case's map size and padding
    inp = ir.QTensor("x", (12, 12, c), "int8", float(rng.uniform(0.005, 0.1)), zp)
    out = ir.QTensor("y", (*pool.output_size((12, 12)), 4 * h2), "int8",
                     float(rng.choice([1 / 127, 1 / 4000])), int(rng.choice([-128, 0, 127])))
    op = quantize_rnnpool(pool, "p", inp, out)
    op.padding = pad
    op.padding_mode = ("zeros", "replicate")[i % 2]
    return op, x


def test_rnnpool_random_shapes_bit_exact(driver):
    rng = np.random.default_rng(5)
    cases = [_random_rnnpool(rng, i) for i in range(40)]
    want = [R.rnnpool(op, x) for op, x in cases]
    rows = []
    for (op, x), y in zip(cases, want):
        rows.append([7, *x.shape, *y.shape, *op.kernel_size, *op.stride, *op.padding,
                     int(op.padding_mode == "replicate"), op.input_offset, op.output_offset,
                     op.output_multiplier, op.output_shift, *_cell_row(op.rnn1),
                     *_cell_row(op.rnn2), *_flat(x)])
    got = _drive(driver, rows)
    assert len(got) == 3 * len(cases)
    for j, ((op, x), y) in enumerate(zip(cases, want)):
        for variant, g in zip(("map", "rows", "patches"), got[3 * j: 3 * j + 3]):
            assert g[0] == 0, (variant, x.shape, op.kernel_size, op.stride, op.padding)
            assert g[1:].tolist() == y.astype(np.int64).ravel().tolist(), (
                variant, x.shape, op.kernel_size, op.stride, op.padding, op.padding_mode)
