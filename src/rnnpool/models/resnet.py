"""ResNet18 (He et al., CVPR 2016) and ResNet18-RNNPool (SPEC §3).

Registered names: ``resnet18``, ``resnet18_rnnpool``, ``resnet18_rnnpool_lastpool``.
ResNet18-RNNPool: RNNPool(patch 8, stride 4, h1 = h2 = 32) after the 7x7 stride-2 stem maps
112x112x64 to 28x28x128 and replaces the max pool and the 64 and 128 stages (everything that
ran at 112 and 56); the 256 and 512 stages follow unchanged (docs/models.md).
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

__all__ = ["BasicBlock", "ResNet", "RESNET18_CFG"]

# (channels, blocks, stride) per stage: He et al. 2016, Table 1 (18-layer).
RESNET18_CFG = ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))


class BasicBlock(nn.Module):
    """Two 3x3 ConvBN layers with an identity (or 1x1 ConvBN) shortcut, then ReLU.

    ``block_kind = "residual"``: the memory analysis counts ``max(input, output)`` (SPEC §2).
    """

    block_kind = "residual"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, out_channels, 3, stride, act_layer="relu")
        self.conv2 = ConvBNAct(out_channels, out_channels, 3, 1, act_layer=None)
        self.shortcut: Optional[nn.Module] = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBNAct(in_channels, out_channels, 1, stride, act_layer=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        s = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv2(self.conv1(x)) + s)


class ResNet(ClassifierMixin, nn.Module):
    """ResNet with BasicBlocks; optional downsampler after the stem and last-layer RNNPool.

    Args:
        num_classes: classifier outputs.
        stage_cfg: ``(channels, blocks, stride)`` per stage.
        pool_layer: ``None`` (max pool 3x3 s2, all stages) or a downsampler (name / class /
            factory, see ``create_pool_layer``) replacing the max pool and ``replace_stages``.
        pool_size, pool_stride, pool_channels: the downsampler's patch, stride, outputs.
        replace_stages: stages the downsampler replaces.
        head_pool: ``"avg"`` or ``"rnnpool"``.
        in_chans, drop_rate: input channels, dropout before the classifier.
        gate, update: non-linearities of the FastGRNN cells of every RNNPool layer
            (``"hard_sigmoid"``, ``"hard_tanh"``: the int8 kernels'; see
            :func:`~rnnpool.models._pooling.use_cell_activations`).

    Example::

        >>> resnet18_rnnpool(num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        num_classes: int = 1000,
        stage_cfg: Sequence[tuple[int, int, int]] = RESNET18_CFG,
        pool_layer: Optional[LayerType] = None,
        pool_size: int = 8,
        pool_stride: int = 4,
        pool_channels: int = 128,
        replace_stages: int = 2,
        head_pool: str = "avg",
        in_chans: int = 3,
        drop_rate: float = 0.0,
        gate: str = "sigmoid",
        update: str = "tanh",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = ConvBNAct(in_chans, 64, 7, 2, act_layer="relu")
        c, red = 64, 2
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=c, reduction=red, module="stem")]
        if pool_layer is None:
            self.pool: nn.Module = nn.MaxPool2d(3, 2, 1)
            red *= 2
            stages = list(stage_cfg)
        else:
            self.pool = create_pool_layer(pool_layer, c, pool_channels, pool_size, pool_stride)
            c, red = pool_channels, red * pool_stride
            self.feature_info.append(dict(num_chs=c, reduction=red, module="pool"))
            stages = list(stage_cfg)[replace_stages:]
        layers = []
        for i, (ch, n, s) in enumerate(stages):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c, ch, s if j == 0 else 1))
                c = ch
            red *= s
            layers.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=c, reduction=red, module=f"stages.{i}"))
        self.stages = nn.Sequential(*layers)
        self.total_stride = red
        self.init_head(c, num_classes, head_pool, drop_rate)
        init_weights(self)
        use_cell_activations(self, gate, update)

    def forward_features(self, x: Tensor) -> Tensor:
        check_input_size(x, self.total_stride, type(self).__name__)
        return self.stages(self.pool(self.stem(x)))


@register_model
def resnet18(num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet18."""
    return ResNet(num_classes, **kwargs)


@register_model
def resnet18_rnnpool(num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet18-RNNPool: RNNPool(patch 8, stride 4, h=32) replaces max pool + 64/128 stages."""
    return ResNet(num_classes, **{"pool_layer": "rnnpool", **kwargs})


@register_model
def resnet18_rnnpool_lastpool(num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet18-RNNPool with a last-layer RNNPool (h1 = h2 = 128)."""
    return ResNet(num_classes, **{"pool_layer": "rnnpool", "head_pool": "rnnpool", **kwargs})
