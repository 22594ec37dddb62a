"""One factory for the downsampling ("pool") layers the model families inject.

The paper places one aggressive downsampler right after the first strided convolution (SPEC §3)
and compares RNNPool there with average pooling, max pooling, a strided convolution and ReNet
(the pooling ablation). :func:`create_pool_layer` builds any of them from a name, a class or a
factory, so a model takes ``pool_layer=`` instead of a ``use_rnnpool`` flag.

All of them place their windows like ``RNNPool2d(padding="same")``: ``(k - s) / 2`` padding on
each side (odd pixel bottom/right), ``H_out = ceil(H / s)``.

Layers that read their input one window at a time carry the class attribute
``streams_input = True``; the memory analysis (:mod:`rnnpool.analysis`) then lets the
layers in front of them be computed window by window, as for RNNPool (SPEC §2).
"""

from __future__ import annotations

import functools
import numbers
import types
from typing import Callable, Optional, Sequence, Union

import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import FastGRNNCell, ReNet2d, RNNPool2d
from ..nn.functional import GATES, UPDATES, rnnpool2d, rnnpool2d_padding
from ..nn.rnnpool import rnnpool2d_macs
from ._blocks import ConvBNAct, LayerType

__all__ = [
    "POOL_LAYERS",
    "create_pool_layer",
    "SamePool2d",
    "SameConvBNAct",
    "GlobalRNNPool2d",
    "check_input_size",
    "use_cell_activations",
    "create_head_pool",
    "init_weights",
    "ClassifierMixin",
]


class SamePool2d(nn.Module):
    """Average or max pooling with RNNPool-style ``"same"`` window placement.

    Args:
        mode: ``"avg"`` or ``"max"``.
        kernel_size: window size.
        stride: window stride.

    Shape:
        ``(N, C, H, W) -> (N, C, ceil(H / stride), ceil(W / stride))``. Padding is zeros
        excluded from the average (``count_include_pad=False``) and ``-inf`` for max.
    """

    streams_input = True

    def __init__(self, mode: str, kernel_size: int, stride: int) -> None:
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
        self.mode, self.kernel_size, self.stride = mode, kernel_size, stride

    def forward(self, x: Tensor) -> Tensor:
        left, right, top, bottom = rnnpool2d_padding(
            x.shape[-2:], self.kernel_size, self.stride, "same"
        )
        if self.mode == "max":
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
            return F.max_pool2d(x, self.kernel_size, self.stride)
        ones = x.new_ones((1, 1) + tuple(x.shape[-2:]))
        x = F.pad(x, (left, right, top, bottom))
        count = F.avg_pool2d(F.pad(ones, (left, right, top, bottom)), self.kernel_size, self.stride)
        return F.avg_pool2d(x, self.kernel_size, self.stride) / count

    def extra_repr(self) -> str:
        return f"{self.mode}, kernel_size={self.kernel_size}, stride={self.stride}, padding='same'"


class SameConvBNAct(nn.Module):
    """Strided ``k x k`` convolution + BatchNorm + ReLU6 with ``"same"`` window placement.

    The "strided convolution" baseline of the pooling ablation.

    Shape:
        ``(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride))``.
    """

    streams_input = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        pad = rnnpool2d_padding(x.shape[-2:], self.kernel_size, self.stride, "same")
        return self.act(self.bn(self.conv(F.pad(x, pad))))


