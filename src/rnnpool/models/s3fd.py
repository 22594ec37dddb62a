"""RNNPool face detectors (SPEC §5): S3FD heads on RNNPool backbones.

Every model is an :class:`S3FD` built from a :class:`FaceBackbone` (a list of layers, some of
whose outputs are detection *sources*), an :class:`~rnnpool.detection.anchors.AnchorGenerator`
and an :class:`~rnnpool.detection.heads.S3FDHead`. ``forward`` returns only the raw
``(cls_logits, bbox_regression)``; normalisation, resizing, anchors, decoding and NMS live in
:mod:`rnnpool.detection` (the same code for training and inference).

Stage tables are ``(t, c, n, s)`` rows as in MobileNetV2 (expansion, channels, repeats, stride)
and follow the RNNPool paper's supplementary tables for the face models.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, nn

from ..detection.anchors import AnchorGenerator
from ..detection.heads import S3FDHead
from ..nn import RNNPool2d
from ._blocks import ConvBNAct, InvertedResidual
from ._registry import register_model

__all__ = [
    "S3FD",
    "FaceBackbone",
    "FaceConfig",
    "rnnpool_face_a",
    "rnnpool_face_b",
    "rnnpool_face_c",
    "rnnpool_face_m4",
    "rnnpool_face_quant",
    "rnnpool_face_qvga",
]

RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MONO_MEAN, MONO_STD = (0.449,), (0.226,)  # the luma of the RGB statistics above

S3FD_STRIDES, S3FD_SIZES = (4, 8, 16, 32, 64, 128), (16, 32, 64, 128, 256, 512)
QVGA_STRIDES, QVGA_SIZES = (8, 8, 16, 16), (8, 16, 32, 48)


@dataclass
class FaceConfig:
    """Fixed facts of a face model that the code around ``forward`` needs.

    Attributes:
        in_chans: 3 (RGB) or 1 (monochrome; inputs are converted to luma).
        input_size: ``(H, W)`` the model was designed for (used by ``detect`` for mono models).
        train_size: side of the square training crops.
        input_mean, input_std: per-channel normalisation of ``[0, 1]`` inputs.
        anchor_strides, anchor_sizes: per source, in input pixels.
    """

    in_chans: int = 3
    input_size: tuple[int, int] = (480, 640)
    train_size: int = 640
    input_mean: tuple[float, ...] = RGB_MEAN
    input_std: tuple[float, ...] = RGB_STD
    anchor_strides: tuple[int, ...] = S3FD_STRIDES
    anchor_sizes: tuple[float, ...] = S3FD_SIZES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaceBackbone(nn.Module):
    """Layers run in order; the outputs of the layers listed in ``source_layers`` are the sources.

    Args:
        layers: the layers.
        source_layers: index of the layer after which each source is taken.
        feature_info: one dict per source, ``num_chs`` (channels) and ``reduction`` (stride).

    Shape:
        ``(N, C, H, W)`` -> list of
        ``(N, num_chs_k, ceil(H / reduction_k), ceil(W / reduction_k))``.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        source_layers: Sequence[int],
        feature_info: list[dict[str, Any]],
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.source_layers = list(source_layers)
        self.feature_info = feature_info

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.source_layers:
                out.append(x)
        return out


class S3FD(nn.Module):
    """An S3FD-style single-shot face detector.

    Args:
        backbone: a :class:`FaceBackbone`.
        head: an :class:`~rnnpool.detection.heads.S3FDHead` over the backbone's sources.
        anchor_generator: anchors matching the head outputs.
        config: the model's :class:`FaceConfig`.

    Shape:
        ``(N, in_chans, H, W)`` (normalised) -> ``cls_logits (N, A, 2)`` (background, face) and
        ``bbox_regression (N, A, 4)`` with ``A = anchor_generator.num_anchors((H, W))``.

    Attributes:
        feature_info: per source ``num_chs``, ``reduction`` (backbone map stride) and
            ``anchor_stride`` / ``anchor_size``.
    """

    def __init__(
        self,
        backbone: FaceBackbone,
        head: S3FDHead,
        anchor_generator: AnchorGenerator,
        config: FaceConfig,
    ) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.anchor_generator, self.config = anchor_generator, config
        self.feature_info = [
            dict(fi, anchor_stride=s, anchor_size=a)
            for fi, s, a in zip(
                backbone.feature_info, anchor_generator.strides, anchor_generator.sizes
            )
        ]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(
                f"expected input (N, {self.config.in_chans}, H, W), got {tuple(x.shape)}"
            )
        return self.head(self.backbone(x))

    def anchors(self, image_hw: Sequence[int], device=None, dtype=None) -> Tensor:
        """Cached ``cxcywh`` anchors ``Tensor[A, 4]`` for inputs of ``image_hw``."""
        p = next(self.parameters())
        return self.anchor_generator(image_hw, device or p.device, dtype or p.dtype)


