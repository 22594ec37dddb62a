"""One description (:class:`DataSpec`) of an image-classification data set and its transforms.

Three formats: ``fashion-mnist`` (the Debian package's IDX files, 28x28 grey), ``imagefolder``
(``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*``; ImageNet-10 when ``imagenet10``) and
``vww`` (the label lists written by ``rnnpool make-vww``). The spec is stored in checkpoints so
that ``rnnpool evaluate`` rebuilds exactly the evaluation pipeline the model was trained with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from torch.utils.data import Dataset

from .fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_ROOT, FASHION_MNIST_STD, FashionMNIST
from .imagefolder import IMAGENET10_WNIDS, ImageFolder
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    classification_transforms,
)

__all__ = ["DataSpec", "detect_format", "build_datasets", "FORMATS"]

FORMATS = ("fashion-mnist", "imagefolder", "vww")


@dataclass
class DataSpec:
    """What to load and how to preprocess it.

    Args:
        format: one of :data:`FORMATS`.
        root: data folder (Fashion-MNIST: the IDX folder; imagefolder: the folder holding
            ``train/`` and ``val/``; vww: the output folder of ``rnnpool make-vww``).
        imagenet10: keep only the 10 ImageNet-10 WordNet-id classes (imagefolder).
        image_size: training crop / evaluation centre crop (ignored for Fashion-MNIST).
        resize_size: evaluation resize of the shorter side (default
            ``floor(image_size * 256 / 224)``, timm's ``floor(image_size / crop_pct)`` with
            ``crop_pct = 0.875``: 256 for 224, 109 for 96).
        scale: random-resized-crop area range (default 0.08-1; 0.2-1 for vww).
        train_limit, val_limit: keep only the first N samples (imagefolder: per class).
        augment: use the training augmentation (random crop / flip) on the training split.
    """

    format: str = "fashion-mnist"
    root: str = FASHION_MNIST_ROOT
    imagenet10: bool = False
    image_size: int = 224
    resize_size: Optional[int] = None
    scale: Optional[Tuple[float, float]] = None
    train_limit: Optional[int] = None
    val_limit: Optional[int] = None
    augment: bool = True
    classes: List[str] = field(default_factory=list)  # filled in by build_datasets

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown data format {self.format!r}; known: {', '.join(FORMATS)}")
        for name in ("image_size", "resize_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_limit", "val_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.resize_size is None:  # timm's floor(image_size / crop_pct), crop_pct 0.875
            self.resize_size = self.image_size * 256 // 224
        if self.resize_size < self.image_size:  # the evaluation crop is taken from the resize
            raise ValueError(f"resize_size must be >= image_size ({self.image_size}), got "
                             f"{self.resize_size}")
        if self.scale is None:
            self.scale = (0.2, 1.0) if self.format == "vww" else (0.08, 1.0)
        self.scale = (float(self.scale[0]), float(self.scale[1]))
        if not 0 < self.scale[0] <= self.scale[1] <= 1:  # fractions of the image area
            raise ValueError(f"scale must be 0 < MIN <= MAX <= 1, got {self.scale}")

    @property
    def mean_std(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        if self.format == "fashion-mnist":
            return FASHION_MNIST_MEAN, FASHION_MNIST_STD
        return IMAGENET_MEAN, IMAGENET_STD

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def detect_format(root: str) -> str:
    """Guess the format of a data folder: ``vww_info.json`` -> vww, ``*-ubyte(.gz)`` files ->
    fashion-mnist, ``train/`` + ``val/`` sub-folders -> imagefolder."""
    if root in ("fashion-mnist", "fmnist"):
        return "fashion-mnist"
    p = Path(root)
    if not p.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    if (p / "vww_info.json").is_file():
        return "vww"
    if any(p.glob("*-ubyte.gz")) or any(p.glob("*-ubyte")):
        return "fashion-mnist"
    if (p / "train").is_dir() or (p / "val").is_dir():
        return "imagefolder"
    raise ValueError(f"{root}: cannot tell the data format (expected vww_info.json, IDX "
                     "*-ubyte.gz files, or train/ and val/ class folders); pass --data-format")


def build_datasets(spec: DataSpec, splits: Tuple[str, ...] = ("train", "val")
                   ) -> Dict[str, Dataset]:
    """Build the requested splits (``"train"``, ``"val"``); sets ``spec.classes``.

    ``val`` is Fashion-MNIST's 10k test set, the ``val/`` folder, or VWW's evaluation split.
    """
    out: Dict[str, Dataset] = {}
    mean, std = spec.mean_std
    if spec.format == "fashion-mnist":
        root = FASHION_MNIST_ROOT if spec.root in ("fashion-mnist", "fmnist", "") else spec.root
        norm = Normalize(mean, std)
        train_tf = Compose([RandomCrop(28, padding=2), RandomHorizontalFlip(), norm]) \
            if spec.augment else norm
        for s in splits:
            out[s] = FashionMNIST(root, "train" if s == "train" else "test",
                                  transform=train_tf if s == "train" else norm,
                                  limit=spec.train_limit if s == "train" else spec.val_limit)
        spec.classes = list(FashionMNIST.classes)
        return out
    train_tf, val_tf = classification_transforms(spec.image_size, spec.resize_size, spec.scale,
                                                 mean, std)
    if not spec.augment:
        train_tf = val_tf
    if spec.format == "imagefolder":
        # Given classes (e.g. a checkpoint's, for evaluation) fix the labels; else the train
        # folder's (or, with only val, the val folder's) sorted class folders.
        classes = list(IMAGENET10_WNIDS) if spec.imagenet10 else (list(spec.classes) or None)
        for s in splits:
            folder = Path(spec.root) / s
            if not folder.is_dir():
                raise FileNotFoundError(f"{spec.root}: no {s}/ folder of class folders")
            out[s] = ImageFolder(
                folder, train_tf if s == "train" else val_tf, classes=classes,
                limit_per_class=spec.train_limit if s == "train" else spec.val_limit)
            if out[s].unused_classes and not spec.imagenet10:
                # images of a class the model does not know would silently leave the set
                raise ValueError(
                    f"{folder}: class folder(s) {', '.join(out[s].unused_classes)} hold images "
                    f"but are not among the {len(out[s].classes)} classes "
                    f"{'of the checkpoint' if spec.classes else 'of train/'}")
            classes = out[s].classes  # val must use the train classes, in the same order
        spec.classes = list(classes or [])
        return out
    from .vww import VisualWakeWords

    for s in splits:
        out[s] = VisualWakeWords(spec.root, "train" if s == "train" else "val",
                                 transform=train_tf if s == "train" else val_tf,
                                 limit=spec.train_limit if s == "train" else spec.val_limit)
    spec.classes = list(VisualWakeWords.classes)
    return out