class GlobalRNNPool2d(RNNPool2d):
    """RNNPool over the whole feature map: the paper's last-layer RNNPool.

    One patch covering the input, whatever its size, so the same model works at any
    resolution (the VWW sweep 96..224). ``kernel_size`` holds the nominal map size used for
    ``repr`` only; :meth:`forward`, :meth:`output_size`, :meth:`macs` and
    :meth:`executed_macs` use the actual input size.

    Args:
        in_channels: ``C``.
        hidden1, hidden2: RNN state sizes (the paper: ``C / 4`` each, so ``C`` outputs).
        nominal_size: map size for ``repr``. Default: 7.

    Shape:
        ``(N, C, H, W) -> (N, 4 * hidden2, 1, 1)``.

    Example::

        >>> GlobalRNNPool2d(32, 8, 8)(torch.randn(2, 32, 5, 3)).shape
        torch.Size([2, 32, 1, 1])
    """

    def __init__(
        self, in_channels: int, hidden1: int, hidden2: int, nominal_size: int = 7, **kwargs
    ) -> None:
        super().__init__(in_channels, hidden1, hidden2, nominal_size, nominal_size, 0, **kwargs)

    def output_size(self, input_hw: Sequence[int]) -> tuple[int, int]:
        return (1, 1)

    def macs(self, input_hw: Sequence[int]) -> int:
        hw = (int(input_hw[0]), int(input_hw[1]))
        return rnnpool2d_macs(self.in_channels, self.hidden1, self.hidden2, hw, (1, 1))

    def executed_macs(self, input_hw: Sequence[int]) -> int:
        hw = (int(input_hw[0]), int(input_hw[1]))
        view = types.SimpleNamespace(
            kernel_size=hw, stride=hw, padding=(0, 0), padding_mode="zeros",
            output_size=lambda _hw: (1, 1),
            in_channels=self.in_channels, hidden1=self.hidden1, hidden2=self.hidden2,
        )
        return RNNPool2d.executed_macs(view, hw)  # type: ignore[arg-type]

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() != 4 or input.shape[1] != self.in_channels:
            raise ValueError(
                f"GlobalRNNPool2d expects (N, {self.in_channels}, H, W), got {tuple(input.shape)}"
            )
        hw = (int(input.shape[-2]), int(input.shape[-1]))
        return rnnpool2d(input, self.rnn1.params(), self.rnn2.params(), hw, hw, 0,
                         backend=self.backend)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, hidden1={self.hidden1}, hidden2={self.hidden2}, "
            "kernel=whole map"
        )


