"""GoogLeNet (Szegedy et al., CVPR 2015, with BatchNorm) and GoogLeNet-RNNPool (SPEC §3).

Registered names: ``googlenet``, ``googlenet_rnnpool``, ``googlenet_rnnpool_lastpool``.
GoogLeNet-RNNPool: RNNPool(patch 8, stride 4, h1 = h2 = 32) maps the 7x7 stem's 112x112x64 to
28x28x128 and replaces max pool 1, the 1x1/3x3 convolutions and max pool 2 (everything at 112
and 56); inception 3a then reads 128 channels instead of 192 (docs/models.md).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from ._blocks import ConvBNAct, LayerType
from ._pooling import (
    ClassifierMixin,
    check_input_size,
    create_pool_layer,
    init_weights,
    use_cell_activations,
)
from ._registry import register_model

__all__ = ["Inception", "GoogLeNet", "INCEPTION_CFG"]

# name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj): Szegedy et al. 2015, Table 1.
INCEPTION_CFG = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class Inception(nn.Module):
    """Four branches (1x1; 1x1-3x3; 1x1-5x5; maxpool 3x3-1x1), concatenated.

    ``block_kind = "inception"`` and ``branch_channels``: the memory analysis counts the input
    plus the three smallest branch outputs (SPEC §2).
    """

    block_kind = "inception"

    def __init__(self, in_channels: int, c1: int, r3: int, c3: int, r5: int, c5: int, pp: int):
        super().__init__()
        relu = dict(act_layer="relu")
        self.b1 = ConvBNAct(in_channels, c1, 1, **relu)
        self.b2 = nn.Sequential(ConvBNAct(in_channels, r3, 1, **relu), ConvBNAct(r3, c3, 3, **relu))
        self.b3 = nn.Sequential(ConvBNAct(in_channels, r5, 1, **relu), ConvBNAct(r5, c5, 5, **relu))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), ConvBNAct(in_channels, pp, 1, **relu))
        self.branch_channels = (c1, c3, c5, pp)
        self.out_channels = c1 + c3 + c5 + pp

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(ClassifierMixin, nn.Module):
    """GoogLeNet (Inception v1) with BatchNorm; no auxiliary classifiers.

    Args:
        num_classes: classifier outputs.
        pool_layer: ``None`` or the downsampler after the stem (replaces max pool 1, conv2,
            conv3 and max pool 2).
        pool_size, pool_stride, pool_channels: its patch, stride, outputs.
        head_pool: ``"avg"`` or ``"rnnpool"`` (``h1 = h2 = 1024 / 4``).
        gate, update: non-linearities of the FastGRNN cells of every RNNPool layer
            (``"hard_sigmoid"``, ``"hard_tanh"``: the int8 kernels'; see
            :func:`~rnnpool.models._pooling.use_cell_activations`).

    Example::

        >>> googlenet_rnnpool(num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        num_classes: int = 1000,
        pool_layer: Optional[LayerType] = None,
        pool_size: int = 8,
        pool_stride: int = 4,
        pool_channels: int = 128,
        head_pool: str = "avg",
        in_chans: int = 3,
        drop_rate: float = 0.4,
        gate: str = "sigmoid",
        update: str = "tanh",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = ConvBNAct(in_chans, 64, 7, 2, act_layer="relu")
        c, red = 64, 2
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=c, reduction=red, module="stem")]
        if pool_layer is None:
            self.pool: nn.Module = nn.Sequential(
                nn.MaxPool2d(3, 2, 1), ConvBNAct(64, 64, 1, act_layer="relu"),
                ConvBNAct(64, 192, 3, act_layer="relu"), nn.MaxPool2d(3, 2, 1),
            )
            c, red = 192, 8
        else:
            self.pool = create_pool_layer(pool_layer, c, pool_channels, pool_size, pool_stride)
            c, red = pool_channels, red * pool_stride
        self.feature_info.append(dict(num_chs=c, reduction=red, module="pool"))
        mods: list[nn.Module] = []
        for name, cfg in INCEPTION_CFG.items():
            if name in ("4a", "5a"):
                mods.append(nn.MaxPool2d(3, 2, 1))
                red *= 2
            block = Inception(c, *cfg)
            mods.append(block)
            c = block.out_channels
            if name in ("3b", "4e", "5b"):
                self.feature_info.append(dict(num_chs=c, reduction=red,
                                              module=f"inception.{len(mods) - 1}"))
        self.inception = nn.Sequential(*mods)
        self.total_stride = red
        self.init_head(c, num_classes, head_pool, drop_rate)
        init_weights(self)
        use_cell_activations(self, gate, update)

    def forward_features(self, x: Tensor) -> Tensor:
        check_input_size(x, self.total_stride, type(self).__name__)
        return self.inception(self.pool(self.stem(x)))


@register_model
def googlenet(num_classes: int = 1000, **kwargs: Any) -> GoogLeNet:
    """GoogLeNet with BatchNorm."""
    return GoogLeNet(num_classes, **kwargs)


@register_model
def googlenet_rnnpool(num_classes: int = 1000, **kwargs: Any) -> GoogLeNet:
    """GoogLeNet-RNNPool: RNNPool(patch 8, stride 4, h=32) after the 7x7 stem."""
    return GoogLeNet(num_classes, **{"pool_layer": "rnnpool", **kwargs})


@register_model
def googlenet_rnnpool_lastpool(num_classes: int = 1000, **kwargs: Any) -> GoogLeNet:
    """GoogLeNet-RNNPool with a last-layer RNNPool (h1 = h2 = 256)."""
    return GoogLeNet(num_classes, **{"pool_layer": "rnnpool", "head_pool": "rnnpool", **kwargs})
