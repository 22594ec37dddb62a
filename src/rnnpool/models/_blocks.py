"""Building blocks shared by the model families (convolution + BN + activation, MBConv)."""

from __future__ import annotations

from typing import Callable, Optional, Type, Union

from torch import Tensor, nn

__all__ = ["make_divisible", "ConvBNAct", "InvertedResidual", "LayerType", "get_act_layer"]

LayerType = Union[str, Type[nn.Module], Callable[..., nn.Module]]

_ACTS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "swish": nn.SiLU, "identity": nn.Identity
}


def get_act_layer(act: Optional[LayerType]) -> Optional[Callable[..., nn.Module]]:
    """Resolve an activation given as a name, a class or a factory (``None`` stays ``None``)."""
    if act is None or not isinstance(act, str):
        return act
    if act not in _ACTS:
        raise ValueError(f"unknown activation {act!r}; known: {sorted(_ACTS)}")
    return _ACTS[act]


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round channel count ``v`` to a multiple of ``divisor`` without dropping more than 10 %."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> activation`` with "same" padding for odd kernels.

    Args:
        in_channels, out_channels, kernel_size, stride, groups: as in ``nn.Conv2d``.
        act_layer: activation (name, class or factory) or ``None`` for none. Default: ReLU6.
        norm_layer: normalisation class; ``None`` gives a conv with bias and no norm.

    Shape:
        ``(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act_layer: Optional[LayerType] = "relu6",
        norm_layer: Optional[Type[nn.Module]] = nn.BatchNorm2d,
    ) -> None:
        act = get_act_layer(act_layer)
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                groups=groups, bias=norm_layer is None,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act is not None:
            layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.SiLU) else act())
        super().__init__(*layers)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck (MBConv): 1x1 expand -> 3x3 depthwise -> 1x1 linear project.

    The residual connection is used when ``stride == 1`` and ``in == out``. With
    ``expand_ratio == 1`` the expansion convolution is left out.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the depthwise convolution (1 or 2).
        expand_ratio: ``t``, hidden channels = ``round(in_channels * t)``.
        act_layer: activation after expand and depthwise. Default: ReLU6.

    Attributes:
        expand: :class:`ConvBNAct` 1x1 or ``None``; ``depthwise``; ``project`` (no activation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: float,
        act_layer: LayerType = "relu6",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = int(round(in_channels * expand_ratio))
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.expand_ratio = expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = (
            ConvBNAct(in_channels, hidden, 1, act_layer=act_layer) if expand_ratio != 1 else None
        )
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act_layer=act_layer)
        self.project = ConvBNAct(hidden, out_channels, 1, act_layer=None)

    def forward(self, x: Tensor) -> Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.use_residual else y
