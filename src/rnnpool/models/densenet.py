"""DenseNet121 (Huang et al., CVPR 2017), DenseNet121-RNNPool and its pooling ablation (SPEC §3).

Registered names: ``densenet121``, ``densenet121_rnnpool``, ``densenet121_rnnpool_lastpool``,
``densenet121_{avgpool,maxpool,convpool,renet}`` (pooling ablation) and ``densenet121_midpool``
(the transitions' average pools replaced by RNNPool).
DenseNet121-RNNPool: RNNPool(patch 8, stride 4, h1 = h2 = 48) maps the stem's 112x112x64 to
28x28x192 and replaces the max pool, dense block 1, transition 1 and dense block 2. Transition 2
then maps 192 channels to the 256 the original produced, so dense blocks 3 and 4 are
DenseNet121's own (docs/models.md).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..nn import RNNPool2d
from ._blocks import ConvBNAct, LayerType
from ._pooling import (
    ClassifierMixin,
    check_input_size,
    create_pool_layer,
    init_weights,
    use_cell_activations,
)
from ._registry import register_model

__all__ = ["DenseBlock", "DenseNet", "DENSENET121_CFG"]

# Layers per dense block, growth rate 32, 64 stem channels, bottleneck 4k, compression 0.5:
# Huang et al. 2017, Table 1 (DenseNet-121).
DENSENET121_CFG = (6, 12, 24, 16)


class _DenseLayer(nn.Sequential):
    def __init__(self, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            ConvBNAct(in_channels, bn_size * growth, 1, act_layer="relu"),
            nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False),
        )


class DenseBlock(nn.Module):
    """``n`` BN-ReLU-conv1x1-BN-ReLU-conv3x3 layers, each fed the concatenation of all before.

    ``block_kind = "dense"``: the memory analysis counts the block's output (SPEC §2; every
    layer writes its ``growth`` channels into the block's output buffer).
    """

    block_kind = "dense"

    def __init__(self, in_channels: int, num_layers: int, growth: int = 32, bn_size: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(
            _DenseLayer(in_channels + i * growth, growth, bn_size) for i in range(num_layers)
        )
        self.out_channels = in_channels + num_layers * growth

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


class _Transition(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, rnnpool: bool = False) -> None:
        # SPEC §3 intermediate pool replacement: RNNPool(patch 4, stride 2, h1 = h2 = k / 4).
        h = out_channels // 4
        pool = (RNNPool2d(out_channels, h, h, 4, 2, padding="same") if rnnpool
                else nn.AvgPool2d(2, 2))
        super().__init__(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False), pool,
        )


class DenseNet(ClassifierMixin, nn.Module):
    """DenseNet-BC; optional downsampler after the stem, optional last-layer RNNPool.

    Args:
        num_classes: classifier outputs.
        block_cfg: layers per dense block.
        growth: growth rate ``k``.
        pool_layer: ``None`` (max pool, all blocks) or the downsampler replacing the max pool,
            dense block 1, transition 1 and dense block 2.
        pool_size, pool_stride, pool_channels: its patch, stride, outputs.
        head_pool: ``"avg"`` or ``"rnnpool"`` (``h1 = h2 = 1024 / 4``).
        transition_rnnpool: replace the transitions' 2x2 average pools by RNNPool (patch 4,
            stride 2, ``h1 = h2 = k / 4`` for ``k`` channels): the paper's intermediate
            pool replacement.
        gate, update: non-linearities of the FastGRNN cells of every RNNPool layer
            (``"hard_sigmoid"``, ``"hard_tanh"``: the int8 kernels'; see
            :func:`~rnnpool.models._pooling.use_cell_activations`).

    Example::

        >>> densenet121_rnnpool(num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        num_classes: int = 1000,
        block_cfg: Sequence[int] = DENSENET121_CFG,
        growth: int = 32,
        pool_layer: Optional[LayerType] = None,
        pool_size: int = 8,
        pool_stride: int = 4,
        pool_channels: int = 192,
        head_pool: str = "avg",
        transition_rnnpool: bool = False,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        gate: str = "sigmoid",
        update: str = "tanh",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = ConvBNAct(in_chans, 2 * growth, 7, 2, act_layer="relu")
        c, red = 2 * growth, 2
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=c, reduction=red, module="stem")]
        widths = [c]  # channels after each transition, as DenseNet121 has them
        for n in block_cfg[:-1]:
            widths.append((widths[-1] + n * growth) // 2)
        features: list[nn.Module] = []
        if pool_layer is None:
            self.pool: nn.Module = nn.MaxPool2d(3, 2, 1)
            red *= 2
            start = 0
        else:
            self.pool = create_pool_layer(pool_layer, c, pool_channels, pool_size, pool_stride)
            c, red = pool_channels, red * pool_stride
            self.feature_info.append(dict(num_chs=c, reduction=red, module="pool"))
            # The downsampler stands for blocks 1-2 and transition 1: transition 2 restores
            # the width DenseNet121 has after it.
            features.append(_Transition(c, widths[2], transition_rnnpool))
            c, red, start = widths[2], red * 2, 2
            self.feature_info.append(dict(num_chs=c, reduction=red, module="features.0"))
        for i in range(start, len(block_cfg)):
            block = DenseBlock(c, block_cfg[i], growth)
            features.append(block)
            c = block.out_channels
            if i < len(block_cfg) - 1:
                features.append(_Transition(c, c // 2, transition_rnnpool))
                self.feature_info.append(dict(num_chs=c, reduction=red,
                                              module=f"features.{len(features) - 2}"))
                c, red = c // 2, red * 2
        features += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*features)
        self.feature_info.append(dict(num_chs=c, reduction=red, module="features"))
        self.total_stride = red
        self.init_head(c, num_classes, head_pool, drop_rate)
        init_weights(self)
        use_cell_activations(self, gate, update)

    def forward_features(self, x: Tensor) -> Tensor:
        check_input_size(x, self.total_stride, type(self).__name__)
        return self.features(self.pool(self.stem(x)))


def _rnnpool_dn(num_classes: int, pool_layer: str, **kwargs: Any) -> DenseNet:
    # SPEC §3: RNNPool(patch 8, stride 4, h1 = h2 = 48) -> 192 channels at 28x28.
    return DenseNet(num_classes, **{"pool_layer": pool_layer, **kwargs})


@register_model
def densenet121(num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """DenseNet121."""
    return DenseNet(num_classes, **kwargs)


@register_model
def densenet121_rnnpool(num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """DenseNet121-RNNPool: RNNPool(patch 8, stride 4, h=48) replaces max pool, blocks 1-2."""
    return _rnnpool_dn(num_classes, "rnnpool", **kwargs)


@register_model
def densenet121_rnnpool_lastpool(num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """DenseNet121-RNNPool with a last-layer RNNPool (h1 = h2 = 256)."""
    return _rnnpool_dn(num_classes, "rnnpool", head_pool="rnnpool", **kwargs)


@register_model
def densenet121_midpool(num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """DenseNet121 with every transition's average pool replaced by RNNPool(4, s2, h=k/4)."""
    return DenseNet(num_classes, **{"transition_rnnpool": True, **kwargs})


@register_model
def densenet121_avgpool(num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """Ablation: 8x8 stride-4 average pool (+ 1x1 conv to 192) in RNNPool's place."""
    return _rnnpool_dn(num_classes, "avgpool", **kwargs)


@register_model
def densenet121_maxpool(num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """Ablation: 8x8 stride-4 max pool (+ 1x1 conv to 192) in RNNPool's place."""
    return _rnnpool_dn(num_classes, "maxpool", **kwargs)


@register_model
def densenet121_convpool(num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """Ablation: 8x8 stride-4 convolution (64 -> 192) in RNNPool's place."""
    return _rnnpool_dn(num_classes, "convpool", **kwargs)


@register_model
def densenet121_renet(num_classes: int = 1000, **kwargs: Any) -> DenseNet:
    """Ablation: ReNet (4x4 patches, hidden 96) in RNNPool's place."""
    return _rnnpool_dn(num_classes, "renet", **kwargs)
