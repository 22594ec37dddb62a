"""The quantized-graph IR shared by the integer reference, the C kernels and the C code generator.

A :class:`QGraph` is a straight-line program over named tensors:

* every activation tensor is an ``int8`` feature map stored **HWC** (batch 1, no N axis) with one
  per-tensor affine quantization ``real = scale * (q - zero_point)`` (:class:`QTensor`);
* weights are ``int8`` with **per-output-channel symmetric** scales (zero point 0); biases are
  ``int32`` in units of ``input_scale * weight_scale[c]``;
* each op names its input and output tensors and carries everything its C kernel needs
  (integer weights, multipliers/shifts, offsets, clamps), so code generation never recomputes
  a quantization parameter;
* ``ops`` are in execution order; ``inputs`` name the graph inputs (int8 HWC maps), ``outputs``
  name the graph outputs (``float32`` tensors produced by :class:`DequantizeF32`, or int8 maps).

Conventions (identical in :mod:`rnnpool.quant.reference` and ``csrc/``):

* ``offset`` fields are **negated** zero points for inputs (``input_offset = -zp_in``, added to
  each input value) and plain zero points for outputs (``output_offset = zp_out``), as in
  CMSIS-NN.
* Rescaling always goes through :func:`rnnpool.quant.fixedpoint.requantize` (C:
  ``rnnpool_requantize``): ``(multiplier, shift)`` from :func:`quantize_multiplier` represent
  ``multiplier * 2**(shift - 31)``; ``shift > 0`` is a left shift.
* ReLU / ReLU6 are folded into ``act_min`` / ``act_max`` (int8 clamp after adding
  ``output_offset``); BatchNorm is folded into conv weights and bias before quantization.
* ``padding`` is ``(top, bottom, left, right)`` in input pixels; padded pixels hold the input
  zero point (i.e. real zero).
* Weight layouts in the IR: ``Conv2dS8.weight`` is ``(C_out, KH, KW, C_in // groups)`` (OHWI).
  The C kernels' layouts are given by :func:`c_weight` (depthwise kernels take ``(KH, KW, C)``).

RNNPool runs in fixed point (:class:`RNNPoolS8`, :class:`FastGRNNQ`): int8 input, int16 hidden
state in Q14 (``1.0 == 16384``), hard sigmoid / hard tanh. For a cell with ``frac_bits = f``
the pre-activation ``a = W x + U h`` lives in an ``int32`` with ``f + 14`` fractional bits;
``U`` (and RNN2's ``W``) are ``int16`` with ``f`` fractional bits, so ``U h`` accumulates
directly in that format. One step (``rdiv(v, n)`` = round-half-up arithmetic shift
``(v + 2**(n-1)) >> n``)::

    a  = proj + U h                           # proj = W x (precomputed, Q(f+14))
    z  = clamp(rdiv(a + bias_gate, f + 1), 0, 16384)       # bias_gate holds b_z + 1
    c  = clamp(rdiv(a + bias_update, f), -16384, 16384)
    co = rdiv(zeta_q * (16384 - z), 14) + nu_q              # zeta_q = 16384, nu_q = 0: 16384 - z
    h' = sat16(rdiv(z * h + co * c, 14))

RNN1's input projection is ``proj = clamp(requantize(sum_i W[j, i] (x_i + input_offset),
ih_multiplier[j], ih_shift[j]), -2**29, 2**29)`` with ``int8`` per-row weights; padded pixels give
``proj = 0``. RNN2's input is RNN1's int16 summaries and its projection is ``W2 @ s`` (int16
weights with the same ``frac_bits`` as ``U2``), clamped to ``+-2**29`` likewise. The output
pixel is ``[row-fwd, row-rev, col-fwd, col-rev]`` final states, each requantized to int8 with
``output_multiplier/shift`` plus ``output_offset``.

Example::

    >>> import numpy as np
    >>> g = QGraph(inputs=["x"], outputs=["y"])
    >>> _ = g.add_tensor(QTensor("x", (4, 4, 3), "int8", 0.02, -128))
    >>> _ = g.add_tensor(QTensor("y", (4, 4, 3), "int8", 0.04, -128))
    >>> g.ops.append(AddS8("add", "x", "x", "y",
    ...                    *make_add_params(0.02, -128, 0.02, -128, 0.04, -128)))
    >>> g.validate()
    >>> [op.kind for op in g.ops]
    ['add']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

from .fixedpoint import quantize_multiplier

__all__ = [
    "ADD_LEFT_SHIFT",
    "STATE_FRAC_BITS",
    "AddS8",
    "AvgPoolS8",
    "Conv2dS8",
    "DequantizeF32",
    "FastGRNNQ",
    "L2NormS8",
    "MBConvS8",
    "QGraph",
    "QOp",
    "QTensor",
    "RNNPoolS8",
    "c_weight",
    "fuse_mbconv",
    "make_add_params",
    "scratch_bytes",
]

#: Fractional bits of the int16 RNN state (and of gates / candidates): 1.0 == 2**14.
STATE_FRAC_BITS = 14
#: Headroom shift of :class:`AddS8` (TFLite uses 20 for int8 add).
ADD_LEFT_SHIFT = 20


@dataclass
class QTensor:
    """A tensor of the graph.

    Attributes:
        name: unique name (a C identifier-safe string).
        shape: ``(H, W, C)`` for int8 feature maps (HWC, batch 1); ``(N, K)`` for float outputs.
        dtype: ``"int8"`` or ``"float32"``.
        scale: real value of one step (``real = scale * (q - zero_point)``); 1.0 for float.
        zero_point: int8 zero point in ``[-128, 127]``; 0 for float.
    """

    name: str
    shape: tuple
    dtype: str = "int8"
    scale: float = 1.0
    zero_point: int = 0

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.numel * (1 if self.dtype == "int8" else 4)


class _OneInOneOut:
    """Ops that read one tensor (``self.input``) and write one (``self.output``)."""

    @property
    def inputs(self) -> list[str]:
        return [self.input]  # type: ignore[attr-defined]

    @property
    def outputs(self) -> list[str]:
        return [self.output]  # type: ignore[attr-defined]


@dataclass
class Conv2dS8(_OneInOneOut):
    """Convolution (regular, depthwise when ``groups == C_in == C_out``, 1x1 pointwise).

    ``out[y, x, o] = clamp(requantize(bias[o] + sum w[o, ky, kx, i] * (in[..] + input_offset),
    multiplier[o], shift[o]) + output_offset, act_min, act_max)``.

    Attributes:
        weight: int8 ``(C_out, KH, KW, C_in // groups)``, per-output-channel symmetric.
        bias: int32 ``(C_out,)`` in units of ``in_scale * w_scale[o]``.
        stride: ``(sh, sw)``. padding: ``(top, bottom, left, right)``. groups: 1 or C_in.
        multiplier, shift: int32 ``(C_out,)`` from ``in_scale * w_scale[o] / out_scale``.
        input_offset: ``-zp_in``. output_offset: ``zp_out``. act_min, act_max: int8 clamp.
    """

    name: str
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple
    padding: tuple
    groups: int
    multiplier: np.ndarray
    shift: np.ndarray
    input_offset: int
    output_offset: int
    act_min: int = -128
    act_max: int = 127

    @property
    def kind(self) -> str:
        c_out, kh, kw, cin_g = self.weight.shape
        if self.groups > 1:
            if cin_g != 1 or self.groups != c_out:
                raise ValueError(f"{self.name}: only depthwise (groups == C_in == C_out) grouping")
            return "depthwise_conv2d"
        if (kh, kw) == (1, 1) and tuple(self.stride) == (1, 1) and not any(self.padding):
            return "conv2d_1x1"
        return "conv2d"


@dataclass
class AddS8:
    """Element-wise ``out = in1 + in2`` of two same-shape int8 maps (TFLite int8 add).

    ``a = requantize((in1 + input1_offset) << left_shift, input1_multiplier, input1_shift)``,
    likewise ``b``; ``out = clamp(requantize(a + b, output_multiplier, output_shift)
    + output_offset, act_min, act_max)``. Build the parameters with :func:`make_add_params`.
    """

    name: str
    input1: str
    input2: str
    output: str
    input1_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_offset: int
    input2_multiplier: int
    input2_shift: int
    left_shift: int
    output_multiplier: int
    output_shift: int
    output_offset: int
    act_min: int = -128
    act_max: int = 127

    kind = "add"

    @property
    def inputs(self) -> list[str]:
        return [self.input1, self.input2]

    @property
    def outputs(self) -> list[str]:
        return [self.output]


def make_add_params(s1: float, zp1: int, s2: float, zp2: int, s_out: float, zp_out: int) -> tuple:
    """Integer parameters of :class:`AddS8` from the three tensors' scales and zero points.

    Returns the tuple ``(input1_offset, input1_multiplier, input1_shift, input2_offset,
    input2_multiplier, input2_shift, left_shift, output_multiplier, output_shift,
    output_offset)`` in :class:`AddS8` field order.
    """
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * s_out))
    return (-int(zp1), m1, sh1, -int(zp2), m2, sh2, ADD_LEFT_SHIFT, mo, sho, int(zp_out))


@dataclass
class FastGRNNQ:
    """Fixed-point parameters of one FastGRNN cell (see the module docstring for the step).

    Attributes:
        weight_ih: RNN1: int8 ``(hidden, input)`` per-row symmetric, used with ``ih_multiplier``
            / ``ih_shift`` (int32 ``(hidden,)``) to produce Q(f+14) projections. RNN2: int16
            ``(hidden, input)`` with ``frac_bits`` fractional bits, ``ih_multiplier`` /
            ``ih_shift`` are ``None``.
        weight_hh: int16 ``(hidden, hidden)`` with ``frac_bits`` fractional bits.
        bias_gate: int32 ``(hidden,)``: ``round((b_z + 1) * 2**(f + 14))``.
        bias_update: int32 ``(hidden,)``: ``round(b_h * 2**(f + 14))``.
        frac_bits: ``f``.
        zeta_q, nu_q: ``round(zeta * 2**14)``, ``round(nu * 2**14)`` (16384 and 0 in the paper).
    """

    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias_gate: np.ndarray
    bias_update: np.ndarray
    frac_bits: int
    zeta_q: int = 1 << STATE_FRAC_BITS
    nu_q: int = 0
    ih_multiplier: np.ndarray | None = None
    ih_shift: np.ndarray | None = None

    @property
    def hidden(self) -> int:
        return int(self.weight_hh.shape[0])


@dataclass
class RNNPoolS8(_OneInOneOut):
    """RNNPool layer in fixed point. Input int8 HWC ``(H, W, C)``, output int8 ``(H_out, W_out,
    4 * hidden2)`` with channels ``[row-fwd, row-rev, col-fwd, col-rev]``.

    Attributes:
        kernel_size, stride: ``(r, c)`` and ``(sh, sw)``. padding: ``(top, bottom, left, right)``.
        padding_mode: ``"zeros"`` (padded pixels have projection 0) or ``"replicate"``.
        input_offset: ``-zp_in``. rnn1, rnn2: :class:`FastGRNNQ`.
        output_multiplier, output_shift: per-tensor, Q14 state -> output scale.
        output_offset: ``zp_out``.
    """

    name: str
    input: str
    output: str
    kernel_size: tuple
    stride: tuple
    padding: tuple
    padding_mode: str
    input_offset: int
    rnn1: FastGRNNQ
    rnn2: FastGRNNQ
    output_multiplier: int
    output_shift: int
    output_offset: int

    kind = "rnnpool"


@dataclass
class L2NormS8(_OneInOneOut):
    """S3FD L2Norm: ``out[c] = weight[c] * x[c] / ||x||_2`` over channels, per pixel.

    Integer semantics per pixel: ``xc = x + input_offset``; ``ss = sum xc**2`` (int32);
    ``r = isqrt(ss << 16)``; ``inv = 2**38 // r`` (``ss == 0``: output ``output_offset``);
    ``n = rdiv(xc * inv, 16)`` (Q14 of ``xc / ||xc||``); ``out = clamp(requantize(n,
    multiplier[c], shift[c]) + output_offset, act_min, act_max)`` where ``multiplier[c]``
    carries ``weight[c] * 2**-14 / out_scale`` (its sign too).
    """

    name: str
    input: str
    output: str
    input_offset: int
    multiplier: np.ndarray
    shift: np.ndarray
    output_offset: int
    act_min: int = -128
    act_max: int = 127

    kind = "l2norm"


@dataclass
class AvgPoolS8(_OneInOneOut):
    """Average pooling (global when ``kernel_size`` covers the map), no padding.

    ``out = clamp(requantize(sum(x + input_offset), multiplier, shift) + output_offset, ...)``
    where ``multiplier/shift`` carry ``in_scale / (KH * KW * out_scale)``.
    """

    name: str
    input: str
    output: str
    kernel_size: tuple
    stride: tuple
    input_offset: int
    multiplier: int
    shift: int
    output_offset: int
    act_min: int = -128
    act_max: int = 127

    kind = "avgpool"


@dataclass
class MBConvS8(_OneInOneOut):
    """A fused inverted-residual block for the row-streaming kernel ``rnnpool_mbconv_s8``.

    Computes exactly ``expand`` (optional 1x1) -> ``depthwise`` (3x3) -> ``project`` (1x1) ->
    optional ``add`` with the block input, with the same intermediate int8 tensors as the
    unfused ops (so results are bit-identical), but only 3 rows of the expanded map live at a
    time. ``input`` / ``output`` are the block's; the sub-ops' intermediate tensors stay in
    :attr:`QGraph.tensors` for their quantization parameters but need no arena space.
    """

    name: str
    input: str
    output: str
    expand: Conv2dS8 | None
    depthwise: Conv2dS8
    project: Conv2dS8
    add: AddS8 | None = None

    kind = "mbconv"

    @property
    def sub_ops(self) -> list:
        return [op for op in (self.expand, self.depthwise, self.project, self.add)
                if op is not None]


@dataclass
class DequantizeF32:
    """Graph output: int8 maps -> one float32 tensor ``(N, K)``.

    Each input ``(H, W, C)`` (HWC order, ``C`` a multiple of ``row_width``) is flattened and
    viewed as ``(H * W * C // K, K)``, dequantized with its own scale / zero point, and the parts
    are concatenated along the first axis: this is ``torch.cat([t.permute(0, 2, 3, 1)
    .reshape(N, -1, K) ...], 1)`` of a detection head.

    ``maxout_bg[i] = m > 1`` (only with ``K == 2``) marks S3FD's max-out background on input
    ``i``: its channels are groups of ``m + 1`` logits per anchor (``m`` background, 1 face);
    each group gives the row ``(max of the m background logits, face logit)``. The max is taken
    on the int8 values (same scale, so it equals the max of the dequantized values).
    """

    name: str
    inputs: list
    output: str
    row_width: int
    maxout_bg: list | None = None

    kind = "dequantize"

    @property
    def outputs(self) -> list[str]:
        return [self.output]


QOp = Union[Conv2dS8, AddS8, RNNPoolS8, L2NormS8, AvgPoolS8, MBConvS8, DequantizeF32]


@dataclass
class QGraph:
    """A quantized model: tensors, ordered ops, inputs and outputs (see the module docstring).

    Attributes:
        inputs: names of the int8 input tensors (HWC).
        outputs: names of the output tensors (float32 from :class:`DequantizeF32`, or int8).
        tensors: name -> :class:`QTensor`.
        ops: ops in execution order.
        meta: free-form information (model name, calibration details, source node names).
    """

    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    tensors: dict = field(default_factory=dict)
    ops: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def add_tensor(self, t: QTensor) -> QTensor:
        if t.name in self.tensors:
            raise ValueError(f"tensor {t.name!r} already exists")
        self.tensors[t.name] = t
        return t

    def tensor(self, name: str) -> QTensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in the graph") from None

    def validate(self) -> None:
        """Check that every op reads tensors defined earlier and every output is produced."""
        defined = set(self.inputs)
        for name in self.inputs:
            self.tensor(name)
        for op in self.ops:
            for name in op.inputs:
                if name not in defined:
                    raise ValueError(f"op {op.name!r} reads {name!r} before it is produced")
            for name in op.outputs:
                self.tensor(name)
                defined.add(name)
        for name in self.outputs:
            if name not in defined:
                raise ValueError(f"graph output {name!r} is never produced")

    def summary(self) -> str:
        """One line per op: kind, name, inputs -> outputs with shapes."""
        lines = []
        for op in self.ops:
            ins = ", ".join(f"{n}{tuple(self.tensor(n).shape)}" for n in op.inputs)
            outs = ", ".join(f"{n}{tuple(self.tensor(n).shape)}" for n in op.outputs)
            lines.append(f"{op.kind:16s} {op.name}: {ins} -> {outs}")
        return "\n".join(lines)


def fuse_mbconv(g: QGraph) -> QGraph:
    """A copy of ``g`` with every ``[1x1 expand ->] depthwise -> 1x1 project [-> add with the
    block input]`` chain whose intermediates have a single consumer replaced by one
    :class:`MBConvS8` (row-streamed in C by ``rnnpool_mbconv_s8``). Results are unchanged.

    The fused op's ``add`` (if any) is normalised so that ``input1`` is the block input.
    """
    import copy
    import dataclasses

    consumers: dict = {}
    for op in g.ops:
        for name in op.inputs:
            consumers.setdefault(name, []).append(op)
    for name in g.outputs:
        consumers.setdefault(name, []).append(None)
    producer = {name: op for op in g.ops for name in op.outputs}

    def only_consumer(name):
        c = consumers.get(name, [])
        return c[0] if len(c) == 1 else None

    fused: dict = {}  # id(last component) -> MBConvS8
    absorbed: set = set()
    for d in g.ops:
        if not isinstance(d, Conv2dS8) or d.kind != "depthwise_conv2d" or id(d) in absorbed:
            continue
        e = producer.get(d.input)
        if not (isinstance(e, Conv2dS8) and e.kind == "conv2d_1x1"
                and only_consumer(e.output) is d):
            e = None
        block_in = e.input if e is not None else d.input
        p = only_consumer(d.output)
        if not (isinstance(p, Conv2dS8) and p.kind == "conv2d_1x1"):
            continue
        a = only_consumer(p.output)
        if (isinstance(a, AddS8) and block_in in (a.input1, a.input2)
                and p.output in (a.input1, a.input2)):
            if a.input1 != block_in:
                a = dataclasses.replace(
                    a, input1=a.input2, input2=a.input1,
                    input1_offset=a.input2_offset, input1_multiplier=a.input2_multiplier,
                    input1_shift=a.input2_shift, input2_offset=a.input1_offset,
                    input2_multiplier=a.input1_multiplier, input2_shift=a.input1_shift)
        else:
            a = None
        last = a if a is not None else p
        out = last.output
        parts = [x for x in (e, d, p) if x is not None]
        absorbed.update(id(x) for x in parts)
        if a is not None:
            absorbed.add(id(only_consumer(p.output)))
        fused[id(only_consumer(p.output)) if a is not None else id(p)] = MBConvS8(
            f"mbconv_{out}", block_in, out, e, d, p, a)
    ops = []
    for op in g.ops:
        if id(op) in fused:
            ops.append(fused[id(op)])
        elif id(op) not in absorbed:
            ops.append(op)
    new = QGraph(list(g.inputs), list(g.outputs), dict(g.tensors), ops, copy.deepcopy(g.meta))
    new.validate()
    return new


def scratch_bytes(op, g: QGraph | None = None) -> int:
    """Scratch bytes the op's C kernel needs (exactly its ``*_get_buffer_size``); 0 if none.

    ``g`` gives tensor shapes (required for ``rnnpool`` and ``mbconv``).
    """
    if isinstance(op, RNNPoolS8):
        if g is None:
            raise ValueError("scratch_bytes of an RNNPool op needs the graph for its shapes")
        ho, wo, _ = g.tensor(op.output).shape
        kh, kw = op.kernel_size
        sh, sw = op.stride
        h1, h2 = op.rnn1.hidden, op.rnn2.hidden
        hmax = max(h1, h2)
        wc = sw * (wo - 1) + kw
        nb = (kh + sh - 1) // sh

        def a4(n):
            return (n + 3) & ~3

        return (wc * h1 * 4 + kh * wo * h2 * 4 + wc * h2 * 4 + kh * h2 * 4
                + a4(nb * wc * h1 * 2) + a4(2 * hmax * 2))
    if isinstance(op, MBConvS8):
        if g is None:
            raise ValueError("scratch_bytes of an MBConv op needs the graph for its shapes")
        _, w_in, _ = g.tensor(op.input).shape
        _, w_out, _ = g.tensor(op.output).shape
        hidden = op.depthwise.weight.shape[0]
        kh = op.depthwise.weight.shape[1]
        ring = kh * w_in * hidden if op.expand is not None else 0
        return ((ring + 3) & ~3) + ((w_out * hidden + 3) & ~3)
    return 0


def c_weight(op: Conv2dS8) -> np.ndarray:
    """The weight array in the layout the C kernel for ``op`` expects (C-contiguous int8).

    ``conv2d``: ``(C_out, KH, KW, C_in)``; ``conv2d_1x1``: ``(C_out, C_in)``;
    ``depthwise_conv2d``: ``(KH, KW, C)``.
    """
    w = np.asarray(op.weight, dtype=np.int8)
    if op.kind == "depthwise_conv2d":
        return np.ascontiguousarray(w[:, :, :, 0].transpose(1, 2, 0))
    if op.kind == "conv2d_1x1":
        return np.ascontiguousarray(w.reshape(w.shape[0], -1))
    return np.ascontiguousarray(w)
