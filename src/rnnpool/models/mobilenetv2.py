"""MobileNetV2 (Sandler et al., CVPR 2018) and its RNNPool versions (SPEC §3).

Registered names: ``mobilenetv2`` (base), ``mobilenetv2_lastpool`` (base + last-layer RNNPool),
``mobilenetv2_<pool>`` for the downsampler after the first conv (``rnnpool``, ``avgpool``,
``maxpool``, ``convpool``, ``renet``: the pooling ablation), ``mobilenetv2_rnnpool_lastpool``,
and the RNNPool hyper-parameter variants ``mobilenetv2_rnnpool_{p4,p8,h8,h32,s8p12,x2}``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from torch import Tensor, nn

from ._blocks import ConvBNAct, InvertedResidual, LayerType, make_divisible
from ._pooling import (
    ClassifierMixin,
    check_input_size,
    create_pool_layer,
    init_weights,
    use_cell_activations,
)
from ._registry import register_model

__all__ = ["MobileNetV2", "MBV2_CFG", "MBV2_RNNPOOL_CFG", "MBV2_RNNPOOL_S8_CFG"]

# (t, c, n, s): expansion, output channels, repeats, stride of the first block.
# Sandler et al. 2018, Table 2 (after the 3x3 stem conv with 32 channels).
MBV2_CFG = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# RNNPool paper Table (SPEC §3): the RNNPool (112 -> 28) replaces the 16, 24 and 32 stages.
MBV2_RNNPOOL_CFG = MBV2_CFG[3:]
# Stride-8 RNNPool (patch 12, 112 -> 14) also replaces the four 64-channel blocks.
MBV2_RNNPOOL_S8_CFG = MBV2_CFG[4:]

IntSeq = Union[int, Sequence[int]]


def _tuple(v: IntSeq) -> tuple[int, ...]:
    return (v,) if isinstance(v, int) else tuple(v)


class MobileNetV2(ClassifierMixin, nn.Module):
    r"""MobileNetV2 with an optional downsampler after the stem and an optional last-layer RNNPool.

    ``stem (3x3, s2) -> [pool layers] -> MBConv stages -> 1x1 conv -> global pool -> linear``.

    Args:
        num_classes: classifier outputs (10 for ImageNet-10, 1000 for ImageNet-1K, 2 for VWW).
        block_cfg: stage table of ``(t, c, n, s)`` tuples (``c`` before ``width_mult``).
        width_mult: channel multiplier for the stages (rounded by ``make_divisible``).
        stem_channels: channels of the first conv (not scaled).
        last_channels: channels of the final 1x1 conv (not scaled).
        pool_layer: downsampler(s) after the stem: a name (``"rnnpool"``, ``"avgpool"``,
            ``"maxpool"``, ``"convpool"``, ``"renet"``), class or factory, resolved by
            :func:`~rnnpool.models._pooling.create_pool_layer`; ``None`` for none.
        pool_size, pool_stride, pool_channels: patch size, stride and output channels of each
            downsampler (an int, or one entry per downsampler applied in sequence).
        head_pool: ``"avg"`` (global average pool) or ``"rnnpool"`` (last-layer RNNPool with
            ``h1 = h2 = last_channels / 4``).
        in_chans: input channels.
        drop_rate: dropout before the classifier.
        act_layer: activation of the convolutions.
        gate, update: non-linearities of the FastGRNN cells of every RNNPool layer
            (``"hard_sigmoid"``, ``"hard_tanh"``: the int8 kernels'; see
            :func:`~rnnpool.models._pooling.use_cell_activations`).

    Shape:
        ``(N, in_chans, H, W) -> (N, num_classes)`` with ``H``, ``W`` multiples of the total
        stride (32 for every registered variant).

    Example::

        >>> m = MobileNetV2(10, block_cfg=MBV2_RNNPOOL_CFG, pool_layer="rnnpool")
        >>> m(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        num_classes: int = 1000,
        block_cfg: Sequence[tuple[float, int, int, int]] = MBV2_CFG,
        width_mult: float = 1.0,
        stem_channels: int = 32,
        last_channels: int = 1280,
        pool_layer: Optional[LayerType] = None,
        pool_size: IntSeq = 6,
        pool_stride: IntSeq = 4,
        pool_channels: IntSeq = 64,
        head_pool: str = "avg",
        in_chans: int = 3,
        drop_rate: float = 0.2,
        gate: str = "sigmoid",
        update: str = "tanh",
        act_layer: LayerType = "relu6",
    ) -> None:
        super().__init__()
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.feature_info: list[dict[str, Any]] = []
        self.stem = ConvBNAct(in_chans, stem_channels, 3, 2, act_layer=act_layer)
        c, reduction = stem_channels, 2
        self.feature_info.append(dict(num_chs=c, reduction=reduction, module="stem"))

        pools: list[nn.Module] = []
        if pool_layer is not None:
            sizes, strides, chans = _tuple(pool_size), _tuple(pool_stride), _tuple(pool_channels)
            if not len(sizes) == len(strides) == len(chans):
                raise ValueError(
                    f"pool_size, pool_stride and pool_channels need one entry per downsampler, "
                    f"got {sizes}, {strides}, {chans}"
                )
            for i, (k, s, out) in enumerate(zip(sizes, strides, chans)):
                pools.append(create_pool_layer(pool_layer, c, out, k, s))
                c, reduction = out, reduction * s
                self.feature_info.append(dict(num_chs=c, reduction=reduction, module=f"pools.{i}"))
        self.pools = nn.Sequential(*pools)

        stages: list[nn.Module] = []
        for i, (t, ch, n, s) in enumerate(block_cfg):
            out = make_divisible(ch * width_mult)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(c, out, s if j == 0 else 1, t, act_layer=act_layer))
                c = out
            stages.append(nn.Sequential(*blocks))
            reduction *= s
            self.feature_info.append(dict(num_chs=c, reduction=reduction, module=f"blocks.{i}"))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = ConvBNAct(c, last_channels, 1, act_layer=act_layer)
        self.feature_info.append(
            dict(num_chs=last_channels, reduction=reduction, module="conv_head")
        )
        self.total_stride = reduction

        self.init_head(last_channels, num_classes, head_pool, drop_rate)
        init_weights(self)
        use_cell_activations(self, gate, update)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, last_channels, H / 32, W / 32)``."""
        check_input_size(x, self.total_stride, type(self).__name__)
        return self.conv_head(self.blocks(self.pools(self.stem(x))))


def _rnnpool_mbv2(num_classes: int, **kwargs: Any) -> MobileNetV2:
    # SPEC §3: RNNPool(patch 6, stride 4, h1 = h2 = 16) after the stem, 112 -> 28, 64 channels.
    args: dict[str, Any] = dict(block_cfg=MBV2_RNNPOOL_CFG, pool_layer="rnnpool")
    return MobileNetV2(num_classes, **{**args, **kwargs})


@register_model
def mobilenetv2(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2 1.0 (Sandler et al. 2018)."""
    return MobileNetV2(num_classes, **kwargs)