# What a face model's keyword arguments may set on its RNNPool2d: its options that the builder
# does not set itself.
_RNNPOOL_OPTIONS = frozenset(inspect.signature(RNNPool2d).parameters) - {
    "in_channels", "hidden1", "hidden2", "kernel_size", "stride", "padding"}


class _Builder:
    """Appends layers while tracking channels and stride; marks sources."""

    def __init__(self, in_chans: int) -> None:
        self.c, self.s = in_chans, 1
        self.layers: list[nn.Module] = []
        self.sources: list[int] = []
        self.info: list[dict[str, Any]] = []

    def add(self, layer: nn.Module, out_ch: int, stride: int = 1) -> _Builder:
        self.layers.append(layer)
        self.c, self.s = out_ch, self.s * stride
        return self

    def conv(self, out_ch: int, k: int = 3, stride: int = 1, n: int = 1) -> _Builder:
        for i in range(n):
            self.add(
                ConvBNAct(self.c, out_ch, k, stride if i == 0 else 1),
                out_ch,
                stride if i == 0 else 1,
            )
        return self

    def dwsep(self, out_ch: int, stride: int = 1, n: int = 1) -> _Builder:
        for i in range(n):
            s = stride if i == 0 else 1
            block = nn.Sequential(
                ConvBNAct(self.c, self.c, 3, s, groups=self.c), ConvBNAct(self.c, out_ch, 1)
            )
            self.add(block, out_ch, s)
        return self

    def rnnpool(self, hidden: int, kernel: int = 8, stride: int = 4, **rnn_kw: Any) -> _Builder:
        unknown = sorted(set(rnn_kw) - _RNNPOOL_OPTIONS)
        if unknown:  # else RNNPool2d's "unexpected keyword", which does not say whose options
            raise TypeError(f"face models take only RNNPool2d options "
                            f"({', '.join(sorted(_RNNPOOL_OPTIONS))}), got {', '.join(unknown)}")
        pool = RNNPool2d(self.c, hidden, hidden, kernel, stride, padding="same", **rnn_kw)
        return self.add(pool, pool.out_channels, stride)

    def stack(self, t: float, c: int, n: int, s: int) -> _Builder:
        blocks, cin = [], self.c
        for i in range(n):
            blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
        return self.add(nn.Sequential(*blocks), c, s)

    def source(self) -> _Builder:
        self.sources.append(len(self.layers) - 1)
        self.info.append({"num_chs": self.c, "reduction": self.s})
        return self

    def build(
        self, config: FaceConfig, l2norm: bool = True, head_strides: Sequence[int] | None = None
    ) -> S3FD:
        backbone = FaceBackbone(self.layers, self.sources, self.info)
        map_strides = [
            fi["reduction"] * hs for fi, hs in zip(self.info, head_strides or [1] * len(self.info))
        ]
        if tuple(map_strides) != tuple(config.anchor_strides):
            raise AssertionError(
                f"head strides {map_strides} != anchor strides {config.anchor_strides}"
            )
        gen = AnchorGenerator(config.anchor_strides, config.anchor_sizes)
        head = S3FDHead(
            [fi["num_chs"] for fi in self.info],
            gen.num_anchors_per_location(),
            l2norm_scales=(10.0, 8.0, 5.0) if l2norm else (),
            maxout_bg=3,
            head_strides=head_strides,
        )
        return S3FD(backbone, head, gen, config)


def _stacks_with_heads(b: _Builder, table: Sequence[tuple[float, int, int, int]]) -> _Builder:
    for t, c, n, s in table:
        b.stack(t, c, n, s).source()
    return b


# (t, c, n, s) tables, RNNPool paper supplementary (face detection architectures).
FACE_C_STAGES = [
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 2),
    (6, 160, 2, 2),
    (6, 320, 1, 2),
]
FACE_B_STAGES = [(6, 32, 3, 1), (6, 64, 3, 2), (6, 128, 2, 2), (6, 160, 1, 2), (6, 320, 1, 2)]
FACE_A_STAGES = [(1, 16, 3, 1), (1, 24, 3, 2), (2, 32, 2, 2), (2, 128, 1, 2), (2, 160, 1, 2)]
FACE_QUANT_STAGES = [(2, 16, 4, 1), (2, 24, 4, 2), (2, 32, 2, 2), (2, 64, 1, 2), (2, 96, 1, 2)]
FACE_QVGA_STAGES = [(2, 32, 4, 1), (2, 32, 4, 1), (2, 96, 3, 2), (2, 128, 3, 1)]
FACE_M4_STAGES = [(2, 32, 1, 1), (2, 32, 1, 1), (2, 64, 1, 2), (2, 64, 1, 1)]