def _rnnpool(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    if out_channels % 4:
        raise ValueError(f"RNNPool outputs 4*h2 channels; {out_channels} is not divisible by 4")
    h = out_channels // 4
    return RNNPool2d(in_channels, h, h, kernel_size, stride, padding="same")


def _with_proj(pool: nn.Module, in_channels: int, out_channels: int) -> nn.Module:
    # Channel-preserving pools get a 1x1 ConvBNAct so the rest of the network is unchanged.
    if in_channels == out_channels:
        return pool
    return nn.Sequential(pool, ConvBNAct(in_channels, out_channels, 1))


def _avgpool(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    return _with_proj(SamePool2d("avg", kernel_size, stride), in_channels, out_channels)


def _maxpool(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    return _with_proj(SamePool2d("max", kernel_size, stride), in_channels, out_channels)


def _convpool(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    return SameConvBNAct(in_channels, out_channels, kernel_size, stride)


def _renet(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    # ReNet reads non-overlapping patches: the patch is the stride.
    if out_channels % 2:
        raise ValueError(f"ReNet outputs 2*hidden channels; {out_channels} is odd")
    return ReNet2d(in_channels, out_channels // 2, stride)


POOL_LAYERS: dict[str, Callable[[int, int, int, int], nn.Module]] = {
    "rnnpool": _rnnpool,
    "avgpool": _avgpool,
    "maxpool": _maxpool,
    "convpool": _convpool,
    "renet": _renet,
}


def create_pool_layer(
    pool_layer: Union[LayerType, None],
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
) -> nn.Module:
    """Build the downsampler that maps ``(C_in, H, W)`` to ``(C_out, ceil(H/s), ceil(W/s))``.

    Args:
        pool_layer: a name in :data:`POOL_LAYERS` (``"rnnpool"``: ``RNNPool2d`` with
            ``h1 = h2 = C_out / 4``; ``"avgpool"`` / ``"maxpool"``: window pooling, then a 1x1
            ConvBNAct to ``C_out``; ``"convpool"``: strided ``k x k`` ConvBNAct; ``"renet"``:
            ReNet with hidden ``C_out / 2`` on ``stride x stride`` patches), or a class /
            ``functools.partial`` called as ``pool_layer(C_in, C_out, kernel_size=k, stride=s)``.
        in_channels, out_channels: ``C_in``, ``C_out``.
        kernel_size: window (patch) size ``k``.
        stride: ``s``.

    >>> pool = create_pool_layer("rnnpool", 32, 64, 6, 4)
    >>> type(pool).__name__, pool.hidden1, pool(torch.randn(1, 32, 112, 112)).shape
    ('RNNPool2d', 16, torch.Size([1, 64, 28, 28]))
    """
    if pool_layer is None:
        raise ValueError("pool_layer is None: nothing to build")
    if isinstance(pool_layer, str):
        if pool_layer not in POOL_LAYERS:
            raise ValueError(f"unknown pool_layer {pool_layer!r}; known: {sorted(POOL_LAYERS)}")
        return POOL_LAYERS[pool_layer](in_channels, out_channels, kernel_size, stride)
    if isinstance(pool_layer, (type, functools.partial)) or callable(pool_layer):
        return pool_layer(in_channels, out_channels, kernel_size=kernel_size, stride=stride)
    raise TypeError(f"pool_layer must be a name, class or callable, got {pool_layer!r}")


def check_input_size(
    x: Tensor, total_stride: int, model: str, min_size: Optional[int] = None
) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is ``(N, C, H, W)`` with ``H``, ``W`` multiples
    of ``total_stride`` (and at least ``min_size``, default ``total_stride``)."""
    if x.dim() != 4:
        raise ValueError(f"{model} expects a 4D input (N, C, H, W), got shape {tuple(x.shape)}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    lo = min_size or total_stride
    if h % total_stride or w % total_stride or h < lo or w < lo:
        raise ValueError(
            f"{model} takes inputs whose height and width are multiples of its total stride "
            f"{total_stride} (and at least {lo}); got {h}x{w}"
        )


def use_cell_activations(model: nn.Module, gate: str = "sigmoid", update: str = "tanh") -> None:
    """Give every FastGRNN cell of ``model`` (its RNNPool and ReNet layers) the non-linearities
    ``gate`` / ``update``: ``"hard_sigmoid"`` / ``"hard_tanh"`` are the int8 kernels' (train with
    them for deployment). The defaults change nothing; other values on a model without such
    cells are an error, not ignored.

    >>> m = nn.Sequential(RNNPool2d(4, 8, 8, 4, 2))
    >>> use_cell_activations(m, "hard_sigmoid", "hard_tanh")
    >>> m[0].rnn1.gate, m[0].rnn2.update
    ('hard_sigmoid', 'hard_tanh')
    """
    if gate not in GATES:
        raise ValueError(f"gate must be one of {sorted(GATES)}, got {gate!r}")
    if update not in UPDATES:
        raise ValueError(f"update must be one of {sorted(UPDATES)}, got {update!r}")
    cells = [m for m in model.modules() if isinstance(m, FastGRNNCell)]
    if not cells and (gate, update) != ("sigmoid", "tanh"):
        raise ValueError(f"gate / update apply to RNNPool layers, and {type(model).__name__} "
                         "has none")
    for cell in cells:
        cell.gate, cell.update = gate, update


def create_head_pool(head_pool: str, channels: int) -> nn.Module:
    """The global pool before the classifier: ``"avg"`` or ``"rnnpool"`` (the paper's
    last-layer RNNPool, ``h1 = h2 = channels / 4`` so it keeps ``channels`` outputs)."""
    if head_pool == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if head_pool == "rnnpool":
        if channels % 4:
            raise ValueError(f"last-layer RNNPool needs channels % 4 == 0, got {channels}")
        return GlobalRNNPool2d(channels, channels // 4, channels // 4)
    raise ValueError(f"head_pool must be 'avg' or 'rnnpool', got {head_pool!r}")


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions, unit BatchNorm, small-normal linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class ClassifierMixin:
    """``init_head`` / ``forward_head`` / ``forward`` / ``reset_classifier`` shared by the
    classification backbones (they call ``init_head`` and define ``forward_features``)."""

    def init_head(self, num_features: int, num_classes: int, head_pool: str,
                  drop_rate: float) -> None:
        """Create the head on ``num_features`` channels: ``global_pool`` (see
        :func:`create_head_pool`), ``dropout`` and ``classifier``."""
        self.num_features = num_features
        self.global_pool = create_head_pool(head_pool, num_features)
        self.dropout = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for ``num_classes`` (0: features only)."""
        if (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                or num_classes < 0):
            raise ValueError(
                f"num_classes must be an int >= 0 (0: no classifier), got {num_classes!r}"
            )
        self.num_classes = num_classes = int(num_classes)
        self.classifier = (  # type: ignore[assignment]
            nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        )

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(self.global_pool(x).flatten(1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
