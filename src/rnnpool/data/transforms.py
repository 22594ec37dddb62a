"""Image-classification transforms in plain torch (no torchvision).

Images are ``FloatTensor[C, H, W]`` in ``[0, 1]`` after :class:`ToTensor`. Randomness comes from
torch's global RNG (or a ``torch.Generator`` passed to the transform), so ``torch.manual_seed``,
the DataLoader's per-worker seeds and :func:`rnnpool.train.fit`'s resume apply to it.

The paper's recipe (SPEC §3): training uses a random-resized crop (area scale 0.08-1, aspect
ratio 3/4-4/3; Visual Wake Words 0.2-1) and a horizontal flip; evaluation resizes the shorter
side to 256 and takes the centre 224x224 crop (:func:`classification_transforms`).

>>> x = torch.rand(3, 300, 400)
>>> Compose([Resize(256), CenterCrop(224)])(x).shape
torch.Size([3, 224, 224])
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Compose", "ToTensor", "Resize", "CenterCrop", "RandomCrop", "RandomResizedCrop",
    "RandomHorizontalFlip", "Normalize", "resize", "center_crop", "resized_crop",
    "classification_transforms", "IMAGENET_MEAN", "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = Union[int, Tuple[int, int]]


def _pair(size: Size) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _check(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"expected an image tensor [C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")


def resize(x: Tensor, size: Size) -> Tensor:
    """Bilinear resize (antialiased when shrinking) of a ``[C, H, W]`` float image.

    Args:
        x: the image.
        size: an int resizes the *shorter* side to ``size`` keeping the aspect ratio, the longer
            side ``int(size * long / short)`` (truncated, as torchvision's ``Resize`` that the
            paper's pipeline used); a pair ``(h, w)`` resizes to exactly that.
    """
    _check(x)
    h, w = x.shape[-2:]
    if isinstance(size, int):
        if h <= w:
            oh, ow = size, max(1, int(size * w / h))
        else:
            oh, ow = max(1, int(size * h / w)), size
    else:
        oh, ow = _pair(size)
    if (oh, ow) == (h, w):
        return x
    return F.interpolate(x[None].float(), size=(oh, ow), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def center_crop(x: Tensor, size: Size) -> Tensor:
    """The centre ``size`` crop (top/left offset ``round((H - h) / 2)``); an image smaller than
    the crop is an error."""
    _check(x)
    h, w = _pair(size)
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"centre crop {h}x{w} is larger than the image {H}x{W}")
    top, left = int(round((H - h) / 2)), int(round((W - w) / 2))
    return x[:, top:top + h, left:left + w]


def resized_crop(x: Tensor, top: int, left: int, height: int, width: int, size: Size) -> Tensor:
    """Crop ``x[:, top:top+height, left:left+width]`` and resize it to ``size`` (h, w)."""
    _check(x)
    return resize(x[:, top:top + height, left:left + width], _pair(size))


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class ToTensor:
    """PIL image / ``uint8`` array ``[H, W(, C)]`` / uint8 tensor ``[C, H, W]`` -> float
    ``[C, H, W]`` in ``[0, 1]``."""

    def __call__(self, img) -> Tensor:
        if isinstance(img, Tensor):
            t = img if img.dim() == 3 else img[None]
            return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        a = np.asarray(img)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3:
            raise ValueError(f"expected an image [H, W] or [H, W, C], got shape {a.shape}")
        t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
        return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()

    def __repr__(self) -> str:
        return "ToTensor()"


class Resize:
    """See :func:`resize`."""

    def __init__(self, size: Size):
        self.size = size

    def __call__(self, x: Tensor) -> Tensor:
        return resize(x, self.size)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class CenterCrop:
    """See :func:`center_crop`."""

    def __init__(self, size: Size):
        self.size = _pair(size)

    def __call__(self, x: Tensor) -> Tensor:
        return center_crop(x, self.size)

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class RandomCrop:
    """A random ``size`` crop after zero-padding each side by ``padding`` pixels."""

    def __init__(self, size: Size, padding: int = 0, generator: Optional[torch.Generator] = None):
        self.size, self.padding, self.generator = _pair(size), int(padding), generator

    def __call__(self, x: Tensor) -> Tensor:
        _check(x)
        if self.padding:
            x = F.pad(x, [self.padding] * 4)
        h, w = self.size
        H, W = x.shape[-2:]
        if h > H or w > W:
            raise ValueError(f"crop {h}x{w} is larger than the (padded) image {H}x{W}")
        top = int(torch.randint(0, H - h + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, W - w + 1, (1,), generator=self.generator))
        return x[:, top:top + h, left:left + w]

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, padding={self.padding})"


class RandomResizedCrop:
    """Crop a random area and aspect ratio, resize it to ``size`` (the Inception recipe).

    Up to 10 draws of an area fraction ``s ~ U(scale)`` and a log-uniform aspect ratio
    ``r ~ exp(U(log ratio))`` give a ``w = round(sqrt(s H W r))`` x ``h = round(sqrt(s H W / r))``
    box; the first that fits is placed uniformly at random. If none fits, the largest centred
    box whose aspect ratio is ``H/W`` clamped to ``ratio`` is used.

    Args:
        size: output size (int or (h, w)).
        scale: range of the crop's area as a fraction of the image area.
        ratio: range of the crop's aspect ratio (width / height).
        generator: optional ``torch.Generator`` (default: the global RNG).
    """

    def __init__(self, size: Size, scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3),
                 generator: Optional[torch.Generator] = None):
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.size, self.scale, self.ratio, self.generator = _pair(size), scale, ratio, generator

    def get_params(self, height: int, width: int) -> Tuple[int, int, int, int]:
        """Draw ``(top, left, h, w)`` for an image of ``height`` x ``width``."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u = torch.rand(2, generator=self.generator, dtype=torch.float64).tolist()
            target = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            r = math.exp(log_lo + u[1] * (log_hi - log_lo))
            w = int(round(math.sqrt(target * r)))
            h = int(round(math.sqrt(target / r)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=self.generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=self.generator))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, x: Tensor) -> Tensor:
        _check(x)
        top, left, h, w = self.get_params(*x.shape[-2:])
        return resized_crop(x, top, left, h, w, self.size)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, generator: Optional[torch.Generator] = None):
        self.p, self.generator = p, generator

    def __call__(self, x: Tensor) -> Tensor:
        if float(torch.rand(1, generator=self.generator)) < self.p:
            return x.flip(-1)
        return x

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, x: Tensor) -> Tensor:
        _check(x)
        if x.shape[0] != self.mean.shape[0]:
            raise ValueError(f"Normalize has {self.mean.shape[0]} channels, image has {x.shape[0]}")
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def classification_transforms(
    image_size: int = 224,
    resize_size: int = 256,
    scale: Tuple[float, float] = (0.08, 1.0),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tuple[Compose, Compose]:
    """The paper's (train, eval) transforms for images loaded as PIL / arrays.

    Train: ToTensor, RandomResizedCrop(image_size, scale), RandomHorizontalFlip, Normalize.
    Eval: ToTensor, Resize(resize_size), CenterCrop(image_size), Normalize.

    >>> train, val = classification_transforms(64, 73)
    >>> val(torch.randint(0, 256, (3, 100, 120), dtype=torch.uint8)).shape
    torch.Size([3, 64, 64])
    """
    train = Compose([ToTensor(), RandomResizedCrop(image_size, scale=scale),
                     RandomHorizontalFlip(), Normalize(mean, std)])
    val = Compose([ToTensor(), Resize(resize_size), CenterCrop(image_size), Normalize(mean, std)])
    return train, val