def _rgb() -> FaceConfig:
    return FaceConfig()


def _mono() -> FaceConfig:
    return FaceConfig(
        in_chans=1,
        input_size=(240, 320),
        train_size=320,
        input_mean=MONO_MEAN,
        input_std=MONO_STD,
        anchor_strides=QVGA_STRIDES,
        anchor_sizes=QVGA_SIZES,
    )


def _face_c(**rnn_kw: Any) -> S3FD:
    b = _Builder(3).rnnpool(16, **rnn_kw)  # 640x480x3 -> 160x120x64
    return _stacks_with_heads(b, FACE_C_STAGES).build(_rgb())


def _face_b(**rnn_kw: Any) -> S3FD:
    b = _Builder(3).rnnpool(6, **rnn_kw)  # -> 160x120x24
    b.conv(24, 3, 1, n=4).source().conv(96, 3, 2).conv(32, 1)
    return _stacks_with_heads(b, FACE_B_STAGES).build(_rgb())


def _face_a(**rnn_kw: Any) -> S3FD:
    b = _Builder(3).rnnpool(4, **rnn_kw)  # -> 160x120x16
    b.dwsep(16, 1, n=4).source().dwsep(16, 2)
    return _stacks_with_heads(b, FACE_A_STAGES).build(_rgb())


def _face_quant(**rnn_kw: Any) -> S3FD:
    b = _Builder(3).conv(4, 3, 2).conv(4, 3, 1).source()  # 320x240x4: first head, stride-2 convs
    b.rnnpool(8, **rnn_kw)  # -> 80x60x32
    return _stacks_with_heads(b, FACE_QUANT_STAGES).build(_rgb(), head_strides=[2, 1, 1, 1, 1, 1])


def _face_qvga(**rnn_kw: Any) -> S3FD:
    b = _Builder(1).conv(4, 3, 2).rnnpool(16, **rnn_kw)  # 320x240x1 -> 40x30x64
    return _stacks_with_heads(b, FACE_QVGA_STAGES).build(_mono())


def _face_m4(**rnn_kw: Any) -> S3FD:
    # No L2Norm: the microcontroller graph is only ConvBNAct, InvertedResidual, RNNPool2d, convs.
    b = _Builder(1).conv(4, 3, 2).rnnpool(16, **rnn_kw)  # 320x240x1 -> 40x30x64
    return _stacks_with_heads(b, FACE_M4_STAGES).build(_mono(), l2norm=False)


@register_model
def rnnpool_face_c(**kwargs: Any) -> S3FD:
    """RNNPool-Face-C (640x480x3, RNNPool h=16 then MobileNetV2 stacks, 6 heads).

    ``kwargs`` (``gate``, ``update``, ...) go to the :class:`~rnnpool.nn.RNNPool2d`."""
    return _face_c(**kwargs)


@register_model
def rnnpool_face_b(**kwargs: Any) -> S3FD:
    """RNNPool-Face-B (RNNPool h=6, 6 heads)."""
    return _face_b(**kwargs)


@register_model
def rnnpool_face_a(**kwargs: Any) -> S3FD:
    """RNNPool-Face-A (RNNPool h=4, depthwise-separable convs, 6 heads)."""
    return _face_a(**kwargs)


@register_model
def rnnpool_face_quant(**kwargs: Any) -> S3FD:
    """RNNPool-Face-Quant (two 4-channel convs, RNNPool h=8, t=2 stacks; about 0.07 M params)."""
    return _face_quant(**kwargs)


@register_model
def rnnpool_face_qvga(**kwargs: Any) -> S3FD:
    """RNNPool-Face-QVGA (monochrome 320x240, 4 heads at strides 8, 8, 16, 16)."""
    return _face_qvga(**kwargs)


@register_model
def rnnpool_face_m4(**kwargs: Any) -> S3FD:
    """RNNPool-Face-M4, the Cortex-M4 model (monochrome 320x240, four t=2 bottlenecks, 4 heads).

    Pass ``gate="hard_sigmoid", update="hard_tanh"`` for integer-friendly RNNPool cells.

    >>> m = rnnpool_face_m4(gate="hard_sigmoid", update="hard_tanh")
    >>> cls, reg = m(torch.zeros(1, 1, 240, 320))
    >>> cls.shape, reg.shape  # 2 * 40*30 + 2 * 20*15 anchors
    (torch.Size([1, 3000, 2]), torch.Size([1, 3000, 4]))
    """
    return _face_m4(**kwargs)
