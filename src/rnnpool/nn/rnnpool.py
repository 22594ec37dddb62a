"""The RNNPool operator as a pooling layer (Saha et al., NeurIPS 2020, Algorithm 1)."""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from . import functional as RF
from .fastgrnn import FastGRNNCell

__all__ = ["RNNPool2d", "rnnpool2d_macs", "rnnpool2d_num_params"]


def rnnpool2d_macs(
    in_channels: int,
    hidden1: int,
    hidden2: int,
    kernel_size: RF.IntPair,
    output_hw: Sequence[int],
) -> int:
    """Multiply-adds of RNNPool by the paper's per-patch formula.

    Per ``r x c`` patch with ``k`` input channels: RNN1 ``2 r c h1 (k + h1)`` (every row and every
    column), RNN2 ``2 (r + c) h2 (h1 + h2)`` (four sweeps; ``4 r h2 (h1 + h2)`` when square),
    times the number of patches ``H_out * W_out``.

    >>> rnnpool2d_macs(32, 16, 16, 6, (28, 28))  # MobileNetV2-RNNPool's layer
    52985856
    """
    r, c = RF._pair(kernel_size, "kernel_size")
    per_patch = 2 * r * c * hidden1 * (in_channels + hidden1) + 2 * (r + c) * hidden2 * (
        hidden1 + hidden2
    )
    return per_patch * int(output_hw[0]) * int(output_hw[1])


def rnnpool2d_num_params(
    in_channels: int, hidden1: int, hidden2: int, trainable_zeta_nu: bool = False
) -> int:
    """``h1 (k + h1) + 2 h1 + h2 (h1 + h2) + 2 h2`` (+ 4 scalars when zeta/nu are trainable).

    >>> rnnpool2d_num_params(32, 16, 16)
    1344
    """
    n = (hidden1 * (in_channels + hidden1) + 2 * hidden1
         + hidden2 * (hidden1 + hidden2) + 2 * hidden2)
    return n + (4 if trainable_zeta_nu else 0)


