"""Pure functions behind :class:`~rnnpool.nn.FastGRNNCell` and :class:`~rnnpool.nn.RNNPool2d`.

Every hyper-parameter is an argument; the modules hold configuration and parameters and call
into these. See the module classes for the mathematical definitions.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections import OrderedDict
from functools import partial
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _native

__all__ = [
    "FastGRNNParams",
    "fastgrnn_cell",
    "rnnpool2d",
    "rnnpool2d_padding",
    "rnnpool2d_output_size",
    "hard_sigmoid",
    "hard_tanh",
    "GATES",
    "UPDATES",
]

IntPair = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int], str]


def hard_sigmoid(x: Tensor) -> Tensor:
    """``clamp((x + 1) / 2, 0, 1)``: the piecewise-linear gate used by integer kernels."""
    return torch.clamp((x + 1.0) * 0.5, 0.0, 1.0)


def hard_tanh(x: Tensor) -> Tensor:
    """``clamp(x, -1, 1)``."""
    return torch.clamp(x, -1.0, 1.0)


GATES = {"sigmoid": torch.sigmoid, "hard_sigmoid": hard_sigmoid}
UPDATES = {"tanh": torch.tanh, "hard_tanh": hard_tanh}


class FastGRNNParams(NamedTuple):
    """Effective (dense) parameters of one FastGRNN cell.

    Attributes:
        weight_ih: ``(hidden, input)`` input matrix ``W`` (low-rank factors already multiplied).
        weight_hh: ``(hidden, hidden)`` recurrent matrix ``U``.
        bias_gate: ``(hidden,)`` gate bias ``b_z``.
        bias_update: ``(hidden,)`` update bias ``b_h``.
        zeta: scalar tensor or float; ``1.0`` in the paper.
        nu: scalar tensor or float; ``0.0`` in the paper.
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        update: ``"tanh"`` or ``"hard_tanh"``.
    """

    weight_ih: Tensor
    weight_hh: Tensor
    bias_gate: Tensor
    bias_update: Tensor
    zeta: Union[Tensor, float] = 1.0
    nu: Union[Tensor, float] = 0.0
    gate: str = "sigmoid"
    update: str = "tanh"


def _wants_grad(*values) -> bool:
    """True when grad mode is on and one of ``values`` is a tensor that requires a gradient:
    whether an operation on them needs an autograd node (and what its backward keeps)."""
    return torch.is_grad_enabled() and any(isinstance(v, Tensor) and v.requires_grad
                                           for v in values)


def _is_plain(p: FastGRNNParams) -> bool:
    """True when ``zeta = 1, nu = 0`` are fixed numbers, so ``h' = lerp(h~, h, z)``."""
    return (
        not isinstance(p.zeta, Tensor)
        and not isinstance(p.nu, Tensor)
        and float(p.zeta) == 1.0
        and float(p.nu) == 0.0
    )


def fastgrnn_cell(x: Tensor, h: Tensor, params: FastGRNNParams) -> Tensor:
    """One FastGRNN step (see :class:`~rnnpool.nn.FastGRNNCell`).

    Args:
        x: ``(B, input)`` input.
        h: ``(B, hidden)`` previous state.
        params: the cell's :class:`FastGRNNParams`.

    Returns:
        ``(B, hidden)`` new state ``z * h + (zeta * (1 - z) + nu) * h~``.
    """
    pre = F.linear(x, params.weight_ih) + F.linear(h, params.weight_hh)
    z = GATES[params.gate](pre + params.bias_gate)
    h_tilde = UPDATES[params.update](pre + params.bias_update)
    return z * h + (params.zeta * (1.0 - z) + params.nu) * h_tilde


class _CellMatrices(NamedTuple):
    """A cell's matrices for column-major batched sweeps (states are ``(hidden, B)``).

    FastGRNN's gate and update share one pre-activation, so a step is
    ``a = w x + b + u h``, ``z = gate(a)``, ``c = update(kappa a + ub)``: one input product and
    one recurrent product of ``hidden`` rows (``kappa = 1``, ``ub = b_h - b_z`` for the cell as
    written). ``h0`` is the initial state as a ``(hidden, 1)`` column, or ``None`` for zero.

    For the paper's cell (sigmoid, tanh, ``zeta = 1``, ``nu = 0``) the sweep runs on
    ``g = (h + 1) / 2``: with ``tanh(a) = 2 sigmoid(2a) - 1`` the step becomes
    ``g' = lerp(sigmoid(a_h), g, z)``, both non-linearities are sigmoids (tanh is several times
    slower) and no op is spent on ``2 s - 1``. The changes of variable are folded into the
    matrices: ``u = 2U``, ``b = b_z - U 1``, ``kappa = 2``, ``ub = 2 (b_h - b_z)``.
    """

    w: Tensor  # (h, in)
    b: Tensor  # (h,)
    ub: Tensor  # (h,)
    u: Tensor  # (h, h)
    kappa: float
    h0: Optional[Tensor]  # (h, 1)
    sigmoid_form: bool


