"""EfficientNet-B0 (Tan & Le, ICML 2019) and EfficientNet-B0-RNNPool (SPEC §3).

Registered names: ``efficientnet_b0``, ``efficientnet_b0_rnnpool``,
``efficientnet_b0_rnnpool_lastpool``. EfficientNet-B0-RNNPool: RNNPool(patch 6, stride 4,
h1 = h2 = 16) maps the stem's 112x112x32 to 28x28x64 and replaces the 16, 24 and 40 stages
(everything that ran at 112 and 56); the 80-channel stage reads 64 channels (docs/models.md).
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

__all__ = ["MBConvSE", "EfficientNet", "EFFNET_B0_CFG"]

# (t, k, c, n, s): expansion, kernel, channels, repeats, stride. Tan & Le 2019, Table 1.
EFFNET_B0_CFG = (
    (1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2),
    (6, 5, 112, 3, 1), (6, 5, 192, 4, 2), (6, 3, 320, 1, 1),
)


class MBConvSE(nn.Module):
    """MBConv with squeeze-and-excitation and SiLU: 1x1 expand, k x k depthwise, SE, 1x1 project.

    ``block_kind = "mbconv"``: the memory analysis counts input + output (SPEC §2).
    """

    block_kind = "mbconv"

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expand_ratio: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = (ConvBNAct(in_channels, hidden, 1, act_layer="silu")
                       if expand_ratio != 1 else None)
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act_layer="silu")
        squeeze = max(1, int(in_channels * se_ratio))
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden, squeeze, 1), nn.SiLU(inplace=True),
            nn.Conv2d(squeeze, hidden, 1), nn.Sigmoid(),
        )
        self.project = ConvBNAct(hidden, out_channels, 1, act_layer=None)

    def forward(self, x: Tensor) -> Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        y = self.project(y * self.se(y))
        return x + y if self.use_residual else y


class EfficientNet(ClassifierMixin, nn.Module):
    """EfficientNet-B0 (no stochastic depth); optional downsampler and last-layer RNNPool.

    Args:
        num_classes: classifier outputs.
        block_cfg: ``(t, k, c, n, s)`` stages.
        pool_layer: ``None`` or the downsampler after the stem replacing ``replace_stages``.
        pool_size, pool_stride, pool_channels: its patch, stride, outputs.
        head_pool: ``"avg"`` or ``"rnnpool"`` (``h1 = h2 = 1280 / 4``).
        gate, update: non-linearities of the FastGRNN cells of every RNNPool layer
            (``"hard_sigmoid"``, ``"hard_tanh"``: the int8 kernels'; see
            :func:`~rnnpool.models._pooling.use_cell_activations`).

    Example::

        >>> efficientnet_b0_rnnpool(num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        num_classes: int = 1000,
        block_cfg: Sequence[tuple[int, int, int, int, int]] = EFFNET_B0_CFG,
        pool_layer: Optional[LayerType] = None,
        pool_size: int = 6,
        pool_stride: int = 4,
        pool_channels: int = 64,
        replace_stages: int = 3,
        head_pool: str = "avg",
        in_chans: int = 3,
        drop_rate: float = 0.2,
        gate: str = "sigmoid",
        update: str = "tanh",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = ConvBNAct(in_chans, 32, 3, 2, act_layer="silu")
        c, red = 32, 2
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=c, reduction=red, module="stem")]
        cfg = list(block_cfg)
        if pool_layer is not None:
            self.pool: nn.Module = create_pool_layer(pool_layer, c, pool_channels, pool_size,
                                                     pool_stride)
            c, red = pool_channels, red * pool_stride
            self.feature_info.append(dict(num_chs=c, reduction=red, module="pool"))
            cfg = cfg[replace_stages:]
        else:
            self.pool = nn.Identity()
        stages = []
        for i, (t, k, ch, n, s) in enumerate(cfg):
            blocks = []
            for j in range(n):
                blocks.append(MBConvSE(c, ch, k, s if j == 0 else 1, t))
                c = ch
            red *= s
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=c, reduction=red, module=f"blocks.{i}"))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = ConvBNAct(c, 1280, 1, act_layer="silu")
        self.feature_info.append(dict(num_chs=1280, reduction=red, module="conv_head"))
        self.total_stride = red
        self.init_head(1280, num_classes, head_pool, drop_rate)
        init_weights(self)
        use_cell_activations(self, gate, update)

    def forward_features(self, x: Tensor) -> Tensor:
        check_input_size(x, self.total_stride, type(self).__name__)
        return self.conv_head(self.blocks(self.pool(self.stem(x))))


@register_model
def efficientnet_b0(num_classes: int = 1000, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B0."""
    return EfficientNet(num_classes, **kwargs)


@register_model
def efficientnet_b0_rnnpool(num_classes: int = 1000, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B0-RNNPool: RNNPool(patch 6, stride 4, h=16) after the stem."""
    return EfficientNet(num_classes, **{"pool_layer": "rnnpool", **kwargs})


@register_model
def efficientnet_b0_rnnpool_lastpool(num_classes: int = 1000, **kwargs: Any) -> EfficientNet:
    """EfficientNet-B0-RNNPool with a last-layer RNNPool (h1 = h2 = 320)."""
    return EfficientNet(num_classes, **{"pool_layer": "rnnpool", "head_pool": "rnnpool", **kwargs})
