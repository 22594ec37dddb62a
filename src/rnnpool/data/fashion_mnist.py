"""Fashion-MNIST from the IDX files the Debian package ``dataset-fashion-mnist`` installs.

Default folder: ``/usr/share/datasets/fashion-mnist`` with ``{train,t10k}-images-idx3-ubyte.gz``
and ``{train,t10k}-labels-idx1-ubyte.gz`` (60,000 + 10,000 images, 28x28 grey, 10 classes).
Nothing is downloaded. The IDX format: a big-endian header (two zero bytes, a type byte, the
number of dimensions, then one uint32 per dimension) followed by the data.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["FashionMNIST", "read_idx", "FASHION_MNIST_ROOT", "FASHION_MNIST_CLASSES",
           "FASHION_MNIST_MEAN", "FASHION_MNIST_STD"]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_MEAN = (0.2860,)  # of the 60k training images
FASHION_MNIST_STD = (0.3530,)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an IDX file (gzip-compressed if the name ends in ``.gz``) into an array.

    Raises ``ValueError`` naming the file when the header or the size is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz among them
        raise ValueError(f"{path}: cannot read ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes of data), "
                         f"file holds {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


class FashionMNIST(Dataset):
    """Fashion-MNIST: ``(image, label)`` with ``image`` a ``FloatTensor[1, 28, 28]`` in [0, 1]
    (then ``transform``) and ``label`` an int in 0..9.

    Args:
        root: folder with the four ``*-ubyte.gz`` files (default: the Debian package's).
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        transform: applied to the float image.
        limit: keep only the first ``limit`` images (quick runs).

    Example:
        >>> ds = FashionMNIST(split="test", limit=5)   # doctest: +SKIP
        >>> ds[0][0].shape, ds[0][1]                   # doctest: +SKIP
        (torch.Size([1, 28, 28]), 9)
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(self, root: Union[str, os.PathLike] = FASHION_MNIST_ROOT, split: str = "train",
                 transform: Optional[Callable[[Tensor], Tensor]] = None,
                 limit: Optional[int] = None):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(
                f"Fashion-MNIST folder not found: {root} (install the Debian package "
                "dataset-fashion-mnist or pass the folder holding the IDX files)")
        prefix = "train" if split == "train" else "t10k"
        images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{root}: images {images.shape} and labels {labels.shape} of the "
                             f"{split} split do not match")
        if images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise ValueError(f"{root}: {split} images are {images.dtype} {images.shape[1:]}, "
                             "expected uint8 28x28")
        if labels.size and (labels.max() >= len(self.classes) or labels.min() < 0):
            bad = int(labels.max()) if labels.max() >= len(self.classes) else int(labels.min())
            raise ValueError(f"{root}: label {bad} out of range 0..9")
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.images = torch.from_numpy(images.copy())  # uint8 [N, 28, 28]
        self.targets = torch.from_numpy(labels.astype(np.int64))
        self.transform = transform
        self.split = split

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> Tuple[Tensor, int]:
        x = self.images[i][None].float() / 255.0
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[i])


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root}: missing {stem}.gz")
