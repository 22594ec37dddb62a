"""Pure functions behind :class:`~rnnpool.nn.FastGRNNCell` and :class:`~rnnpool.nn.RNNPool2d`.

Every hyper-parameter is an argument; the modules hold configuration and parameters and call
into these. See the module classes for the mathematical definitions.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FastGRNNParams",
    "fastgrnn_cell",
    "fastgrnn_scan",
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


def fastgrnn_scan(proj: Tensor, params: FastGRNNParams) -> Tensor:
    """Final state of FastGRNN sweeps whose input projections are precomputed.

    The input projection ``W x`` is the only part of a step that does not depend on the state,
    so callers compute it once for all steps (and share it between sweeps that read the same
    input). The initial state is zero.

    Args:
        proj: ``(T, B, 2 * hidden)``: ``[W x_t + b_z, W x_t + b_h]`` for each step ``t``.
        params: the cell's :class:`FastGRNNParams` (``weight_ih`` is not used).

    Returns:
        ``(B, hidden)`` state after the ``T`` steps.
    """
    hidden = params.weight_hh.shape[0]
    gate, update = GATES[params.gate], UPDATES[params.update]
    plain = _is_plain(params)
    # One matmul per step serves both halves: h @ [U^T, U^T].
    u2 = torch.cat([params.weight_hh, params.weight_hh], 0).t()
    h = None
    for t in range(proj.shape[0]):
        a = proj[t] if h is None else torch.addmm(proj[t], h, u2)
        z = gate(a[:, :hidden])
        c = update(a[:, hidden:])
        if h is None:
            # h = 0: z * h vanishes.
            h = (1.0 - z) * c if plain else (params.zeta * (1.0 - z) + params.nu) * c
        elif plain:
            h = torch.lerp(c, h, z)
        else:
            h = z * h + (params.zeta * (1.0 - z) + params.nu) * c
    assert h is not None
    return h


def _pair(v: IntPair, name: str) -> tuple[int, int]:
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    if isinstance(v, int):
        out = (v, v)
    else:
        out = tuple(v)
        if len(out) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in out):
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return out  # type: ignore[return-value]


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


def _windows(x: Tensor, dim: int, size: int, step: int, count: int) -> Tensor:
    """Stack the ``size`` strided slices of ``x`` along ``dim``: ``out[t] = x[..., t::step, ...]``.

    The result, ``(size, *x.shape)`` with ``dim`` of length ``count``, is each window's ``t``-th
    element for every window start; one copy, and exportable (strided slices) unlike ``unfold``.
    """
    stop = step * (count - 1) + 1
    lead = (slice(None),) * dim
    return torch.stack([x[lead + (slice(t, t + stop, step),)] for t in range(size)])


def rnnpool2d(
    input: Tensor,
    rnn1: FastGRNNParams,
    rnn2: FastGRNNParams,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: Padding = 0,
    padding_mode: str = "zeros",
) -> Tensor:
    """RNNPool over every ``kernel_size`` patch of ``input`` (see :class:`~rnnpool.nn.RNNPool2d`).

    Computes the same numbers as running Algorithm 1 on each patch separately, but

    * projects every pixel once (``W1 x``) instead of once per patch and direction,
    * runs each row / column segment of RNN1 once even when overlapping patches share it,
    * runs rows and columns (and the four RNN2 sweeps) as one batched recurrence when the patch
      is square, and projects each RNN1 summary through ``W2`` once.

    Args:
        input: ``(N, C, H, W)``.
        rnn1: parameters of RNN1 (``C -> h1``).
        rnn2: parameters of RNN2 (``h1 -> h2``).
        kernel_size, stride, padding, padding_mode: as in :class:`~rnnpool.nn.RNNPool2d`.

    Returns:
        ``(N, 4 * h2, H_out, W_out)``, channels ``[row-fwd, row-rev, col-fwd, col-rev]``.
    """
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(kernel_size if stride is None else stride, "stride")
    if input.dim() != 4:
        raise ValueError(f"rnnpool2d expects a 4D input (N, C, H, W), got shape {tuple(input.shape)}")
    n, c, h, w = input.shape
    if c != rnn1.weight_ih.shape[1]:
        raise ValueError(
            f"input has {c} channels but RNN1 expects {rnn1.weight_ih.shape[1]} (in_channels)"
        )
    ho, wo = rnnpool2d_output_size((h, w), (kh, kw), (sh, sw), padding)
    left, right, top, bottom = rnnpool2d_padding((h, w), (kh, kw), (sh, sw), padding)
    if left or right or top or bottom:
        if padding_mode == "zeros":
            input = F.pad(input, (left, right, top, bottom))
        elif padding_mode == "replicate":
            input = F.pad(input, (left, right, top, bottom), mode="replicate")
        else:
            raise ValueError(f"padding_mode must be 'zeros' or 'replicate', got {padding_mode!r}")
    # Only the rows / columns some patch reads.
    hr, wc = sh * (ho - 1) + kh, sw * (wo - 1) + kw
    x = input[:, :, :hr, :wc].permute(0, 2, 3, 1)  # (N, hr, wc, C)

    h1 = rnn1.weight_hh.shape[0]
    h2 = rnn2.weight_hh.shape[0]
    # Per-pixel input projection, with both biases: (N, hr, wc, 2*h1).
    proj1 = F.linear(
        x,
        torch.cat([rnn1.weight_ih, rnn1.weight_ih], 0),
        torch.cat([rnn1.bias_gate, rnn1.bias_update], 0),
    )
    # Row segments (row y, start column ow*sw): kw steps along the row.
    rows_in = _windows(proj1, 2, kw, sw, wo).reshape(kw, n * hr * wo, 2 * h1)
    # Column segments (start row oh*sh, column x): kh steps down the column.
    cols_in = _windows(proj1, 1, kh, sh, ho).reshape(kh, n * ho * wc, 2 * h1)
    if kh == kw:
        summ = fastgrnn_scan(torch.cat([rows_in, cols_in], 1), rnn1)
        row_sum, col_sum = summ[: n * hr * wo], summ[n * hr * wo :]
    else:
        row_sum, col_sum = fastgrnn_scan(rows_in, rnn1), fastgrnn_scan(cols_in, rnn1)

    w2 = torch.cat([rnn2.weight_ih, rnn2.weight_ih], 0)
    b2 = torch.cat([rnn2.bias_gate, rnn2.bias_update], 0)
    # Summaries projected once through W2, then gathered per patch.
    row_p = F.linear(row_sum, w2, b2).reshape(n, hr, wo, 2 * h2)
    col_p = F.linear(col_sum, w2, b2).reshape(n, ho, wc, 2 * h2)
    row_seq = _windows(row_p, 1, kh, sh, ho).reshape(kh, n * ho * wo, 2 * h2)
    col_seq = _windows(col_p, 2, kw, sw, wo).reshape(kw, n * ho * wo, 2 * h2)
    if kh == kw:
        seq = torch.cat([row_seq, row_seq.flip(0), col_seq, col_seq.flip(0)], 1)
        out = fastgrnn_scan(seq, rnn2).reshape(4, n, ho, wo, h2)
    else:
        rows = fastgrnn_scan(torch.cat([row_seq, row_seq.flip(0)], 1), rnn2)
        cols = fastgrnn_scan(torch.cat([col_seq, col_seq.flip(0)], 1), rnn2)
        out = torch.cat([rows, cols], 0).reshape(4, n, ho, wo, h2)
    # (4, N, ho, wo, h2) -> (N, 4*h2, ho, wo), order [row-fwd, row-rev, col-fwd, col-rev].
    return out.permute(1, 0, 4, 2, 3).reshape(n, 4 * h2, ho, wo)
