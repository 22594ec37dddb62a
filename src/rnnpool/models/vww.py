"""Visual Wake Words models (SPEC §4): MobileNetV2-0.35x with 8 stem and 320 last channels.

Registered names: ``vww_mobilenetv2`` (base), ``vww_mobilenetv2_lastpool``,
``vww_mobilenetv2_<pool>`` (``rnnpool``: patch 6, stride 4, h1 = h2 = 8 after the first conv;
``avgpool``, ``maxpool``, ``convpool``, ``renet``: the pooling ablation at the same place) and
``vww_mobilenetv2_rnnpool_lastpool``. Every model takes inputs of 96..224 pixels (any
multiple of 32); the default head has 2 classes (person / no person).
"""

from __future__ import annotations

from typing import Any

from ._registry import register_model
from .mobilenetv2 import MBV2_CFG, MBV2_RNNPOOL_CFG, MobileNetV2

__all__ = ["vww_mobilenetv2", "vww_mobilenetv2_rnnpool"]

# MobileNetV2-0.35x (stages of Sandler et al. Table 2 scaled by 0.35, rounded to multiples of
# 8), first conv 8 channels, last conv 320 channels: SPEC §4.
_VWW = dict(width_mult=0.35, stem_channels=8, last_channels=320)


def _vww(num_classes: int, pool_layer: Any = None, **kwargs: Any) -> MobileNetV2:
    if pool_layer is None:
        return MobileNetV2(num_classes, **{**_VWW, **kwargs})
    # RNNPool(patch 6, stride 4, h1 = h2 = 8): 4 * 8 = 32 output channels, 112 -> 28 at 224.
    args = dict(_VWW, block_cfg=MBV2_RNNPOOL_CFG, pool_layer=pool_layer, pool_size=6,
                pool_stride=4, pool_channels=32)
    return MobileNetV2(num_classes, **{**args, **kwargs})


@register_model
def vww_mobilenetv2(num_classes: int = 2, **kwargs: Any) -> MobileNetV2:
    """VWW baseline: MobileNetV2-0.35x, 8 stem channels, 320 last channels."""
    return _vww(num_classes, block_cfg=MBV2_CFG, **kwargs)


@register_model
def vww_mobilenetv2_lastpool(num_classes: int = 2, **kwargs: Any) -> MobileNetV2:
    """VWW baseline with a last-layer RNNPool (h1 = h2 = 80)."""
    return _vww(num_classes, head_pool="rnnpool", **kwargs)


@register_model
def vww_mobilenetv2_rnnpool(num_classes: int = 2, **kwargs: Any) -> MobileNetV2:
    """VWW RNNPool model: RNNPool(patch 6, stride 4, h=8) after the first conv."""
    return _vww(num_classes, "rnnpool", **kwargs)


@register_model
def vww_mobilenetv2_rnnpool_lastpool(num_classes: int = 2, **kwargs: Any) -> MobileNetV2:
    """VWW RNNPool model with a last-layer RNNPool."""
    return _vww(num_classes, "rnnpool", head_pool="rnnpool", **kwargs)


@register_model
def vww_mobilenetv2_avgpool(num_classes: int = 2, **kwargs: Any) -> MobileNetV2:
    """Ablation: average pool (patch 6, stride 4, + 1x1 conv to 32) in RNNPool's place."""
    return _vww(num_classes, "avgpool", **kwargs)


@register_model
def vww_mobilenetv2_maxpool(num_classes: int = 2, **kwargs: Any) -> MobileNetV2:
    """Ablation: max pool (patch 6, stride 4, + 1x1 conv to 32) in RNNPool's place."""
    return _vww(num_classes, "maxpool", **kwargs)


@register_model
def vww_mobilenetv2_convpool(num_classes: int = 2, **kwargs: Any) -> MobileNetV2:
    """Ablation: strided 6x6 convolution (8 -> 32) in RNNPool's place."""
    return _vww(num_classes, "convpool", **kwargs)


@register_model
def vww_mobilenetv2_renet(num_classes: int = 2, **kwargs: Any) -> MobileNetV2:
    """Ablation: ReNet (4x4 patches, hidden 16) in RNNPool's place."""
    return _vww(num_classes, "renet", **kwargs)
