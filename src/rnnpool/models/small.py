"""Small CNNs for the Fashion-MNIST (28x28 grey) pooling experiments.

Two families, both taking the pooling operator by injection (``pool_layer``):

* :class:`PoolProbe`, the single-op probe of the paper's appendix C.2: ONE operator maps the
  whole image to 1x1, then a linear classifier. RNNPool (patch = whole image, h1 = h2 = 32,
  128 features), a strided convolution (kernel = whole image, 128 filters, BN, ReLU), average
  pooling or max pooling (1 feature per input channel).
* :class:`SmallCNN`, the downsampler ablation: ``ConvBNAct(1->16)`` at 28x28, a 4x downsampler
  to 7x7x32 (RNNPool patch 6 / avg pool / max pool / strided conv / ReNet, built by
  :func:`~rnnpool.models._pooling.create_pool_layer`, so every variant hands the same 7x7x32 map
  to the rest), then ``ConvBNAct(32->64)``, ``ConvBNAct(64->64, stride 2)``, global average pool
  and a linear classifier. ``fmnist_cnn_base`` replaces the single downsampler by two stride-2
  3x3 convolutions (the conventional design RNNPool replaces).
"""

from __future__ import annotations

from typing import Any, Dict, List

from torch import Tensor, nn

from ..nn import RNNPool2d
from ._blocks import ConvBNAct, LayerType
from ._pooling import create_pool_layer
from ._registry import register_model

__all__ = ["PoolProbe", "SmallCNN"]


