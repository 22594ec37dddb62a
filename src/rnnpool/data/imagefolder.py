"""Image classification from class folders (``ROOT/<class>/<image>``), and ImageNet-10.

ImageNet-10 (SPEC §3) is the subset of ImageNet-1K's classes below; pointed at an ImageNet-style
folder whose class folders are WordNet ids, ``classes=IMAGENET10_WNIDS`` keeps only those 10.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["ImageFolder", "find_classes", "image_size", "load_rgb", "IMAGENET10",
           "IMAGENET10_WNIDS", "IMAGE_EXTENSIONS"]

IMAGENET10: Dict[str, str] = {
    "n02690373": "airliner",
    "n04285008": "sports car",
    "n01560419": "bulbul",
    "n02124075": "Egyptian cat",
    "n02430045": "deer",
    "n02099601": "golden retriever",
    "n01641577": "bullfrog",
    "n03538406": "horse cart",
    "n03673027": "ocean liner",
    "n04467665": "trailer truck",
}
IMAGENET10_WNIDS: Tuple[str, ...] = tuple(sorted(IMAGENET10))
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def find_classes(root: Union[str, os.PathLike]) -> List[str]:
    """Sorted names of the sub-folders of ``root`` (hidden ones skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolder(Dataset):
    """Images in ``root/<class>/**``; label = index of the class in ``classes``.

    Args:
        root: the folder of class folders.
        transform: applied to the loaded RGB ``PIL.Image`` (e.g. the ``classification_transforms``).
        classes: the class folders to use, in label order (default: all, sorted). Missing ones
            are an error that names them.
        extensions: file suffixes counted as images (case-insensitive).
        limit_per_class: keep at most this many images (sorted by path) per class.
        allow_empty: accept class folders without images (their labels then have no samples);
            by default they are an error that names them.

    Attributes:
        samples: list of ``(path, label)``.
        classes: class folder names in label order.
        unused_classes: class folders of ``root`` not in ``classes`` that hold images (their
            images are not samples).
    """

    def __init__(self, root: Union[str, os.PathLike], transform: Optional[Callable] = None,
                 classes: Optional[Sequence[str]] = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 limit_per_class: Optional[int] = None, allow_empty: bool = False):
        if limit_per_class is not None and limit_per_class < 0:
            raise ValueError(f"limit_per_class must be >= 0, got {limit_per_class}")
        self.root = Path(root)
        present = find_classes(self.root)
        if classes is None:
            classes = present
        missing = [c for c in classes if c not in present]
        if missing:
            raise FileNotFoundError(f"{self.root}: missing class folder(s) {', '.join(missing)}")
        self.classes = list(classes)
        exts = tuple(e.lower() for e in extensions)
        self.samples: List[Tuple[str, int]] = []
        empty = []
        for label, c in enumerate(self.classes):
            files = _image_files(self.root / c, exts)
            if not files:
                empty.append(c)
            if limit_per_class is not None:
                files = files[:limit_per_class]
            self.samples += [(f, label) for f in files]
        if empty and not allow_empty:
            raise FileNotFoundError(f"{self.root}: class folder(s) {', '.join(empty)} hold no "
                                    f"images ({', '.join(exts)})")
        if not self.samples:
            raise ValueError(f"{self.root}: no images ({', '.join(exts)}) in the class folders")
        self.unused_classes = [c for c in present
                               if c not in self.classes and _image_files(self.root / c, exts)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Tuple[Tensor, int]:
        path, label = self.samples[i]
        img = load_rgb(path)
        return (self.transform(img) if self.transform is not None else img), label


def _image_files(folder: Path, exts: Tuple[str, ...]) -> List[str]:
    """Sorted paths of the files under ``folder`` whose suffix is in ``exts`` (hidden files and
    folders, e.g. macOS's ``._x.jpg``, are not images)."""
    return sorted(str(p) for p in folder.rglob("*")
                  if p.suffix.lower() in exts and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _read_image(path: Union[str, os.PathLike], read: Callable[[Image.Image], Any]) -> Any:
    """``read`` of the opened image file; a missing file raises ``FileNotFoundError`` and a
    broken one ``ValueError``, naming it."""
    try:
        with Image.open(path) as im:
            return read(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def image_size(path: Union[str, os.PathLike]) -> Tuple[int, int]:
    """``(width, height)`` of an image file from its header; a missing file raises
    ``FileNotFoundError`` and a broken one ``ValueError``, naming it."""
    return _read_image(path, lambda im: im.size)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I;16"):
        # PIL's convert clips 16-bit grey to 0..255 (nearly all white); keep the high byte, as
        # PIL itself does for 16-bit RGB / grey+alpha PNGs.
        im = Image.fromarray((np.asarray(im) >> 8).astype(np.uint8))
    return im.convert("RGB")


def load_rgb(path: Union[str, os.PathLike]) -> Image.Image:
    """Open an image file as an RGB ``PIL.Image`` (decoded now, file closed; 16-bit grey
    scaled to 8 bits); a missing file raises ``FileNotFoundError`` and a broken one
    ``ValueError``, naming it."""
    return _read_image(path, _to_rgb)
