"""MobileNetV1 (Howard et al., 2017) and MobileNetV1-RNNPool for ImageNet-1K (SPEC §3).

Registered names: ``mobilenetv1``, ``mobilenetv1_rnnpool``, ``mobilenetv1_rnnpool_lastpool``.
MobileNetV1-RNNPool: RNNPool(patch 6, stride 4, h1 = h2 = 16) maps the stem's 112x112x32 to
28x28x64 and replaces the four depthwise-separable layers that ran at 112 and 56 (docs/models.md).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

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

__all__ = ["MobileNetV1", "MBV1_CFG"]

# (out channels, stride) of each depthwise-separable layer: Howard et al. 2017, Table 1.
MBV1_CFG = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
            (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNetV1(ClassifierMixin, nn.Module):
    """MobileNetV1: 3x3 stem, depthwise-separable layers (dw 3x3 ConvBNReLU + pw 1x1 ConvBNReLU).

    Args:
        num_classes: classifier outputs.
        layer_cfg: ``(channels, stride)`` per depthwise-separable layer.
        width_mult: channel multiplier.
        pool_layer: ``None`` or the downsampler after the stem (replaces ``replace_layers``).
        pool_size, pool_stride, pool_channels: its patch, stride and outputs.
        replace_layers: depthwise-separable layers the downsampler replaces.
        head_pool: ``"avg"`` or ``"rnnpool"``.
        gate, update: non-linearities of the FastGRNN cells of every RNNPool layer
            (``"hard_sigmoid"``, ``"hard_tanh"``: the int8 kernels'; see
            :func:`~rnnpool.models._pooling.use_cell_activations`).

    Example::

        >>> mobilenetv1_rnnpool(num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        num_classes: int = 1000,
        layer_cfg: Sequence[tuple[int, int]] = MBV1_CFG,
        width_mult: float = 1.0,
        pool_layer: Optional[LayerType] = None,
        pool_size: int = 6,
        pool_stride: int = 4,
        pool_channels: int = 64,
        replace_layers: int = 4,
        head_pool: str = "avg",
        in_chans: int = 3,
        drop_rate: float = 0.0,
        gate: str = "sigmoid",
        update: str = "tanh",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        c, red = int(32 * width_mult), 2
        self.stem = ConvBNAct(in_chans, c, 3, 2, act_layer="relu")
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=c, reduction=red, module="stem")]
        cfg = list(layer_cfg)
        if pool_layer is not None:
            self.pool: nn.Module = create_pool_layer(pool_layer, c, pool_channels, pool_size,
                                                     pool_stride)
            c, red = pool_channels, red * pool_stride
            self.feature_info.append(dict(num_chs=c, reduction=red, module="pool"))
            cfg = cfg[replace_layers:]
        else:
            self.pool = nn.Identity()
        layers = []
        for i, (ch, s) in enumerate(cfg):
            out = int(ch * width_mult)
            layers.append(nn.Sequential(
                ConvBNAct(c, c, 3, s, groups=c, act_layer="relu"),
                ConvBNAct(c, out, 1, act_layer="relu"),
            ))
            c, red = out, red * s
            if s > 1 or i == len(cfg) - 1:
                self.feature_info.append(dict(num_chs=c, reduction=red, module=f"layers.{i}"))
        self.layers = nn.Sequential(*layers)
        self.total_stride = red
        self.init_head(c, num_classes, head_pool, drop_rate)
        init_weights(self)
        use_cell_activations(self, gate, update)

    def forward_features(self, x: Tensor) -> Tensor:
        check_input_size(x, self.total_stride, type(self).__name__)
        return self.layers(self.pool(self.stem(x)))


@register_model
def mobilenetv1(num_classes: int = 1000, **kwargs: Any) -> MobileNetV1:
    """MobileNetV1 1.0."""
    return MobileNetV1(num_classes, **kwargs)


@register_model
def mobilenetv1_rnnpool(num_classes: int = 1000, **kwargs: Any) -> MobileNetV1:
    """MobileNetV1-RNNPool: RNNPool(patch 6, stride 4, h=16) after the stem."""
    return MobileNetV1(num_classes, **{"pool_layer": "rnnpool", **kwargs})


@register_model
def mobilenetv1_rnnpool_lastpool(num_classes: int = 1000, **kwargs: Any) -> MobileNetV1:
    """MobileNetV1-RNNPool with a last-layer RNNPool (h1 = h2 = 256)."""
    return MobileNetV1(num_classes, **{"pool_layer": "rnnpool", "head_pool": "rnnpool", **kwargs})