@register_model
def mobilenetv2_lastpool(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2 with the final average pool replaced by RNNPool (h1 = h2 = 1280 / 4)."""
    return MobileNetV2(num_classes, head_pool="rnnpool", **kwargs)


@register_model
def mobilenetv2_rnnpool(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2-RNNPool: RNNPool(patch 6, stride 4, h=16) replaces the 16/24/32 stages."""
    return _rnnpool_mbv2(num_classes, **kwargs)


@register_model
def mobilenetv2_rnnpool_lastpool(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2-RNNPool with a last-layer RNNPool instead of the average pool."""
    return _rnnpool_mbv2(num_classes, head_pool="rnnpool", **kwargs)


@register_model
def mobilenetv2_avgpool(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """Ablation: 6x6 stride-4 average pool (+ 1x1 conv to 64) in RNNPool's place."""
    return _rnnpool_mbv2(num_classes, pool_layer="avgpool", **kwargs)


@register_model
def mobilenetv2_maxpool(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """Ablation: 6x6 stride-4 max pool (+ 1x1 conv to 64) in RNNPool's place."""
    return _rnnpool_mbv2(num_classes, pool_layer="maxpool", **kwargs)


@register_model
def mobilenetv2_convpool(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """Ablation: 6x6 stride-4 convolution (32 -> 64) in RNNPool's place."""
    return _rnnpool_mbv2(num_classes, pool_layer="convpool", **kwargs)


@register_model
def mobilenetv2_renet(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """Ablation: ReNet on 4x4 patches (hidden 32, 64 outputs) in RNNPool's place."""
    return _rnnpool_mbv2(num_classes, pool_layer="renet", **kwargs)


@register_model
def mobilenetv2_rnnpool_p4(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """Hyper-parameter variant: RNNPool patch 4 (stride 4, h=16)."""
    return _rnnpool_mbv2(num_classes, pool_size=4, **kwargs)


@register_model
def mobilenetv2_rnnpool_p8(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """Hyper-parameter variant: RNNPool patch 8 (stride 4, h=16)."""
    return _rnnpool_mbv2(num_classes, pool_size=8, **kwargs)


@register_model
def mobilenetv2_rnnpool_h8(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """Hyper-parameter variant: h1 = h2 = 8 (32 output channels)."""
    return _rnnpool_mbv2(num_classes, pool_channels=32, **kwargs)


@register_model
def mobilenetv2_rnnpool_h32(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """Hyper-parameter variant: h1 = h2 = 32 (128 output channels)."""
    return _rnnpool_mbv2(num_classes, pool_channels=128, **kwargs)


@register_model
def mobilenetv2_rnnpool_s8p12(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """Hyper-parameter variant: patch 12, stride 8 (112 -> 14), also replacing the 64 stage."""
    cfg = dict(block_cfg=MBV2_RNNPOOL_S8_CFG, pool_size=12, pool_stride=8)
    return _rnnpool_mbv2(num_classes, **{**cfg, **kwargs})


@register_model
def mobilenetv2_rnnpool_x2(num_classes: int = 1000, **kwargs: Any) -> MobileNetV2:
    """Two RNNPools: patch 6 stride 4 (112 -> 28), then patch 4 stride 2 (28 -> 14), h=16."""
    cfg = dict(block_cfg=MBV2_RNNPOOL_S8_CFG, pool_size=(6, 4), pool_stride=(4, 2),
               pool_channels=(64, 64))
    return _rnnpool_mbv2(num_classes, **{**cfg, **kwargs})
