"""Integer reference interpreter of a :class:`~rnnpool.quant.ir.QGraph` (numpy).

:func:`run` executes each op with exactly the integer semantics of the C kernels in
``deploy/csrc/`` (same accumulation, rounding, saturation and shifts), so its int8 outputs are
the golden data the C code must reproduce bit for bit. It is vectorised with numpy and meant
for testing and accuracy evaluation, not speed.

Example::

    >>> import numpy as np
    >>> from rnnpool.quant.ir import QGraph, QTensor, AddS8, make_add_params
    >>> g = QGraph(inputs=["x"], outputs=["y"])
    >>> _ = g.add_tensor(QTensor("x", (1, 2, 1), "int8", 0.5, 0))
    >>> _ = g.add_tensor(QTensor("y", (1, 2, 1), "int8", 1.0, 0))
    >>> g.ops.append(AddS8("add", "x", "x", "y", *make_add_params(0.5, 0, 0.5, 0, 1.0, 0)))
    >>> run(g, np.array([[[3], [-4]]], dtype=np.int8))["y"][..., 0]
    array([[ 3, -4]], dtype=int8)
"""

from __future__ import annotations

import numpy as np

from . import ir
from .fixedpoint import INT32_MAX, INT32_MIN, isqrt64, requantize, rshift_round, sat

__all__ = [
    "add",
    "avgpool",
    "conv2d",
    "dequantize",
    "dequantize_outputs",
    "fastgrnn_scan",
    "in_float_layout",
    "l2norm",
    "quantize_input",
    "rnn1_projection",
    "rnnpool",
    "run",
]

_ONE = 1 << ir.STATE_FRAC_BITS
_LIM = 1 << 29


def quantize_input(x, tensor: ir.QTensor) -> np.ndarray:
    """Quantize a float image for the graph input ``tensor``.

    Args:
        x: float array or tensor ``(C, H, W)`` or ``(1, C, H, W)`` (the float model's layout).
        tensor: the graph's input :class:`~rnnpool.quant.ir.QTensor` (HWC).

    Returns:
        int8 ``(H, W, C)``: ``clamp(rint(x / scale) + zero_point, -128, 127)``.
    """
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"quantize_input takes one image, got batch of {a.shape[0]}")
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"quantize_input expects (C, H, W) or (1, C, H, W), got {a.shape}")
    a = a.transpose(1, 2, 0)
    if tuple(a.shape) != tuple(tensor.shape):
        raise ValueError(
            f"input of HWC shape {a.shape} does not match {tensor.name} {tensor.shape}")
    q = np.rint(a / tensor.scale) + tensor.zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, tensor: ir.QTensor) -> np.ndarray:
    """``scale * (q - zero_point)`` as float32 (float tensors are returned unchanged)."""
    if tensor.dtype == "float32":
        return np.asarray(q, dtype=np.float32)
    return (tensor.scale * (np.asarray(q, dtype=np.float64) - tensor.zero_point)).astype(np.float32)


def _out8(acc: np.ndarray, mult, shift, offset: int, lo: int, hi: int) -> np.ndarray:
    return np.clip(requantize(acc, mult, shift) + offset, lo, hi).astype(np.int8)


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """(Hp, Wp, C) -> (H_out, W_out, C, kh, kw) view."""
    v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))
    return v[::sh, ::sw]


