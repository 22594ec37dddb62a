"""S3FD anchors: one square anchor per feature-map cell, centred on the cell.

Anchors are in absolute input-image pixels. For a source of stride ``s`` with anchor size ``a``
on a ``H x W`` input the feature map is ``ceil(H / s) x ceil(W / s)`` (every layer of the face
models pads "same"), and cell ``(i, j)`` gets the anchor centred at ``((j + 0.5) s, (i + 0.5) s)``
with width and height ``a``. Anchors are ordered level by level, then row-major over the cells:
the order in which :class:`~rnnpool.detection.heads.S3FDHead` flattens its outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .boxes import box_convert

__all__ = ["AnchorGenerator", "feature_map_sizes"]


def feature_map_sizes(image_hw: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """``[(ceil(H / s), ceil(W / s)) for s in strides]``.

    >>> feature_map_sizes((480, 640), (4, 8, 128))
    [(120, 160), (60, 80), (4, 5)]
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {tuple(image_hw)}")
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


class AnchorGenerator:
    """Square anchors of ``sizes[k]`` pixels on the stride-``strides[k]`` grid of each source.

    The anchors of each input size are computed once and cached (per size, device and dtype).

    Args:
        strides: stride of each source feature map, in input pixels.
        sizes: anchor side length for each source, in input pixels.

    Example::

        >>> gen = AnchorGenerator(strides=(8, 16), sizes=(8, 32))
        >>> a = gen((16, 32))           # 2x4 cells at stride 8, 1x2 cells at stride 16
        >>> a.shape
        torch.Size([10, 4])
        >>> a[0].tolist(), a[-1].tolist()  # cxcywh
        ([4.0, 4.0, 8.0, 8.0], [24.0, 8.0, 32.0, 32.0])
    """

    def __init__(self, strides: Sequence[int], sizes: Sequence[float]) -> None:
        if len(strides) != len(sizes) or not strides:
            raise ValueError(
                f"strides and sizes must be non-empty and of equal length, got {strides}, {sizes}"
            )
        if any(s <= 0 for s in strides) or any(a <= 0 for a in sizes):
            raise ValueError(f"strides and sizes must be positive, got {strides}, {sizes}")
        self.strides = tuple(int(s) for s in strides)
        self.sizes = tuple(float(a) for a in sizes)
        self._cache: dict[tuple, Tensor] = {}

    def num_anchors_per_location(self) -> list[int]:
        """One anchor per cell on every source (sizes the heads)."""
        return [1] * len(self.strides)

    def num_anchors(self, image_hw: Sequence[int]) -> int:
        """Total anchors for an input of ``image_hw``."""
        return sum(h * w for h, w in feature_map_sizes(image_hw, self.strides))

    def __call__(
        self,
        image_hw: Sequence[int],
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        fmt: str = "cxcywh",
    ) -> Tensor:
        """Anchors ``Tensor[A, 4]`` for an input of ``image_hw = (H, W)``, in ``fmt``."""
        key = (int(image_hw[0]), int(image_hw[1]), str(device), dtype)
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = self._make(key[:2], device, dtype)
            if len(self._cache) >= 32:  # inputs of many sizes (inference): keep the cache small
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = anchors
        return anchors if fmt == "cxcywh" else box_convert(anchors, "cxcywh", fmt)

    def _make(self, image_hw, device, dtype) -> Tensor:
        out = []
        for (fh, fw), s, a in zip(
            feature_map_sizes(image_hw, self.strides), self.strides, self.sizes
        ):
            cy = (torch.arange(fh, device=device, dtype=torch.float64) + 0.5) * s
            cx = (torch.arange(fw, device=device, dtype=torch.float64) + 0.5) * s
            yy, xx = torch.meshgrid(cy, cx, indexing="ij")
            wh = torch.full_like(xx, a)
            out.append(torch.stack([xx, yy, wh, wh], -1).reshape(-1, 4))
        return torch.cat(out).to(dtype)

    def __repr__(self) -> str:
        return f"AnchorGenerator(strides={self.strides}, sizes={self.sizes})"