class PoolProbe(nn.Module):
    """One pooling operator over the whole image, then ``Linear(features, num_classes)``.

    Args:
        pool: the operator; must map ``(N, C, H, W)`` to ``(N, features, 1, 1)``.
        features: its output channels.
        num_classes: classes.

    Shape:
        ``(N, C, H, W) -> (N, num_classes)``.
    """

    def __init__(self, pool: nn.Module, features: int, num_classes: int = 10) -> None:
        super().__init__()
        self.pool = pool
        self.fc = nn.Linear(features, num_classes)
        self.num_features = features
        self.feature_info: List[Dict[str, Any]] = [
            {"num_chs": features, "reduction": None, "module": "pool"}]

    def forward_features(self, x: Tensor) -> Tensor:
        return self.pool(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if x.dim() != 4 or x.shape[-2:] != (1, 1):
            raise ValueError(f"PoolProbe: the pooling op must map the image to 1x1, got "
                             f"{tuple(x.shape)}; build the model with img_size = the input size")
        x = x.flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class SmallCNN(nn.Module):
    """Stem conv, a 4x downsampler (injected), two 3x3 convs, global average pool, linear.

    Args:
        pool_layer: downsampler name (``"rnnpool"``, ``"avgpool"``, ``"maxpool"``, ``"convpool"``,
            ``"renet"``) or factory, see :func:`~rnnpool.models._pooling.create_pool_layer`.
        in_chans: input channels. Default: 1.
        num_classes: classes. Default: 10.
        stem_chs, pool_chs, width: channels of the stem, after the downsampler, and of the body.
        pool_kernel: downsampler window (ReNet uses the stride, 4). Default: 6.

    Shape:
        ``(N, C, H, W) -> (N, num_classes)``; 28x28 -> 28x28x16 -> 7x7x32 -> 7x7x64 -> 4x4x64.

    Example:
        >>> m = SmallCNN("rnnpool")
        >>> m(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, pool_layer: LayerType = "rnnpool", in_chans: int = 1,
                 num_classes: int = 10, stem_chs: int = 16, pool_chs: int = 32,
                 width: int = 64, pool_kernel: int = 6) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_chans, stem_chs, 3)
        pool = create_pool_layer(pool_layer, stem_chs, pool_chs, pool_kernel, 4)
        # RNNPool / ReNet outputs are bounded RNN states: normalise them like a conv output.
        if isinstance(pool, RNNPool2d) or type(pool).__name__ == "ReNet2d":
            pool = nn.Sequential(pool, nn.BatchNorm2d(pool_chs))
        self.pool = pool
        self.body = nn.Sequential(ConvBNAct(pool_chs, width, 3), ConvBNAct(width, width, 3, 2))
        self.fc = nn.Linear(width, num_classes)
        self.num_features = width
        self.feature_info = [
            {"num_chs": stem_chs, "reduction": 1, "module": "stem"},
            {"num_chs": pool_chs, "reduction": 4, "module": "pool"},
            {"num_chs": width, "reduction": 8, "module": "body"},
        ]

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(self.pool(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------ single-op probe (App. C.2)

@register_model
def fmnist_probe_rnnpool(in_chans: int = 1, img_size: int = 28, num_classes: int = 10,
                         hidden: int = 32) -> PoolProbe:
    """RNNPool(patch = image, h1 = h2 = hidden) -> 4*hidden features -> linear."""
    return PoolProbe(RNNPool2d(in_chans, hidden, hidden, img_size), 4 * hidden, num_classes)


@register_model
def fmnist_probe_conv(in_chans: int = 1, img_size: int = 28, num_classes: int = 10,
                      features: int = 128) -> PoolProbe:
    """Conv(kernel = image, ``features`` filters) + BN + ReLU -> linear."""
    pool = nn.Sequential(nn.Conv2d(in_chans, features, img_size, bias=False),
                         nn.BatchNorm2d(features), nn.ReLU(inplace=True))
    return PoolProbe(pool, features, num_classes)


@register_model
def fmnist_probe_avg(in_chans: int = 1, num_classes: int = 10) -> PoolProbe:
    """Global average pool (one feature per channel) -> linear."""
    return PoolProbe(nn.AdaptiveAvgPool2d(1), in_chans, num_classes)


@register_model
def fmnist_probe_max(in_chans: int = 1, num_classes: int = 10) -> PoolProbe:
    """Global max pool (one feature per channel) -> linear."""
    return PoolProbe(nn.AdaptiveMaxPool2d(1), in_chans, num_classes)


# ------------------------------------------------------------------ downsampler ablation

@register_model
def fmnist_cnn_rnnpool(**kwargs: Any) -> SmallCNN:
    """SmallCNN with RNNPool(patch 6, stride 4, h1 = h2 = 8) as the 4x downsampler."""
    return SmallCNN("rnnpool", **kwargs)


def _hard_rnnpool(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Module:
    h = out_channels // 4
    return RNNPool2d(in_channels, h, h, kernel_size, stride, padding="same",
                     gate="hard_sigmoid", update="hard_tanh")


@register_model
def fmnist_cnn_rnnpool_hard(**kwargs: Any) -> SmallCNN:
    """``fmnist_cnn_rnnpool`` with hard sigmoid / hard tanh cells, as the int8 kernels compute them
    (the shipped, deployable Fashion-MNIST model)."""
    return SmallCNN(_hard_rnnpool, **kwargs)


@register_model
def fmnist_cnn_avgpool(**kwargs: Any) -> SmallCNN:
    """SmallCNN with 6x6/4 average pooling + 1x1 ConvBNAct(16->32)."""
    return SmallCNN("avgpool", **kwargs)


@register_model
def fmnist_cnn_maxpool(**kwargs: Any) -> SmallCNN:
    """SmallCNN with 6x6/4 max pooling + 1x1 ConvBNAct(16->32)."""
    return SmallCNN("maxpool", **kwargs)


@register_model
def fmnist_cnn_convpool(**kwargs: Any) -> SmallCNN:
    """SmallCNN with a strided 6x6/4 ConvBNAct(16->32)."""
    return SmallCNN("convpool", **kwargs)


def _two_strided_convs(in_channels: int, out_channels: int, kernel_size: int, stride: int
                       ) -> nn.Module:
    # The conventional alternative to one 4x downsampler: two stride-2 3x3 convolutions
    # (28x28x16 -> 14x14x32 -> 7x7x32), like the MobileNetV2 blocks RNNPool replaces.
    if stride != 4:
        raise ValueError(f"two stride-2 convolutions downsample by 4, not {stride}")
    return nn.Sequential(ConvBNAct(in_channels, out_channels, 3, 2),
                         ConvBNAct(out_channels, out_channels, 3, 2))


@register_model
def fmnist_cnn_base(**kwargs: Any) -> SmallCNN:
    """SmallCNN baseline: two stride-2 3x3 ConvBNAct (16->32->32) instead of one 4x downsampler."""
    return SmallCNN(_two_strided_convs, **kwargs)


@register_model
def fmnist_cnn_renet(**kwargs: Any) -> SmallCNN:
    """SmallCNN with ReNet(hidden 16) on non-overlapping 4x4 patches."""
    return SmallCNN("renet", **kwargs)