def _sigmoid_form(u: Tensor, bz: Tensor, bh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``U, b_z, b_h`` -> ``2 U, b_z - U 1, 2 (b_h - b_z)``: the paper's cell's matrices for
    sweeps on ``g = (h + 1) / 2`` (see :class:`_CellMatrices`)."""
    return 2.0 * u, bz - u.sum(1), 2.0 * (bh - bz)


class _SigmoidForm(torch.autograd.Function):
    """:func:`_sigmoid_form` as one autograd node: as five torch ops their ten small nodes took
    0.35-0.7 ms of a layer's backward at the paper's shapes."""

    @staticmethod
    def forward(ctx, u, bz, bh):  # type: ignore[override]
        return _sigmoid_form(u, bz, bh)

    @staticmethod
    def backward(ctx, du, db, dub):  # type: ignore[override]
        # (Unused outputs arrive as zeros.) d/dU of b_z - U 1 is -1 along each row.
        return 2.0 * du - db[:, None], db - 2.0 * dub, 2.0 * dub


def _runs_as_sigmoids(p: FastGRNNParams) -> bool:
    """Whether the cell is the paper's (sigmoid, tanh, fixed ``zeta = 1, nu = 0``), which the
    sweeps run in the all-sigmoid form of :class:`_CellMatrices`."""
    return p.gate == "sigmoid" and p.update == "tanh" and _is_plain(p)


def _cell_matrices(p: FastGRNNParams, traced: bool = False) -> _CellMatrices:
    u = p.weight_hh
    if _runs_as_sigmoids(p):
        if not traced and _wants_grad(u, p.bias_gate, p.bias_update):
            u2, b, ub = _SigmoidForm.apply(u, p.bias_gate, p.bias_update)
        else:  # no gradient wanted (or a tracer): plain ops, no node
            u2, b, ub = _sigmoid_form(u, p.bias_gate, p.bias_update)
        return _CellMatrices(p.weight_ih, b, ub, u2, 2.0, u.new_full((u.shape[0], 1), 0.5), True)
    return _CellMatrices(p.weight_ih, p.bias_gate, p.bias_update - p.bias_gate, u, 1.0, None,
                         False)


def _scan_forward(src: Tensor, idx: Tensor, p: FastGRNNParams, m: _CellMatrices, save: bool):
    """The recurrence. Returns the final state and, if ``save``, per-step ``(h_prev, z, c)``."""
    if m.sigmoid_form:
        gate = update = torch.sigmoid
    else:
        gate, update = GATES[p.gate], UPDATES[p.update]
    plain = m.sigmoid_form or _is_plain(p)
    ub = m.ub[:, None]
    h = m.h0
    saved = []
    for t in range(idx.shape[0]):
        # Gathered one step at a time: a whole-sweep buffer is T times larger, and buffers past
        # the allocator's reuse threshold cost page faults on every call.
        a = src.index_select(0, idx[t]).t()  # rows gather fast; addmm reads the transpose
        if h is not None:
            if h.shape[1] == 1:  # the constant initial column, broadcast over the batch
                a = a + m.u @ h
                h = h.expand_as(a)
            else:
                a = torch.addmm(a, m.u, h)
        z, c = gate(a), update(torch.add(ub, a, alpha=m.kappa))
        if h is None:  # h = 0: z * h vanishes
            h_new = (1.0 - z) * c if plain else (p.zeta * (1.0 - z) + p.nu) * c
        else:
            h_new = torch.lerp(c, h, z) if plain else z * h + (p.zeta * (1.0 - z) + p.nu) * c
        if save:
            saved.append((h, z, c))
        h = h_new
    assert h is not None
    return (2.0 * h - 1.0 if m.sigmoid_form else h), saved


class _ScanFunction(torch.autograd.Function):
    """The recurrence with a hand-written backward.

    Autograd's generic backward of the step loop spends most of its time assembling per-step
    gradients (stack/cat of views, zero-filled slices); this one writes them straight into the
    input-gradient buffer. Derivatives come from the saved activations: ``sigmoid' = z (1 - z)``,
    ``tanh' = 1 - c^2``, hard variants ``1/2`` / ``1`` inside their linear range.
    """

    @staticmethod
    def forward(ctx, src, u, ub, zeta, nu, idx, p, m):  # type: ignore[override]
        h, saved = _scan_forward(src, idx, p, m, save=True)
        ctx.p, ctx.m, ctx.first_zero, ctx.src_shape = p, m, saved[0][0] is None, src.shape
        flat = [t for step in saved for t in step if t is not None]
        ctx.save_for_backward(idx, u, *flat)
        return h

    @staticmethod
    @once_differentiable  # the saved activations are treated as constants
    def backward(ctx, gh):  # type: ignore[override]
        p, m = ctx.p, ctx.m
        idx, u, *flat = ctx.saved_tensors
        if ctx.first_zero:
            flat = [None] + flat
        steps = [flat[i : i + 3] for i in range(0, len(flat), 3)]
        plain = m.sigmoid_form or _is_plain(p)
        if m.sigmoid_form:
            gh = 2.0 * gh  # h = 2 g - 1
        dsrc = gh.new_zeros(ctx.src_shape[1], ctx.src_shape[0])  # transposed: column scatter
        daz, dah = gh.new_empty(gh.shape), gh.new_empty(gh.shape)
        du, dub = torch.zeros_like(u), gh.new_zeros(gh.shape[0])
        dzeta = gh.new_zeros(()) if isinstance(p.zeta, Tensor) else None
        dnu = gh.new_zeros(()) if isinstance(p.nu, Tensor) else None
        for t in range(len(steps) - 1, -1, -1):
            h_prev, z, c = steps[t]
            gz = gh * z  # dL/dh_prev through the direct path
            if plain:
                dz = gh * (c.neg() if h_prev is None else h_prev - c)
                dc = gh - gz
            else:
                zc = p.zeta * c
                dz = gh * (zc.neg() if h_prev is None else h_prev - zc)
                dc = gh * (p.zeta * (1.0 - z) + p.nu)
                if dzeta is not None:
                    dzeta = dzeta + ((gh - gz) * c).sum()
                if dnu is not None:
                    dnu = dnu + (gh * c).sum()
            if m.sigmoid_form or p.gate == "sigmoid":
                torch.ops.aten.sigmoid_backward.grad_input(dz, z, grad_input=daz)
            else:
                torch.mul(dz, ((z > 0) & (z < 1)).to(dz.dtype) * 0.5, out=daz)
            if m.sigmoid_form:
                torch.ops.aten.sigmoid_backward.grad_input(dc, c, grad_input=dah)
            elif p.update == "tanh":
                torch.ops.aten.tanh_backward.grad_input(dc, c, grad_input=dah)
            else:
                torch.mul(dc, (c.abs() < 1).to(dc.dtype), out=dah)
            dub += dah.sum(1)
            da = torch.add(daz, dah, alpha=m.kappa)  # the shared pre-activation's gradient
            dsrc.index_add_(1, idx[t], da)
            if h_prev is not None:
                du.addmm_(da, h_prev.t())
                gh = torch.addmm(gz, u.t(), da)
        return dsrc.t(), du, dub, dzeta, dnu, None, None, None


BACKENDS = ("auto", "native", "torch")


def _use_native(x: Tensor, cells: Sequence[FastGRNNParams], backend: str, traced: bool) -> bool:
    """Whether the compiled kernels run the sweeps of ``cells`` over ``x`` (``traced``:
    :func:`_traced`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    if traced:
        reason: Optional[str] = ("it does not run under tracing, ONNX export, torch.compile or "
                                 "torch.func transforms")
    else:
        reason = next(filter(None, (_native.unsupported(x, p.weight_hh.shape[0], p.gate, p.update)
                                    for p in cells)), None)
    if backend == "native" and reason:
        raise RuntimeError(f"backend='native' cannot run this call: {reason}")
    return reason is None


def _scan(src: Tensor, idx: Tensor, p: FastGRNNParams, m: _CellMatrices) -> Tensor:
    """Final states of FastGRNN sweeps from precomputed input projections, in torch ops.

    Args:
        src: ``(P, h)`` projected inputs ``x @ m.w^T + m.b``, one row per input vector.
        idx: ``(T, B)`` int64: sweep ``b`` reads row ``idx[t, b]`` at step ``t``.

    Returns:
        ``(B, h)``.
    """
    # Inductor differentiates the plain loop itself.
    if _wants_grad(src, m.u, m.ub, p.zeta, p.nu) and not _traced():
        return _ScanFunction.apply(src, m.u, m.ub, p.zeta, p.nu, idx, p, m).t()
    return _scan_forward(src, idx, p, m, save=False)[0].t()


def _scan_groups(src: Tensor, families: list[tuple[Tensor, Tensor]], p: FastGRNNParams,
                 m: _CellMatrices) -> Tensor:
    """Run families of sweeps over the projected inputs ``src`` in torch ops.

    Args:
        src: ``(P, h)`` projected inputs ``x W^T + m.b``.
        families: ``(idx, groups)``: ``idx`` is ``(T, B)`` int64 (sweep ``b`` reads row
            ``idx[t, b]`` at step ``t``); ``groups`` (what the compiled kernel runs in parallel,
            see :func:`rnnpool.nn._native.scan`) are not used here.

    Returns:
        ``(sum B, h)`` final states, families in order.
    """
    # One batched scan per distinct T: fewer, larger torch ops.
    if len({idx.shape[0] for idx, _ in families}) == 1:
        return _scan(src, torch.cat([idx for idx, _ in families], 1), p, m)
    return torch.cat([_scan(src, idx, p, m) for idx, _ in families], 0)


def _project_and_scan(inputs: Tensor, families: list[tuple[Tensor, Tensor]], p: FastGRNNParams,
                      m: _CellMatrices, traced: bool) -> Tensor:
    """Project every input row (``(P, in)`` -> ``(P, h)``, bias included) and run the sweeps
    over it in torch ops.

    ``inputs`` is either ``(P, in)`` rows or an ``(N, in, H, W)`` map, whose rows are its pixels
    ``(i, y, x)`` in that order followed by one zero row (what the sweeps read in the padding).
    ``traced``: :func:`_traced`.
    """
    if inputs.dim() == 4:
        rows = _pixel_projection(inputs, m.w, traced) + m.b
    else:
        rows = _project(inputs, m.w, m.b, traced)
    return _scan_groups(rows, families, p, m)


class _PixelProjection(torch.autograd.Function):
    """``(N, C, H, W)``, ``(K, C)`` -> ``(N*H*W + 1, K)``: ``W x`` of every pixel, then a zero
    row. The products read the map in place (no channels-last copy), and the backward returns
    the input's gradient in its own layout."""

    @staticmethod
    def forward(ctx, x, w):  # type: ignore[override]
        ctx.save_for_backward(x, w)
        n, c, h, wd = x.shape
        out = x.new_empty(n * h * wd + 1, w.shape[0])
        torch.matmul(x.reshape(n, c, h * wd).transpose(1, 2), w.t(),
                     out=out[:-1].view(n, h * wd, w.shape[0]))
        out[-1].zero_()
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, w = ctx.saved_tensors
        return (*_pixel_projection_grads(g, x, w, *ctx.needs_input_grad, native=False),)


def _pixel_projection_grads(g: Tensor, x: Tensor, w: Tensor, need_x: bool, need_w: bool,
                            native: bool) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """``dx`` (a map) and ``dW`` of the pixel projection for ``g`` ``(N*H*W + 1, K)``, each
    when asked for; ``native``: ``dx`` in the compiled kernel."""
    n, c, h, wd = x.shape
    d = g[:-1].view(n, h * wd, w.shape[0])
    dx = dw = None
    if need_x and native:
        dx = _native.project_backward(g[:-1], x, w, need_dx=True, need_dw=False)[0]
    elif need_x:
        # bmm writes (N, C, H*W) directly; matmul would compute it transposed, then copy.
        dx = torch.bmm(w.t().expand(n, c, w.shape[0]), d.transpose(1, 2)).view(n, c, h, wd)
    if need_w:
        dw = torch.matmul(d.transpose(1, 2), x.reshape(n, c, h * wd).transpose(1, 2)).sum(0)
    return dx, dw


def _pixel_rows(x: Tensor) -> Tensor:
    """``(N, C, H, W)`` -> ``(N*H*W + 1, C)``: the pixels as rows, then a zero row (in torch
    ops, for tracers; the compiled kernel reads the map itself)."""
    rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    return torch.cat([rows, rows.new_zeros(1, rows.shape[1])])


def _pixel_projection(x: Tensor, w: Tensor, traced: bool) -> Tensor:
    """``(N, C, H, W)`` -> ``(N*H*W + 1, K)``: ``w`` times each pixel, then a zero row, in
    torch ops; ``traced``: :func:`_traced`."""
    if traced:
        return _project(_pixel_rows(x), w, None, traced)
    return _PixelProjection.apply(x, w)


class _PermuteRows(torch.autograd.Function):
    """``x[order]`` for a permutation ``order`` of the rows, whose backward gathers with the
    inverse permutation ``position`` (``index_select``'s own backward scatters, several times
    slower)."""

    @staticmethod
    def forward(ctx, x, order, position):  # type: ignore[override]
        ctx.save_for_backward(position)
        return x.index_select(0, order)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (position,) = ctx.saved_tensors
        # g arrives as a strided view of the NCHW output's gradient; index_select is 10-20x
        # slower on that than a copy followed by a gather of contiguous rows.
        return g.contiguous().index_select(0, position), None, None


def _pair(v: IntPair, name: str) -> tuple[int, int]:
    def whole(i) -> bool:  # ints and NumPy ints, not bools
        return type(i) is int or (isinstance(i, numbers.Integral) and not isinstance(i, bool))

    if type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int:
        return v  # the common case (a module's own sizes), without the ABC checks below
    if whole(v):
        return int(v), int(v)
    if isinstance(v, (bool, str)) or not hasattr(v, "__iter__"):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    out = tuple(v)
    if len(out) != 2 or not all(whole(i) for i in out):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(out[0]), int(out[1])


def rnnpool2d_padding(
    input_hw: Sequence[int], kernel_size: IntPair, stride: IntPair, padding: Padding
) -> tuple[int, int, int, int]:
    """Resolve ``padding`` into ``(left, right, top, bottom)`` for an input of size ``input_hw``.

    ``"same"`` pads by ``(kernel - stride) / 2`` on each side (the odd pixel, if any, at the
    bottom/right) so that the output has ``ceil(size / stride)`` cells whose centres sit on the
    stride grid.
    """
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    for name, v in (("kernel_size", (kh, kw)), ("stride", (sh, sw))):
        if min(v) <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    if isinstance(padding, str):
        if padding != "same":
            raise ValueError(f"padding must be an int, a pair of ints or 'same', got {padding!r}")
        pads = []
        for size, k, s in ((input_hw[0], kh, sh), (input_hw[1], kw, sw)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        return left, right, top, bottom
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return pw, pw, ph, ph


def rnnpool2d_output_size(
    input_hw: Sequence[int], kernel_size: IntPair, stride: IntPair, padding: Padding = 0
) -> tuple[int, int]:
    """``(H_out, W_out)`` of :func:`rnnpool2d`: ``floor((H + pad - kernel) / stride) + 1``."""
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    left, right, top, bottom = rnnpool2d_padding(input_hw, kernel_size, stride, padding)
    hp, wp = input_hw[0] + top + bottom, input_hw[1] + left + right
    if hp < kh or wp < kw:
        raise ValueError(
            f"input of spatial size {tuple(input_hw)} (padded to {(hp, wp)}) is smaller than "
            f"kernel_size {(kh, kw)}"
        )
    return (hp - kh) // sh + 1, (wp - kw) // sw + 1


class _Projection(torch.autograd.Function):
    """``F.linear`` (bias optional) for the tall, thin products of RNNPool's projections (``P``
    rows, few columns), with the backward products laid out the way BLAS runs them fast:
    ``dW`` as ``(x^T dy)^T`` is several times faster than ``dy^T x`` at these shapes."""

    @staticmethod
    def forward(ctx, x, w, b):  # type: ignore[override]
        ctx.save_for_backward(x, w)
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, w = ctx.saved_tensors
        return _projection_grads(dy, x, w, *ctx.needs_input_grad)


def _projection_grads(dy: Tensor, x: Tensor, w: Tensor, need_x: bool, need_w: bool,
                      need_b: bool = False
                      ) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """``dx, dW, db`` of ``x W^T + b`` for ``dy``, each when asked for."""
    dx = F.linear(dy, w.t().contiguous()) if need_x else None
    dw = (x.t() @ dy).t() if need_w else None
    db = dy.sum(0) if need_b else None
    return dx, dw, db


def _project(x: Tensor, w: Tensor, b: Optional[Tensor], traced: Optional[bool] = None) -> Tensor:
    """``x @ w.T + b`` for ``(P, in)`` rows ``x`` (``traced``: :func:`_traced`, if known)."""
    if (_traced() if traced is None else traced) or not torch.is_grad_enabled():
        return F.linear(x, w, b)
    return _Projection.apply(x, w, b)


def _traced() -> bool:
    """True under tracing, ONNX export, torch.compile or a torch.func transform (vmap, grad,
    jacrev...): the layer then runs in plain torch ops, without its autograd.Functions (which
    those transforms cannot run) and without the compiled kernel."""
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling() or _functorch_active())


def _functorch_active() -> bool:
    """Whether a torch.func transform is running."""
    peek = getattr(torch._C._functorch, "peek_interpreter_stack", None)
    return peek is not None and peek() is not None


class _Sweeps(NamedTuple):
    """Where every sweep of :func:`rnnpool2d` reads, for one input geometry.

    ``rnn1`` and ``rnn2`` are families ``(idx, groups)``: ``idx`` is ``(T, B)`` int64 (sweep
    ``b`` reads row ``idx[t, b]`` of the projected inputs at step ``t``) and ``groups`` the
    offsets of the runs of sweeps that alone read their rows (see
    :func:`rnnpool.nn._native.scan`). ``order`` picks, for output cell ``(i, sweep, oh, ow)``
    in that order, the row of the RNN2 results: a permutation, whose inverse is ``position``.
    """

    rnn1: list[tuple[Tensor, Tensor]]
    rnn2: list[tuple[Tensor, Tensor]]
    order: Tensor
    position: Tensor


_BLOCK = 8  # adjacent columns (or patch columns) whose sweeps run together


def _sweep_indices_uncached(n: int, hr: int, wc: int, ho: int, wo: int, kh: int, kw: int,
                            sh: int, sw: int, h: int, w: int, top: int, left: int,
                            device: torch.device) -> _Sweeps:
    """Build :class:`_Sweeps`.

    RNN1 reads the pixels of the ``(hr, wc)`` window of the zero-padded map, whose ``(y, x)`` is
    pixel ``(y - top, x - left)`` of the ``(h, w)`` input: row ``(i * h + y - top) * w + x - left``
    of the projected pixels, or row ``n * h * w`` (a zero row) where that is outside the input.
    A row segment (image i, row y, start column ow*sw) reads ``(i, y, ow*sw + t)`` at step t, a
    column segment (i, column x, start row oh*sh) reads ``(i, oh*sh + t, x)``. Its results, the
    summaries, are the row summaries ``(i, y, ow)`` in that order, then the column summaries.
    RNN2: patch ``(i, oh, ow)`` sweeps the row summaries ``(i, oh*sh + t, ow)`` and the column
    summaries ``(i, ow*sw + t, oh)``, forward and reversed.

    Sweeps that read the same rows form a group (an image row of row segments; a block of
    adjacent image columns of column segments; a block of patch columns of RNN2 row sweeps; a
    patch row of RNN2 column sweeps), and within a group consecutive sweeps read adjacent
    memory.
    """
    ar = partial(torch.arange, device=device)

    def grid(*sizes: int) -> list[Tensor]:  # flattened coordinates over the product of sizes
        return [g.reshape(-1) for g in torch.meshgrid(*[ar(k) for k in sizes], indexing="ij")]

    def offsets(group_id: Tensor, count: int) -> Tensor:  # sorted ids -> run offsets
        counts = torch.bincount(group_id, minlength=count)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def pixel(i: Tensor, y: Tensor, x: Tensor) -> Tensor:  # window (i, y, x) -> its row
        y, x = y - top, x - left
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        return torch.where(inside, (i * h + y) * w + x, n * h * w)

    # RNN1 rows: (i, y, ow); a group is an image row.
    i_, y_, ow_ = grid(n, hr, wo)
    rows = pixel(i_, y_, ow_ * sw + ar(kw)[:, None])
    rows_groups = ar(0, n * hr * wo + 1, wo)
    # RNN1 columns: (i, x // B, oh, x); a group is a block of adjacent columns.
    nxb = -(-wc // _BLOCK)
    i_, x_, oh_ = grid(n, wc, ho)
    gid = i_ * nxb + x_ // _BLOCK
    perm = torch.argsort((gid * ho + oh_) * wc + x_)
    i_, x_, oh_, gid = i_[perm], x_[perm], oh_[perm], gid[perm]
    cols = pixel(i_, oh_ * sh + ar(kh)[:, None], x_)
    cols_groups = offsets(gid, n * nxb)
    col_summary = torch.empty(n * wc * ho, dtype=torch.long, device=device)
    col_summary[(i_ * wc + x_) * ho + oh_] = n * hr * wo + ar(n * wc * ho)  # (i, x, oh) -> row
    # RNN2 row sweeps: (i, ow // B, direction, oh, ow); a group is a block of patch columns.
    nob = -(-wo // _BLOCK)
    i_, ow_, d_, oh_ = grid(n, wo, 2, ho)
    gid = i_ * nob + ow_ // _BLOCK
    perm_r = torch.argsort(((gid * 2 + d_) * ho + oh_) * wo + ow_)
    i_, ow_, d_, oh_, gid = i_[perm_r], ow_[perm_r], d_[perm_r], oh_[perm_r], gid[perm_r]
    t_ = ar(kh)[:, None]
    t_ = torch.where(d_ == 0, t_, kh - 1 - t_)
    row_sweeps = (i_ * hr + oh_ * sh + t_) * wo + ow_
    row_groups = offsets(gid, n * nob)
    # RNN2 column sweeps: (i, oh, direction, ow); a group is a patch row.
    i_, oh_, d_, ow_ = grid(n, ho, 2, wo)
    t_ = ar(kw)[:, None]
    t_ = torch.where(d_ == 0, t_, kw - 1 - t_)
    col_sweeps = col_summary[(i_ * wc + ow_ * sw + t_) * ho + oh_]
    col_groups = ar(0, n * ho * 2 * wo + 1, 2 * wo)
    # Output cell (i, sweep, oh, ow) -> its RNN2 result row.
    nrow = n * wo * 2 * ho
    row_pos = torch.empty(nrow, dtype=torch.long, device=device)
    row_pos[perm_r] = ar(nrow)  # natural (i, ow, d, oh) -> sorted position
    i_, s_, oh_, ow_ = grid(n, 4, ho, wo)
    by_rows = row_pos[((i_ * wo + ow_) * 2 + s_.clamp(max=1)) * ho + oh_]
    by_cols = nrow + ((i_ * ho + oh_) * 2 + (s_ - 2).clamp(min=0)) * wo + ow_
    order = torch.where(s_ < 2, by_rows, by_cols)
    position = torch.empty_like(order)
    position[order] = ar(order.numel())
    return _Sweeps([(rows, rows_groups), (cols, cols_groups)],
                   [(row_sweeps, row_groups), (col_sweeps, col_groups)], order, position)


def _nbytes(obj) -> int:
    """Bytes of the tensors in ``obj`` (a tensor, or tuples and lists of them)."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    return 0


class _IndexCache:
    """The :class:`_Sweeps` of recently used geometries, least recently used dropped first
    while they take more than ``max_bytes`` (the newest is always kept). Bounded in bytes, not
    in entries: one geometry's indices take ~37 MB for a 1000x750 image, so a count bound held
    gigabytes when every image of a data set had its own size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.misses = 0
        self._items: OrderedDict[tuple, tuple[_Sweeps, int]] = OrderedDict()
        self._lock = threading.Lock()  # DataParallel runs replicas' forwards in threads

    def __len__(self) -> int:
        return len(self._items)

    def get(self, geometry: tuple) -> _Sweeps:
        with self._lock:
            hit = self._items.get(geometry)
            if hit is not None:
                self._items.move_to_end(geometry)
                return hit[0]
        # Built as normal tensors even when first asked for under inference_mode: autograd may
        # save them later.
        with torch.inference_mode(False):
            sweeps = _sweep_indices_uncached(*geometry)
        size = _nbytes(sweeps)
        with self._lock:
            self.misses += 1
            if geometry not in self._items:
                self._items[geometry] = (sweeps, size)
                self.nbytes += size
            while self.nbytes > self.max_bytes and len(self._items) > 1:
                _, (_, dropped) = self._items.popitem(last=False)
                self.nbytes -= dropped
        return sweeps

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


# Index tensors depend only on the geometry: cached, so a training step does not rebuild them.
# They are never written to.
_SWEEP_CACHE = _IndexCache(max_bytes=256 * 2**20)


def _sweep_indices(*geometry, traced: bool) -> _Sweeps:
    """:class:`_Sweeps` for the arguments of :func:`_sweep_indices_uncached`."""
    if traced:  # tracers and compilers see the index arithmetic, not cached tensors
        return _sweep_indices_uncached(*geometry)
    return _SWEEP_CACHE.get(geometry)


# Up to this many input channels the compiled kernel projects each input row (a map's pixel,
# an RNN1 summary) as it reads it, once per sweep that reads it, instead of reading a (P, h)
# map of projections written first.
_FUSE_MAX_CHANNELS = 8


def _native_cell(p: FastGRNNParams) -> dict:
    """The arguments of :func:`rnnpool.nn._native.scan` that describe the cell (the kernel makes
    the all-sigmoid form's matrices itself)."""
    return dict(u=p.weight_hh, bias_gate=p.bias_gate, bias_update=p.bias_update, gate=p.gate,
                update=p.update, zeta=p.zeta, nu=p.nu, sigmoid_form=_runs_as_sigmoids(p))


def _native_project_and_scan(inputs: Tensor, families: list[tuple[Tensor, Tensor]],
                             p: FastGRNNParams, save: bool, skip_row: Optional[int] = None
                             ) -> tuple[Tensor, Optional[_native.ScanState]]:
    """:func:`_project_and_scan` in the compiled kernels, without autograd (``save``: keep what
    :func:`_native_project_and_scan_backward` needs). The kernel adds the bias as it reads a
    row, and with few input channels also projects it there."""
    cell, w = _native_cell(p), p.weight_ih
    if inputs.shape[1] <= _FUSE_MAX_CHANNELS:
        return _native.scan(inputs, families, w=w, skip_row=skip_row, save=save, **cell)
    rows = _native.pixel_projection(inputs, w) if inputs.dim() == 4 else F.linear(inputs, w)
    return _native.scan(rows, families, skip_row=skip_row, save=save, **cell)


def _native_project_and_scan_backward(state: _native.ScanState, inputs: Tensor, w: Tensor,
                                      g: Tensor, need_inputs: bool, need_w: bool
                                      ) -> tuple[Optional[Tensor], ...]:
    """The gradients of :func:`_native_project_and_scan`'s ``inputs`` (when ``need_inputs``)
    and of the cell's ``weight_ih`` (``w``; when ``need_w``), ``weight_hh``, ``bias_gate``,
    ``bias_update``, ``zeta`` and ``nu``, for the results' gradient ``g``."""
    if state.w is not None:  # the kernel projected the inputs
        din, dbz, dbh, dw, du, dzeta, dnu = _native.scan_backward(state, g, need_inputs, need_w)
    else:  # the rows the scan read are not needed again: their gradient is written over them
        drows, dbz, dbh, _, du, dzeta, dnu = _native.scan_backward(
            state, g, need_src=need_inputs or need_w, reuse_src=True)
        if inputs.dim() == 4:
            din, dw = _pixel_projection_grads(drows, inputs, w, need_inputs, need_w, native=True)
        else:
            din, dw, _ = _projection_grads(drows, inputs, w, need_inputs, need_w)
    return din, dw, du, dbz, dbh, dzeta, dnu


class _CompiledState(NamedTuple):
    """What the compiled path's backward needs besides the saved inputs."""

    scan1: _native.ScanState
    scan2: _native.ScanState
    summaries: Tensor  # RNN1's results, RNN2's inputs
    results: Tensor  # RNN2's results as rows (before the reorder): the output gradient's rows


def _compiled_rnnpool2d(x: Tensor, p1: FastGRNNParams, p2: FastGRNNParams, sweeps: _Sweeps,
                        plane: int, save: bool) -> tuple[Tensor, Optional[_CompiledState]]:
    """:func:`rnnpool2d` in the compiled kernels, without autograd: ``(N, C, H, W)`` ->
    ``(N*4, h2, plane)`` (``plane = H_out * W_out``), and (when ``save``) what
    :class:`_CompiledRNNPool2d`'s backward needs. ``x`` is already replicate-padded where
    asked for."""
    pad_row = x.shape[0] * x.shape[2] * x.shape[3]  # the zero row the sweeps read in padding
    summaries, scan1 = _native_project_and_scan(x, sweeps.rnn1, p1, save, pad_row)
    results, scan2 = _native_project_and_scan(summaries, sweeps.rnn2, p2, save)
    out = _native.place_rows(results, sweeps.order, plane)  # rows to the map in one pass
    if not save:
        return out, None
    assert scan1 is not None and scan2 is not None
    return out, _CompiledState(scan1, scan2, summaries, results)


class _CompiledRNNPool2d(torch.autograd.Function):
    """:func:`_compiled_rnnpool2d` as one autograd node, for the input, both cells' matrices,
    biases and (trainable) ``zeta, nu``. Its pieces (projections, sweeps, reorder, the cells'
    changes of variables) as seven nodes of their own took 0.23-0.28 ms more a forward and
    backward (1.20-1.24 ms against 0.95 ms on 1x4x8x8 and 1x32x8x8 inputs), a fifth of the
    layer's time at small inputs; the changes of variables as torch ops (now in the kernel)
    took a further tenth there."""

    @staticmethod
    def forward(ctx, x, sweeps, plane, p1, p2, *tensors):  # type: ignore[override]
        # tensors: p1's and p2's weight_ih, weight_hh, bias_gate, bias_update, zeta, nu (they
        # are arguments so that autograd sees them; p1 and p2 hold the same objects).
        out, state = _compiled_rnnpool2d(x, p1, p2, sweeps, plane, save=True)
        # All of them saved: the backward fails, as autograd's own nodes do, if one was changed
        # in place since (the kernel's backward reads the cells' U and biases again).
        others = [t for k, t in enumerate(tensors) if k % 6 and isinstance(t, Tensor)]
        ctx.save_for_backward(x, p1.weight_ih, p2.weight_ih, *others)
        ctx.state, ctx.sweeps = state, sweeps
        return out

    @staticmethod
    @once_differentiable  # the saved activations are treated as constants
    def backward(ctx, g):  # type: ignore[override]
        x, w1, w2, *_ = ctx.saved_tensors
        st: _CompiledState = ctx.state
        need = ctx.needs_input_grad
        # RNN2's results' gradient goes over the results (which the backward does not read):
        # a fresh buffer would cost page faults.
        g2 = _native.take_rows(g, ctx.sweeps.order, out=st.results)
        need_rnn1 = need[0] or any(need[5:11])
        dsummaries, *grads2 = _native_project_and_scan_backward(
            st.scan2, st.summaries, w2, g2, need_rnn1, need[11])
        grads1: tuple = (None,) * 7
        if need_rnn1:
            grads1 = _native_project_and_scan_backward(st.scan1, x, w1, dsummaries, need[0],
                                                       need[5])
        dx, *grads1 = grads1
        grads = (dx, None, None, None, None, *grads1, *grads2)
        return tuple(d if n else None for d, n in zip(grads, need))


def rnnpool2d(
    input: Tensor,
    rnn1: FastGRNNParams,
    rnn2: FastGRNNParams,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding = 0,
    padding_mode: str = "zeros",
    backend: str = "auto",
) -> Tensor:
    """RNNPool over every ``kernel_size`` patch of ``input`` (see :class:`~rnnpool.nn.RNNPool2d`).

    Computes the same numbers as running Algorithm 1 on each patch separately, but

    * projects every pixel once (``W1 x``) instead of once per patch and direction,
    * runs each row / column segment of RNN1 once even when overlapping patches share it,
    * runs rows and columns (and the four RNN2 sweeps) as one batched recurrence when the patch
      is square, and projects each RNN1 summary through ``W2`` once,
    * never builds the zero-padded input: the sweeps read one shared zero row where they step
      into the padding.

    Args:
        input: ``(N, C, H, W)``.
        rnn1: parameters of RNN1 (``C -> h1``).
        rnn2: parameters of RNN2 (``h1 -> h2``).
        kernel_size, stride, padding, padding_mode: as in :class:`~rnnpool.nn.RNNPool2d`.
        backend: ``"auto"`` (default) runs the recurrences in the compiled CPU kernel
            (:mod:`rnnpool.nn._native`) when it is available and the input is a float32/float64
            CPU tensor outside tracing and ONNX export, else in torch ops; ``"native"``
            requires the kernel; ``"torch"`` never uses it. Both give the same numbers.

    Returns:
        ``(N, 4 * h2, H_out, W_out)``, channels ``[row-fwd, row-rev, col-fwd, col-rev]``.

    Under autocast the input is cast to the parameters' dtype and the layer runs in it;
    float16 and bfloat16 layers compute in float32 and round their output once.

    Under ``torch.compile`` the layer runs outside the compiled graph (a graph break, so
    ``fullgraph=True`` is not supported): Inductor compiled the backward of the torch-op
    sweeps wrongly in torch 2.13 (input and cell gradients off by more than their size at
    several geometries, and one crash), while forward values were right.
    """
    args = (input, rnn1, rnn2, kernel_size, stride, padding, padding_mode, backend)
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
        return _rnnpool2d_eager(*args)
    return _rnnpool2d(*args)


def _autocast_on(device_type: str) -> bool:
    """Whether autocast is enabled for ``device_type`` (``"cpu"``, ``"cuda"``, ...)."""
    return (torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type))


def _in_float32(p: FastGRNNParams) -> FastGRNNParams:
    return p._replace(**{f: getattr(p, f).float() for f in p._fields[:6]
                         if isinstance(getattr(p, f), Tensor)})


def _rnnpool2d(input: Tensor, rnn1: FastGRNNParams, rnn2: FastGRNNParams, kernel_size: IntPair,
               stride: IntPair | None, padding: Padding, padding_mode: str, backend: str
               ) -> Tensor:
    if _autocast_on(input.device.type):
        # Autocast would cast some products of the sweeps and not others: run the layer in
        # its parameters' dtype (the call below makes every check once).
        with torch.autocast(input.device.type, enabled=False):
            return _rnnpool2d(input.to(rnn1.weight_ih.dtype), rnn1, rnn2, kernel_size, stride,
                              padding, padding_mode, backend)
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(kernel_size if stride is None else stride, "stride")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if input.dim() != 4:
        raise ValueError(f"RNNPool expects a 4D input (N, C, H, W), got shape {tuple(input.shape)}")
    n, c, h, w = input.shape
    if h == 0 or w == 0:  # as nn.Conv2d and nn.MaxPool2d: padding alone is no input
        raise ValueError(f"RNNPool expects an input of non-empty spatial size, got shape "
                         f"{tuple(input.shape)}")
    if c != rnn1.weight_ih.shape[1]:
        raise ValueError(
            f"RNNPool expects {rnn1.weight_ih.shape[1]} input channels, got {c} "
            f"(input shape {tuple(input.shape)})"
        )
    if rnn2.weight_ih.shape[1] != rnn1.weight_hh.shape[0]:
        raise ValueError(f"rnn2 reads {rnn2.weight_ih.shape[1]} features but rnn1 has "
                         f"{rnn1.weight_hh.shape[0]} hidden units")
    devices = {t.device for p in (rnn1, rnn2) for t in p[:6] if isinstance(t, Tensor)}
    if devices != {input.device}:  # the compiled kernel would read them as CPU memory
        raise RuntimeError(f"RNNPool input on {input.device} but its parameters on "
                           f"{', '.join(sorted(str(d) for d in devices))}")
    dtypes = {t.dtype for p in (rnn1, rnn2) for t in p[:4]}
    if dtypes != {input.dtype}:
        raise TypeError(f"RNNPool input dtype {input.dtype} does not match its parameters' "
                        f"{', '.join(sorted(str(d) for d in dtypes))} (convert one to the other)")
    if input.dtype in (torch.float16, torch.bfloat16):
        # Sweeps in half precision round every step's state (bf16 drifted up to 0.13 from the
        # exact result in a 6-step patch): compute in float32, round the output once.
        return _rnnpool2d(input.float(), _in_float32(rnn1), _in_float32(rnn2), kernel_size,
                          stride, padding, padding_mode, backend).to(input.dtype)
    ho, wo = rnnpool2d_output_size((h, w), (kh, kw), (sh, sw), padding)
    left, right, top, bottom = rnnpool2d_padding((h, w), (kh, kw), (sh, sw), padding)
    if left or right or top or bottom:
        if padding_mode == "replicate":  # zero padding needs no copy: the sweeps read a zero row
            input = F.pad(input, (left, right, top, bottom), mode="replicate")
            h, w, left, top = h + top + bottom, w + left + right, 0, 0
        elif padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' or 'replicate', got {padding_mode!r}")
    # The window some patch reads, in padded coordinates.
    hr, wc = sh * (ho - 1) + kh, sw * (wo - 1) + kw
    h2 = rnn2.weight_hh.shape[0]
    traced = _traced()
    sweeps = _sweep_indices(n, hr, wc, ho, wo, kh, kw, sh, sw, h, w, top, left, input.device,
                            traced=traced)
    if _use_native(input, (rnn1, rnn2), backend, traced):
        tensors = [t for p in (rnn1, rnn2) for t in p[:6]]
        if _wants_grad(input, *tensors):
            out = _CompiledRNNPool2d.apply(input, sweeps, ho * wo, rnn1, rnn2, *tensors)
        else:  # no gradient can flow: no autograd node either
            out = _compiled_rnnpool2d(input, rnn1, rnn2, sweeps, ho * wo, save=False)[0]
        return out.view(n, 4 * h2, ho, wo)
    m1, m2 = _cell_matrices(rnn1, traced), _cell_matrices(rnn2, traced)
    # RNN1: every pixel is projected once; each row / column segment runs once. Summaries:
    # (N*(hr*wo + wc*ho), h1).
    summaries = _project_and_scan(input, sweeps.rnn1, rnn1, m1, traced)
    # RNN2: each summary is projected once; four sweeps per patch.
    out = _project_and_scan(summaries, sweeps.rnn2, rnn2, m2, traced)  # (4*N*ho*wo, h2)
    # -> (N, 4*h2, ho, wo), channel order [row-fwd, row-rev, col-fwd, col-rev].
    if traced:
        out = out.index_select(0, sweeps.order)
    else:
        out = _PermuteRows.apply(out, sweeps.order, sweeps.position)
    out = out.view(n, 4, ho, wo, h2)
    return out.permute(0, 1, 4, 2, 3).reshape(n, 4 * h2, ho, wo)


# rnnpool2d run eagerly when called from code that torch.compile compiles (see its docstring).
_rnnpool2d_eager = torch.compiler.disable(
    _rnnpool2d, reason="RNNPool2d runs outside the compiled graph (a graph break: fullgraph=True "
    "is not supported), as Inductor compiles its backward wrongly in torch 2.13")