def conv2d(op: ir.Conv2dS8, x: np.ndarray) -> np.ndarray:
    """Integer convolution (see :class:`~rnnpool.quant.ir.Conv2dS8`); ``x`` int8 HWC."""
    op.kind  # raises ValueError for groupings other than 1 and depthwise (C has no others)
    top, bottom, left, right = op.padding
    xo = np.asarray(x, dtype=np.int64) + op.input_offset
    xo = np.pad(xo, ((top, bottom), (left, right), (0, 0)))  # padded pixels are real zeros
    _, kh, kw, _ = op.weight.shape
    win = _windows(xo, kh, kw, *op.stride)
    w = np.asarray(op.weight, dtype=np.int64)
    if op.groups == 1:
        acc = np.einsum("yxcij,oijc->yxo", win, w, optimize=True)
    else:
        acc = np.einsum("yxcij,cij->yxc", win, w[..., 0], optimize=True)
    acc = acc + np.asarray(op.bias, dtype=np.int64)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError(f"{op.name}: accumulator exceeds int32 (C would overflow)")
    return _out8(acc, op.multiplier, op.shift, op.output_offset, op.act_min, op.act_max)


def add(op: ir.AddS8, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Integer element-wise add (see :class:`~rnnpool.quant.ir.AddS8`)."""
    if x1.shape != x2.shape:
        raise ValueError(f"{op.name}: add of shapes {x1.shape} and {x2.shape}")
    a = requantize((np.asarray(x1, np.int64) + op.input1_offset) << op.left_shift,
                   op.input1_multiplier, op.input1_shift)
    b = requantize((np.asarray(x2, np.int64) + op.input2_offset) << op.left_shift,
                   op.input2_multiplier, op.input2_shift)
    return _out8(a + b, op.output_multiplier, op.output_shift, op.output_offset,
                 op.act_min, op.act_max)


def fastgrnn_scan(proj: np.ndarray, cell: ir.FastGRNNQ) -> np.ndarray:
    """Final int16 states of FastGRNN sweeps from zero state.

    Args:
        proj: int ``(T, B, hidden)`` input projections ``W x_t`` in Q(f+14).
        cell: the cell's :class:`~rnnpool.quant.ir.FastGRNNQ`.

    Returns:
        int64 ``(B, hidden)`` holding the int16 Q14 states after ``T`` steps.
    """
    f = cell.frac_bits
    u = np.asarray(cell.weight_hh, dtype=np.int64)
    bz = np.asarray(cell.bias_gate, dtype=np.int64)
    bh = np.asarray(cell.bias_update, dtype=np.int64)
    h = np.zeros(proj.shape[1:], dtype=np.int64)
    for t in range(proj.shape[0]):
        a = proj[t] + h @ u.T
        az, ah = a + bz, a + bh
        # a and the C sums a + b + 2**f (gate), a + b + 2**(f-1) (update) must fit int32
        if (min(a.min(initial=0), az.min(initial=0), ah.min(initial=0)) < INT32_MIN
                or a.max(initial=0) > INT32_MAX or az.max(initial=0) > INT32_MAX - (1 << f)
                or ah.max(initial=0) > INT32_MAX - ((1 << f) >> 1)):
            raise OverflowError("FastGRNN pre-activation exceeds the int32 headroom")
        z = np.clip(rshift_round(az, f + 1), 0, _ONE)
        c = np.clip(rshift_round(ah, f), -_ONE, _ONE)
        co = rshift_round(cell.zeta_q * (_ONE - z), ir.STATE_FRAC_BITS) + cell.nu_q
        h = sat(rshift_round(z * h + co * c, ir.STATE_FRAC_BITS), 16)
    return h


def rnn1_projection(op: ir.RNNPoolS8, x: np.ndarray) -> np.ndarray:
    """Per-pixel RNN1 input projections, int64 ``(H, W, hidden1)`` in Q(f1+14), clamped to
    ``+-2**29`` (C: computed once per pixel by ``rnnpool_rnnpool_s8``)."""
    xo = np.asarray(x, dtype=np.int64) + op.input_offset
    acc = xo @ np.asarray(op.rnn1.weight_ih, dtype=np.int64).T
    return np.clip(requantize(acc, op.rnn1.ih_multiplier, op.rnn1.ih_shift), -_LIM, _LIM)


def rnnpool(op: ir.RNNPoolS8, x: np.ndarray) -> np.ndarray:
    """Fixed-point RNNPool (see :class:`~rnnpool.quant.ir.RNNPoolS8`); ``x`` int8 HWC."""
    h_in, w_in, _ = x.shape
    kh, kw = op.kernel_size
    sh, sw = op.stride
    top, bottom, left, right = op.padding
    hp, wp = h_in + top + bottom, w_in + left + right
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{op.name}: input {x.shape} smaller than the patch {op.kernel_size}")
    hr, wc = sh * (ho - 1) + kh, sw * (wo - 1) + kw
    p = rnn1_projection(op, x)
    if op.padding_mode == "zeros":
        pp = np.zeros((hp, wp, p.shape[2]), dtype=np.int64)
        pp[top:top + h_in, left:left + w_in] = p
    elif op.padding_mode == "replicate":
        ry = np.clip(np.arange(hp) - top, 0, h_in - 1)
        rx = np.clip(np.arange(wp) - left, 0, w_in - 1)
        pp = p[ry][:, rx]
    else:
        raise ValueError(f"{op.name}: padding_mode {op.padding_mode!r}")
    pp = pp[:hr, :wc]
    h1, h2 = op.rnn1.hidden, op.rnn2.hidden
    ow = np.arange(wo) * sw
    oh = np.arange(ho) * sh
    rows_in = np.stack([pp[:, ow + t] for t in range(kw)]).reshape(kw, hr * wo, h1)
    cols_in = np.stack([pp[oh + t, :] for t in range(kh)]).reshape(kh, ho * wc, h1)
    row_sum = fastgrnn_scan(rows_in, op.rnn1)
    col_sum = fastgrnn_scan(cols_in, op.rnn1)
    w2 = np.asarray(op.rnn2.weight_ih, dtype=np.int64)
    row_p = np.clip(row_sum @ w2.T, -_LIM, _LIM).reshape(hr, wo, h2)
    col_p = np.clip(col_sum @ w2.T, -_LIM, _LIM).reshape(ho, wc, h2)
    row_seq = np.stack([row_p[oh + t] for t in range(kh)]).reshape(kh, ho * wo, h2)
    col_seq = np.stack([col_p[:, ow + t] for t in range(kw)]).reshape(kw, ho * wo, h2)
    outs = [
        fastgrnn_scan(row_seq, op.rnn2),
        fastgrnn_scan(row_seq[::-1], op.rnn2),
        fastgrnn_scan(col_seq, op.rnn2),
        fastgrnn_scan(col_seq[::-1], op.rnn2),
    ]
    h = np.concatenate(outs, axis=1).reshape(ho, wo, 4 * h2)
    return _out8(h, op.output_multiplier, op.output_shift, op.output_offset, -128, 127)


def l2norm(op: ir.L2NormS8, x: np.ndarray) -> np.ndarray:
    """Integer L2Norm over channels (see :class:`~rnnpool.quant.ir.L2NormS8`)."""
    xc = np.asarray(x, dtype=np.int64) + op.input_offset
    ss = (xc * xc).sum(-1, keepdims=True)
    if ss.max(initial=0) >= (1 << 31):
        raise OverflowError(f"{op.name}: sum of squares exceeds int32 ({x.shape[-1]} channels)")
    r = isqrt64(ss << 16)
    inv = np.where(r > 0, (np.int64(1) << 38) // np.maximum(r, 1), 0)
    n = rshift_round(xc * inv, 16)
    return _out8(n, op.multiplier, op.shift, op.output_offset, op.act_min, op.act_max)


def avgpool(op: ir.AvgPoolS8, x: np.ndarray) -> np.ndarray:
    """Integer average pooling (see :class:`~rnnpool.quant.ir.AvgPoolS8`)."""
    xo = np.asarray(x, dtype=np.int64) + op.input_offset
    acc = _windows(xo, *op.kernel_size, *op.stride).sum(axis=(-2, -1))
    return _out8(acc, op.multiplier, op.shift, op.output_offset, op.act_min, op.act_max)


def _dequant_concat(op: ir.DequantizeF32, env: dict, g: ir.QGraph) -> np.ndarray:
    parts = []
    for i, name in enumerate(op.inputs):
        q = env[name]
        m = op.maxout_bg[i] if op.maxout_bg else 1
        if m > 1:
            grp = q.reshape(-1, m + 1)
            q = np.stack([grp[:, :m].max(1), grp[:, m]], 1)
        parts.append(dequantize(q, g.tensor(name)).reshape(-1, op.row_width))
    return np.concatenate(parts, 0)


def dequantize_outputs(g: ir.QGraph, env: dict) -> dict:
    """Float graph outputs from the int8 maps in ``env`` (e.g. read back from the C model):
    runs every :class:`~rnnpool.quant.ir.DequantizeF32` of ``g`` (max-out included).

    Returns:
        ``{output_name: float32 array}`` for the outputs produced by DequantizeF32.
    """
    return {op.output: _dequant_concat(op, env, g) for op in g.ops
            if isinstance(op, ir.DequantizeF32)}


def in_float_layout(out: np.ndarray, shape: tuple) -> np.ndarray:
    """A graph output (rows in HWC order, as :func:`dequantize_outputs` gives it) in the layout
    of the float model's output of ``shape`` (batch 1 included): an ``(N, C, H, W)`` map comes
    back from ``(H*W, C)``; ``(N, K)`` vectors and ``(N, A, K)`` head rows are the same in both
    (the converter takes no other outputs).

    >>> in_float_layout(np.arange(6).reshape(3, 2), (1, 2, 1, 3))[0, :, 0]
    array([[0, 2, 4],
           [1, 3, 5]])
    """
    shape = tuple(shape)
    if len(shape) == 4:
        n, c, h, w = shape
        return out.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return out.reshape(shape)


def _exec(op, env: dict, g: ir.QGraph) -> None:
    if isinstance(op, ir.Conv2dS8):
        env[op.output] = conv2d(op, env[op.input])
    elif isinstance(op, ir.AddS8):
        env[op.output] = add(op, env[op.input1], env[op.input2])
    elif isinstance(op, ir.RNNPoolS8):
        env[op.output] = rnnpool(op, env[op.input])
    elif isinstance(op, ir.L2NormS8):
        env[op.output] = l2norm(op, env[op.input])
    elif isinstance(op, ir.AvgPoolS8):
        env[op.output] = avgpool(op, env[op.input])
    elif isinstance(op, ir.MBConvS8):
        for sub in op.sub_ops:
            _exec(sub, env, g)
    elif isinstance(op, ir.DequantizeF32):
        env[op.output] = _dequant_concat(op, env, g)
    else:
        raise TypeError(f"the integer reference has no implementation for {type(op).__name__}")


def run(g: ir.QGraph, x: np.ndarray | dict) -> dict:
    """Execute ``g`` on int8 input(s).

    Args:
        g: the quantized graph.
        x: int8 HWC array for a single-input graph, or ``{input_name: array}``.

    Returns:
        ``{tensor_name: ndarray}`` for every tensor computed (inputs, intermediates and
        outputs; int8 maps, float32 outputs).
    """
    feeds = x if isinstance(x, dict) else {g.inputs[0]: x}
    env: dict = {}
    for name in g.inputs:
        if name not in feeds:
            raise ValueError(f"missing graph input {name!r}")
        a = np.asarray(feeds[name])
        t = g.tensor(name)
        if a.dtype != np.int8 or tuple(a.shape) != tuple(t.shape):
            raise ValueError(
                f"input {name!r} must be int8 of HWC shape {tuple(t.shape)}, "
                f"got {a.dtype} {a.shape}"
            )
        env[name] = a
    for op in g.ops:
        _exec(op, env, g)
    return env