class RNNPool2d(nn.Module):
    r"""RNNPool: summarises every ``kernel_size`` patch of the input with two RNNs.

    For each patch (``r x c`` pixels of ``C`` channels), RNN1 (``C -> h1``) reads every row
    (``c`` steps) and every column (``r`` steps); the final state of each sweep is that row's or
    column's summary. RNN2 (``h1 -> h2``) then runs over the ``r`` row summaries forward and
    reversed, and over the ``c`` column summaries forward and reversed. The output pixel is the
    concatenation of the four final states ``[row-fwd, row-rev, col-fwd, col-rev]``. Both RNNs
    are :class:`FastGRNNCell` s with zero initial state, shared by all patches.

    The patches are placed like a pooling layer's: ``kernel_size``, ``stride`` and ``padding``
    take an int (same for height and width) or a pair ``(h, w)``. ``padding="same"`` gives
    ``H_out = ceil(H / stride)``: it pads ``(H_out - 1) * stride + kernel - H`` in all, half on
    each side (the odd pixel at the bottom / right), as TensorFlow's ``SAME`` does. When ``H``
    is a multiple of the stride that is ``(kernel - stride) / 2`` a side and the output cell
    centres sit on the stride grid; otherwise the extra padding, split the same way, moves
    them off it by less than half a stride.

    The forward pass computes each pixel's input projection once and each row/column segment of
    RNN1 once, however many overlapping patches read it; it gives the same numbers as running
    Algorithm 1 patch by patch.

    Args:
        in_channels: ``C``, channels of the input.
        hidden1: ``h1``, state size of RNN1.
        hidden2: ``h2``, state size of RNN2; the output has ``4 * h2`` channels.
        kernel_size: patch size ``(r, c)``.
        stride: patch stride. Default: ``kernel_size``.
        padding: int, pair, or ``"same"``. Default: 0.
        padding_mode: ``"zeros"`` or ``"replicate"``. Default: ``"zeros"``.
        gate, update, trainable_zeta_nu, w_rank, u_rank: passed to both
            :class:`FastGRNNCell` s.
        backend: ``"auto"``, ``"native"`` or ``"torch"``: where the recurrences run (see
            :func:`~rnnpool.nn.functional.rnnpool2d`). Default: ``"auto"``, the compiled CPU
            kernel when it applies. When gradients are wanted, the kernel keeps every
            recurrence step's pre-activation for the backward (``h`` values a step: about
            30 MB for a ``(4, 4, 120, 160)`` input at ``h1 = h2 = 16``, kernel 8, stride 4).

    Shape:
        - Input: :math:`(N, C, H_{in}, W_{in})`
        - Output: :math:`(N, 4 h_2, H_{out}, W_{out})` where

          .. math::
              H_{out} = \left\lfloor \frac{H_{in} + p_{top} + p_{bottom} - r}{s_h} \right\rfloor + 1

          and likewise for :math:`W_{out}`.

        float16 and bfloat16 layers compute in float32 and round the output once.

    Attributes:
        rnn1: :class:`FastGRNNCell` ``(C -> h1)``.
        rnn2: :class:`FastGRNNCell` ``(h1 -> h2)``.

    Example::

        >>> pool = RNNPool2d(32, 16, 16, kernel_size=6, stride=4, padding="same")
        >>> pool(torch.randn(2, 32, 112, 112)).shape
        torch.Size([2, 64, 28, 28])
    """

    def __init__(
        self,
        in_channels: int,
        hidden1: int,
        hidden2: int,
        kernel_size: RF.IntPair,
        stride: Optional[RF.IntPair] = None,
        padding: RF.Padding = 0,
        padding_mode: str = "zeros",
        gate: str = "sigmoid",
        update: str = "tanh",
        trainable_zeta_nu: bool = False,
        w_rank: Optional[int] = None,
        u_rank: Optional[int] = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in RF.BACKENDS:
            raise ValueError(f"backend must be one of {RF.BACKENDS}, got {backend!r}")
        self.backend = backend
        for name, v in (("in_channels", in_channels), ("hidden1", hidden1), ("hidden2", hidden2)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.kernel_size = RF._pair(kernel_size, "kernel_size")
        self.stride = RF._pair(kernel_size if stride is None else stride, "stride")
        if padding_mode not in ("zeros", "replicate"):
            raise ValueError(f"padding_mode must be 'zeros' or 'replicate', got {padding_mode!r}")
        if not isinstance(padding, str):
            padding = RF._pair(padding, "padding")
        # validates kernel_size, stride and padding
        RF.rnnpool2d_padding((1, 1), self.kernel_size, self.stride, padding)
        self.padding = padding
        self.padding_mode = padding_mode
        self.in_channels, self.hidden1, self.hidden2 = in_channels, hidden1, hidden2
        cell = dict(gate=gate, update=update, trainable_zeta_nu=trainable_zeta_nu)
        self.rnn1 = FastGRNNCell(in_channels, hidden1, w_rank=w_rank, u_rank=u_rank, **cell)
        self.rnn2 = FastGRNNCell(hidden1, hidden2, w_rank=w_rank, u_rank=u_rank, **cell)

    @property
    def out_channels(self) -> int:
        return 4 * self.hidden2

    def reset_parameters(self) -> None:
        self.rnn1.reset_parameters()
        self.rnn2.reset_parameters()

    def output_size(self, input_hw: Sequence[int]) -> tuple[int, int]:
        """``(H_out, W_out)`` for an input of spatial size ``input_hw``."""
        return RF.rnnpool2d_output_size(input_hw, self.kernel_size, self.stride, self.padding)

    def macs(self, input_hw: Sequence[int]) -> int:
        """Multiply-adds for one image by the paper's formula (:func:`rnnpool2d_macs`)."""
        return rnnpool2d_macs(
            self.in_channels, self.hidden1, self.hidden2, self.kernel_size,
            self.output_size(input_hw),
        )

    def executed_macs(self, input_hw: Sequence[int]) -> int:
        """Multiply-adds the shared forward pass actually performs for one image.

        Each input pixel is projected once (``k h1``; zero padding is not projected, replicate
        padding is); each distinct RNN1 segment runs its recurrent products once (no ``U h`` at
        the first step, where ``h = 0``); each summary is projected through ``W2`` once; the four
        RNN2 sweeps run their recurrent products.
        """
        (r, c), (sh, sw) = self.kernel_size, self.stride
        ho, wo = self.output_size(input_hw)
        hr, wc = sh * (ho - 1) + r, sw * (wo - 1) + c
        k, h1, h2 = self.in_channels, self.hidden1, self.hidden2
        pixels = input_hw[0] * input_hw[1]
        if self.padding_mode == "replicate":
            left, right, top, bottom = RF.rnnpool2d_padding(input_hw, self.kernel_size,
                                                            self.stride, self.padding)
            pixels = (input_hw[0] + top + bottom) * (input_hw[1] + left + right)
        rnn1 = pixels * k * h1 + (hr * wo * (c - 1) + ho * wc * (r - 1)) * h1 * h1
        rnn2 = (hr * wo + ho * wc) * h1 * h2 + 2 * ho * wo * ((r - 1) + (c - 1)) * h2 * h2
        return rnn1 + rnn2

    def num_params(self) -> int:
        return self.rnn1.num_params() + self.rnn2.num_params()

    def forward(self, input: Tensor) -> Tensor:
        return RF.rnnpool2d(
            input, self.rnn1.params(), self.rnn2.params(),
            self.kernel_size, self.stride, self.padding, self.padding_mode, self.backend,
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, hidden1={self.hidden1}, hidden2={self.hidden2}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}"
        )
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s
